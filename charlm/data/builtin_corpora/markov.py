"""A random order-k Markov chain whose entropy rate is known exactly: the ``markov`` corpus.

A model trained on its text must approach ``entropy_rate_bits`` from above on held-out text, which
makes it a corpus with a known answer (corpora/README.md derives the rate and the tidy rule).
"""
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from charlm.errors import CorpusError

# Every allowed transition keeps at least this much mass (spread evenly), so rows drawn
# from a sparse Dirichlet cannot cut the chain into pieces. See _check_ergodic.
_FLOOR = 0.01


@dataclass(frozen=True, eq=False)   # eq on arrays is ambiguous; compare by identity
class MarkovSource:
    order: int                  # k, symbols of context
    alphabet: str               # A symbols; the context index is base-A, newest symbol last
    probs: np.ndarray           # (A**k, A) P(next symbol | context), rows sum to 1
    stationary: np.ndarray      # (A**k,) pi, the unique stationary distribution of contexts
    entropy_rate_bits: float    # H = -sum_s pi(s) sum_c P(c|s) log2 P(c|s), bits per symbol


def _successors(n_ctx: int, A: int) -> np.ndarray:
    """(n_ctx, A) index of the context after emitting symbol c in context s."""
    return (np.arange(n_ctx)[:, None] * A + np.arange(A)[None, :]) % n_ctx


def _check_ergodic(succ: np.ndarray, probs: np.ndarray, root: int) -> None:
    """Raise unless the chain has one closed class and it is aperiodic (so pi is unique).

    Every context must reach ``root``; the class of ``root`` has period
    gcd(level[u] + 1 - level[v]) over its edges u -> v, with BFS levels from ``root``.
    """
    edge = probs > 0
    reaches = np.zeros(len(succ), bool)
    reaches[root] = True
    while True:                                   # backward reachability, one hop at a time
        more = reaches | (edge & reaches[succ]).any(axis=1)
        if (more == reaches).all():
            break
        reaches = more
    level = np.full(len(succ), -1)
    level[root], frontier, depth = 0, np.array([root]), 0
    while frontier.size:                          # forward BFS levels
        depth += 1
        nxt = np.unique(succ[frontier][edge[frontier]])
        nxt = nxt[level[nxt] < 0]
        level[nxt] = depth
        frontier = nxt
    u, c = np.nonzero(edge & (level >= 0)[:, None])
    period = np.gcd.reduce(np.abs(level[u] + 1 - level[succ[u, c]]))
    if not reaches.all() or period != 1:
        raise CorpusError("Markov chain is not ergodic; use an alphabet with more ordinary "
                          "symbols")


