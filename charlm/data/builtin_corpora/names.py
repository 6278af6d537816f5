"""Made-up pronounceable names, one per line: the ``names`` corpus, for line-mode demos and tests."""
import numpy as np

from charlm.errors import CorpusError

_ONSETS = ("", "b", "br", "c", "ch", "d", "dr", "f", "g", "gr", "h", "j", "k", "l", "m", "n",
           "p", "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "z")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "ai", "ea", "ie", "ou")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "m", "nd", "th", "x")


def pseudo_names(n: int = 5_000, seed: int = 0) -> str:
    """``n`` lowercase made-up names, one per line: 2-3 syllables of onset + vowel + coda."""
    if not isinstance(n, int) or n < 0:
        raise CorpusError(f"n must be an integer >= 0, got {n!r}")
    rng = np.random.default_rng(seed)
    syllables = rng.integers(2, 4, size=n)
    parts = [rng.integers(0, len(table), size=(n, 3)).tolist()
             for table in (_ONSETS, _VOWELS, _CODAS)]
    names = []
    for i in range(n):
        names.append("".join(_ONSETS[parts[0][i][j]] + _VOWELS[parts[1][i][j]]
                             + _CODAS[parts[2][i][j]] for j in range(syllables[i])))
    return "".join(name + "\n" for name in names)
