"""Neurons: what each hidden unit does over a text, and which units track simple properties of it.

In the spirit of Karpathy, Johnson & Fei-Fei, "Visualizing and Understanding Recurrent Networks"
(2015, https://arxiv.org/abs/1506.02078), who found LSTM cells that switch on inside quotes,
count the position in a line, or track bracket depth. ``activations`` reads a text once, in order,
with the state carried (as in generation), and records each unit after every token: the hidden
state h, or for an LSTM the cell state c. ``find_units`` ranks units by the Pearson correlation of
their activation with each property of ``text_properties``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

QUOTES_OPEN, QUOTES_CLOSE = '"“', '"”'
BRACKETS_OPEN, BRACKETS_CLOSE = "([{", ")]}"
PUNCTUATION = ".,;:!?"

PROPERTIES = {
    "in_quotes": 'inside "double quotes" (the opening quote is inside, the closing one not)',  # reset at a blank line
    "in_brackets": "inside (), [] or {} (depth > 0)",
    "bracket_depth": "nesting depth of (), [] and {}",
    "line_position": "characters since the last newline",
    "after_newline": "the token just read is a newline",
    "after_space": "the token just read is a space (or other non-newline whitespace)",
    "in_word": "the token just read is a letter",
    "uppercase": "the token just read is an uppercase letter",
    "after_punctuation": "the token just read is . , ; : ! or ?",
}


def text_properties(tokens: list[str]) -> dict[str, np.ndarray]:
    """Each property of ``PROPERTIES`` as an (N,) float array: its value after reading tokens[i].
    Tokens are strings (characters for char models; <eos> should be given as "\\n")."""
    N = len(tokens)
    props = {name: np.zeros(N) for name in PROPERTIES}
    quote, depth, col, prev = False, 0, 0, ""
    for i, tok in enumerate(tokens):
        for ch in tok:
            if ch == "\n" and prev == "\n":
                quote = False     # a quote that runs over paragraphs is reopened, not closed, in print
            prev = ch
            if ch == '"':
                quote = not quote
            elif ch == "“":
                quote = True
            elif ch == "”":
                quote = False
            elif ch in BRACKETS_OPEN:
                depth += 1
            elif ch in BRACKETS_CLOSE:
                depth = max(depth - 1, 0)
            col = 0 if ch == "\n" else col + 1
        props["in_quotes"][i] = quote
        props["in_brackets"][i] = depth > 0
        props["bracket_depth"][i] = depth
        props["line_position"][i] = col
        props["after_newline"][i] = tok.endswith("\n")
        props["after_space"][i] = tok.isspace() and "\n" not in tok
        props["in_word"][i] = tok.isalpha()
        props["uppercase"][i] = tok.isalpha() and tok.isupper()
        props["after_punctuation"][i] = tok != "" and all(ch in PUNCTUATION for ch in tok)
    return props


def activations(model, ids, *, kind: str = "h", seq_len: int = 256) -> np.ndarray:
    """(L, N, H) float32: every unit of every layer after reading each of ``ids`` (N,), from a zero
    state, carried across windows. kind "h" hidden state, "c" cell state (LSTM only)."""
    from ..errors import ConfigError

    if kind not in ("h", "c"):
        raise ConfigError(f"kind must be 'h' or 'c', got {kind!r}")
    if kind == "c" and "cs" not in model.cell.cache:
        raise ConfigError(f"only an LSTM has a cell state; this model is a {model.config.cell}")
    ids = np.asarray(ids, np.int64)
    c = model.config
    out = np.empty((c.layers, ids.size, c.hidden), np.float32)
    state = model.init_state(1)
    for start in range(0, ids.size, seq_len):
        x = ids[start:start + seq_len, None]
        _, state, cache = model.forward(x, state)
        for layer, (_, hs, cell_cache) in enumerate(cache[2]):
            seq = hs if kind == "h" else cell_cache[model.cell.cache.index("cs")]   # cs (T+1, B, H)
            out[layer, start:start + x.shape[0]] = seq[1:, 0]
    return out


@dataclass
class UnitMatch:
    property: str
    layer: int
    unit: int
    r: float          # Pearson correlation of the unit's activation with the property (signed)


def correlations(values: np.ndarray, prop: np.ndarray) -> np.ndarray:
    """(L, H) Pearson r of every unit's series in values (L, N, H) with prop (N,); NaN where either
    is constant."""
    a = values.astype(np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    p = prop.astype(np.float64) - prop.mean()
    den = np.sqrt((a * a).sum(axis=1) * (p * p).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.einsum("lnh,n->lh", a, p) / den
    return np.where(den > 0, r, np.nan)


def find_units(values: np.ndarray, props: dict[str, np.ndarray], top: int = 3) -> list[UnitMatch]:
    """The ``top`` units with the largest |r| for every property (properties that are constant over
    the text, e.g. in_quotes for a text without quotes, are left out)."""
    matches = []
    for name, prop in props.items():
        r = correlations(values, prop)
        if np.all(np.isnan(r)):
            continue
        flat = np.nan_to_num(np.abs(r), nan=-1.0).reshape(-1)
        for k in np.argsort(-flat, kind="stable")[:top]:
            layer, unit = divmod(int(k), values.shape[2])
            matches.append(UnitMatch(name, layer, unit, float(r[layer, unit])))
    return matches


@dataclass
class NeuronReport:
    tokens: list                  # (N,) token strings as read (<eos> shown as a newline)
    values: np.ndarray            # (L, N, H) activations
    kind: str                     # "h" or "c"
    properties: dict              # name -> (N,) values
    matches: list = field(default_factory=list)   # [UnitMatch], grouped by property, best first

    def unit(self, layer: int, unit: int) -> np.ndarray:
        """(N,) one unit's activation after each token, for colouring the text."""
        return self.values[layer, :, unit]

    def best(self, prop: str | None = None) -> UnitMatch | None:
        """The strongest match for ``prop``, or overall."""
        cands = [m for m in self.matches if prop is None or m.property == prop]
        return max(cands, key=lambda m: abs(m.r), default=None)


def token_strings(tokenizer, ids, eos_text: str = "\n") -> list[str]:
    """The text of each id; <eos> becomes ``eos_text`` and word tokens get a trailing space."""
    toks = tokenizer.tokens
    sep = " " if tokenizer.level == "word" else ""
    return [eos_text if i == tokenizer.eos_id else toks[i] + sep for i in np.asarray(ids).tolist()]


def inspect_neurons(checkpoint, paths, *, kind: str | None = None, top: int = 3, max_tokens: int = 20_000,
                    errors: str = "strict") -> NeuronReport:
    """Read the files ``paths`` (at most ``max_tokens`` tokens) with a checkpoint's model and rank
    its units against every text property. kind defaults to "c" for an LSTM, "h" otherwise."""
    from .text import encode_for

    tok = checkpoint.tokenizer
    ids, eos = encode_for(checkpoint, paths, max_tokens=max_tokens, errors=errors)
    model = checkpoint.build_model()
    kind = kind or ("c" if "cs" in model.cell.cache else "h")
    tokens = token_strings(tok, ids, {"paragraph": "\n\n", "none": ""}.get(eos, "\n"))
    values = activations(model, ids, kind=kind)
    props = text_properties(tokens)
    return NeuronReport(tokens, values, kind, props, find_units(values, props, top))