def _stationary(succ: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """pi = pi P by power iteration on the sparse (A**k, A) form of the transition matrix."""
    n = len(succ)
    pi = np.full(n, 1.0 / n)
    for _ in range(100_000):
        new = np.bincount(succ.ravel(), weights=(pi[:, None] * probs).ravel(), minlength=n)
        if np.abs(new - pi).sum() < 1e-14:
            return new / new.sum()
        pi = new
    raise CorpusError("Markov chain's stationary distribution did not converge")


def markov_source(order: int = 2, alphabet: str = "abcdefgh \n", concentration: float = 0.2,
                  seed: int = 0, tidy: bool = True) -> MarkovSource:
    """A random order-``order`` Markov chain over ``alphabet`` and its exact entropy rate.

    Each context's next-symbol row is Dirichlet(``concentration``) (small = peaked = low
    entropy) mixed with ``_FLOOR`` of uniform mass. ``tidy`` forbids a space or newline
    right after a space or newline, so lines are never empty and words never empty or
    padded: splitting into lines or words is then lossless, which keeps the per-token rate
    equal to the per-symbol rate (see corpora/README.md).
    """
    if not isinstance(order, int) or order < 1:
        raise CorpusError(f"order must be an integer >= 1, got {order!r}")
    if len(set(alphabet)) != len(alphabet) or len(alphabet) < 2:
        raise CorpusError(f"alphabet must have >= 2 distinct symbols, got {alphabet!r}")
    A = len(alphabet)
    n_ctx = A ** order
    if n_ctx > 2 ** 20:
        raise CorpusError(f"{A}**{order} = {n_ctx} contexts is too many (limit 2**20)")
    if not concentration > 0:
        raise CorpusError(f"concentration must be > 0, got {concentration!r}")
    blank = [i for i, ch in enumerate(alphabet) if ch in " \n"] if tidy else []
    if len(blank) == A:
        raise CorpusError("tidy alphabet needs a symbol other than space and newline")

    rng = np.random.default_rng(seed)
    allowed = np.ones((n_ctx, A), bool)
    last = np.arange(n_ctx) % A                           # newest symbol of each context
    allowed[np.ix_(np.isin(last, blank), blank)] = False
    rows = rng.dirichlet(np.full(A, float(concentration)), size=n_ctx) * allowed
    total = rows.sum(axis=1, keepdims=True)
    # a row whose Dirichlet mass fell on forbidden symbols only becomes uniform over allowed
    uniform = allowed / allowed.sum(axis=1, keepdims=True)
    rows = np.where(total > 0, rows / np.where(total > 0, total, 1.0), uniform)
    probs = (1.0 - _FLOOR) * rows + _FLOOR * uniform

    succ = _successors(n_ctx, A)
    ordinary = next(i for i in range(A) if i not in blank)
    _check_ergodic(succ, probs, root=ordinary * (n_ctx - 1) // (A - 1))  # "aa..a"
    pi = _stationary(succ, probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(probs > 0, probs * np.log2(probs), 0.0)
    rate = float(-(pi * plogp.sum(axis=1)).sum())
    probs.setflags(write=False)
    pi.setflags(write=False)
    return MarkovSource(order, alphabet, probs, pi, rate)


def markov_text(source: MarkovSource, n_chars: int, seed: int = 0) -> str:
    """``n_chars`` symbols of the chain, starting just after a newline when there is one.

    The first context is drawn from pi (conditioned on ending in ``\\n`` if the alphabet
    has it, so the text starts at a line start) and is not emitted. One uniform per symbol,
    inverted through that context's CDF.
    """
    if not isinstance(n_chars, int) or n_chars < 0:
        raise CorpusError(f"n_chars must be an integer >= 0, got {n_chars!r}")
    A, n_ctx = len(source.alphabet), len(source.probs)
    rng = np.random.default_rng(seed)
    start = source.stationary.copy()
    if "\n" in source.alphabet:
        start[np.arange(n_ctx) % A != source.alphabet.index("\n")] = 0.0
    ctx = int(rng.choice(n_ctx, p=start / start.sum()))
    cdf = np.cumsum(source.probs, axis=1)
    cdf[:, -1] = 1.0                          # rounding must not leave a gap above the last
    rows, succ = cdf.tolist(), _successors(n_ctx, A).tolist()
    out = [0] * n_chars
    for i, u in enumerate(rng.random(n_chars).tolist()):
        c = bisect_right(rows[ctx], u)
        out[i] = c
        ctx = succ[ctx][c]
    return "".join(np.array(list(source.alphabet))[np.array(out, dtype=np.intp)].tolist())


def markov_bits_per_char(source: MarkovSource, text: str) -> float:
    """The true chain's mean -log2 P(symbol | previous k symbols) over ``text[k:]``.

    The exact floor for this very text: no model should score clearly below it (only by
    sampling luck, ~1/sqrt(len) bits), and its expectation is ``entropy_rate_bits``.
    """
    k, A = source.order, len(source.alphabet)
    lookup = {ch: i for i, ch in enumerate(source.alphabet)}
    try:
        sym = np.array([lookup[ch] for ch in text], dtype=np.int64)
    except KeyError as e:
        raise CorpusError(f"symbol {e.args[0]!r} is not in the chain's alphabet") from e
    if len(sym) <= k:
        raise CorpusError(f"need more than {k} symbols to score, got {len(sym)}")
    ctx = np.zeros(len(sym) - k, dtype=np.int64)
    for j in range(k):                                   # base-A number, newest symbol last
        ctx = ctx * A + sym[j:len(sym) - k + j]
    return float(-np.log2(source.probs[ctx, sym[k:]]).mean())


def markov_corpus(n_chars: int = 1_000_000, order: int = 2, alphabet: str = "abcdefgh \n",
                  concentration: float = 0.2, seed: int = 0, tidy: bool = True) -> str:
    """Text of ``markov_source(order, alphabet, concentration, seed, tidy)``, seeded by ``seed``."""
    source = markov_source(order, alphabet, concentration, seed, tidy)
    return markov_text(source, n_chars, seed)
