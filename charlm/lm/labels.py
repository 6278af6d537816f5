"""A labelled language model at use: the plain model a label makes of it, and its loss on labelled lines.

Given its label, a labelled model is an ordinary one: when the label is an input, layer 0's input
bias shifted by the label's vector (W_ih [x; onehot(l)] + b = W_ih x + (b + the vector)); when it is
the state, the label's vector is where every line starts. So sampling, beam search and scoring
run the unlabelled code on ``conditioned(model, label)``: the generation kernels are the same.
"""
from __future__ import annotations

from ..errors import ConfigError

BATCH = 256   # lines scored side by side


def conditioned(model, label: int):
    """(an unlabelled Model that behaves as ``model`` given ``label``, its (L, S, H) start state)."""
    from ..config import replace
    from .model import Model

    c = model.config
    plain = Model(replace(c, labels=0), dtype=model.dtype)
    plain.load_state_dict(model.params)
    if c.condition == "input":
        plain.params["rnn.bias_ih_l0"][...] += model.params["label_embedding.weight"][label]
    return plain, model.line_state([label])[:, :, 0, :]


def label_index(names: list[str], label: str | None) -> int | None:
    """The id of ``label`` among a model's label ``names`` (None for an unlabelled model without
    one); a label the model does not know, or a missing or needless one, is one ConfigError."""
    if not names:
        if label is not None:
            raise ConfigError("--label: this model was not trained on labelled lines (charlm train --labelled)")
        return None
    if label is None:
        raise ConfigError(f"this model was trained on labelled lines: choose one with --label ({known(names)})")
    if label not in names:
        raise ConfigError(f"unknown label {label[:60]!r}; the model knows {known(names)}")
    return names.index(label)


def known(names: list[str], most: int = 20) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
