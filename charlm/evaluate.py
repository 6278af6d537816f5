"""Perplexity, bits per character and per-token surprisal of a trained model on new text.

The text is tokenized with the model's own vocabulary and the sequence boundaries the model
was trained with, then scored in one exact sequential pass with the state carried (every token
is predicted from everything before it, as in generation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

LN2 = math.log(2.0)


@dataclass
class EvalResult:
    loss_nats: float              # mean negative log-likelihood per token
    perplexity: float             # exp(loss_nats), per token
    bits_per_char: float | None   # character models: loss in bits per character
    tokens: int                   # tokens scored
    oov: int                      # out-of-vocabulary tokens in the text (scored as <unk>)
    level: str
    surprisal: np.ndarray | None = field(default=None, repr=False)  # (tokens,) bits, if asked
    target_ids: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"loss_nats": self.loss_nats, "bits_per_char": self.bits_per_char,
                "perplexity": self.perplexity, "tokens": self.tokens, "oov": self.oov,
                "level": self.level}


def score_ids(model, ids: np.ndarray, seq_len: int = 256) -> np.ndarray:
    """Per-token NLL in nats for ids[1:], each predicted from ids[:t] with carried state."""
    from .batches import sequential_windows

    state = model.init_state(1)
    parts = []
    for x, y in sequential_windows(ids, seq_len):
        nll, state = model.token_nll(x, y, state)
        parts.append(nll)
    return np.concatenate(parts) if parts else np.zeros(0)


def state_after(model, ids: np.ndarray, seq_len: int = 256) -> np.ndarray:
    """(L, S, 1, H) state after reading ids[:-1] from the zero state, in windows as score_ids does."""
    from .batches import sequential_windows

    state = model.init_state(1)
    for x, y in sequential_windows(ids, seq_len):
        _, state = model.token_nll(x, y, state)
    return state


def evaluate(checkpoint, paths, *, surprisal: bool = False, errors: str = "strict") -> EvalResult:
    """Score the files ``paths`` with ``checkpoint`` (a loaded ``Checkpoint``)."""
    from .corpus import build_corpus
    from .errors import CorpusError
    from .runtime import thread_limits

    train_cfg = checkpoint.metadata.get("train_config") or {}
    eos = checkpoint.metadata.get("eos") or train_cfg.get("eos", "auto")
    corpus = build_corpus(list(paths), level=checkpoint.tokenizer.level, eos=eos, val_fraction=0.0,
                          tokenizer=checkpoint.tokenizer, errors=errors)
    ids = corpus.train
    if ids.size < 2:
        raise CorpusError("nothing to evaluate: the text has no tokens after tokenization")
    model = checkpoint.build_model()
    with thread_limits():  # all cores for the kernels, one per BLAS call; undone on return
        nll = score_ids(model, np.asarray(ids))
    loss = float(nll.mean())
    level = checkpoint.tokenizer.level
    return EvalResult(
        loss_nats=loss, perplexity=math.exp(min(loss, 700.0)),
        bits_per_char=loss / LN2 if level == "char" else None,
        tokens=int(nll.size), oov=int(corpus.stats().get("unknown", 0)), level=level,
        surprisal=nll / LN2 if surprisal else None,
        target_ids=np.asarray(ids[1:]) if surprisal else None)
