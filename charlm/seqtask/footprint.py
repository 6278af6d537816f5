"""How much memory training a classifier or tagger needs, estimated before anything is allocated.

The counterpart of lm/footprint.py (the refusal both share: training/memory.py): the parameters
from their shapes (Python integers: ``--buckets 2000000000`` or ``--hidden 24000`` cannot overflow),
the gradient and the two Adam buffers of each, and one batch of the longest sequences' activations
in every layer, direction and member. Within a factor of about two: enough to refuse what cannot fit.
"""
from __future__ import annotations

import math

from ..training.memory import available_bytes, check_estimate_fits

_PER_PARAMETER = 4   # weights, gradient, Adam's two moments
_WORKSPACE = 2       # the kernels' scratch and the evaluation pass, on top of the activations
# the settings that scale the estimate
_SIZES = (("hidden", "model"), ("embed", "model"), ("layers", "model"), ("buckets", "model"),
          ("wide_buckets", "model"), ("members", "model"), ("batch_size", "train"), ("max_length", "train"))


def seq_training_bytes(model_config, train_config, longest: int) -> int:
    """Estimated bytes to train ``model_config`` (its vocabulary and labels set) on sequences of
    at most ``longest`` tokens."""
    from ..kernels.cells import get_cell
    from .model import parameter_shapes

    m, t = model_config, train_config
    itemsize = 8 if t.dtype == "float64" else 4
    params = sum(math.prod(shape) for _, shape in parameter_shapes(m))
    cell = get_cell(m.cell)
    length = min(longest, t.max_length) if t.max_length else longest
    per_token = m.members * (m.layers * m.directions * m.hidden * (cell.gates + cell.states + 2)
                             + m.embed * (2 if m.ngrams else 1) + m.num_labels)
    return itemsize * (params * _PER_PARAMETER + _WORKSPACE * t.batch_size * max(length, 1) * per_token)


def seq_fits_in_memory(model_config, train_config, longest: int, available: int | None = None) -> bool:
    """Whether training ``model_config`` on sequences of at most ``longest`` tokens fits (a
    recipe's candidates that do not are never tried)."""
    need = seq_training_bytes(model_config, train_config, longest)
    return need <= (available_bytes() if available is None else available)


def check_seq_training_fits(model_config, train_config, longest: int, available: int | None = None) -> None:
    """Refuse (ConfigError, one line naming the setting to shrink) what would not fit in memory."""
    check_estimate_fits(lambda c: seq_training_bytes(c["model"], c["train"], longest),
                        {"model": model_config, "train": train_config}, _SIZES,
                        f"{model_config.num_labels:,} labels and {model_config.vocab_size:,} tokens", available)
