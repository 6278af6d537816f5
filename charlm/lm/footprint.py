"""How much memory a configuration needs, estimated before anything is allocated.

A mistyped size (``--hidden 100000``, ``hidden = 1e23`` in a TOML file, ``--embed 50000000``)
would otherwise fail deep inside NumPy, or push the machine into swap. The estimate counts what
training holds at once: the parameters, their gradients, the optimiser's buffers (two per
parameter for Adam), and one step's activations kept for the backward pass (gate
pre-activations, states and outputs of every layer, embeddings, logits and their gradient). It is meant to be within a factor of about two, which is enough to refuse a
size that cannot fit; sizes near the limit are left to the operating system.
"""
from __future__ import annotations

from ..training.memory import available_bytes, check_estimate_fits

# extra arrays per parameter besides the weights themselves: gradient + optimiser buffers
_PER_PARAMETER = {"adam": 3, "adamw": 3, "sgd": 2, "rmsprop": 2, "adagrad": 2}
_WORKSPACE = 2   # kernels' scratch buffers and the evaluation pass, on top of the activations


def parameter_count(model_config, vocab: int) -> int:
    """Parameters of a model (closed form, Python integers: no overflow for absurd sizes)."""
    m, V = model_config, vocab
    G, H, E = m.gates, m.hidden, m.embed
    fed_back = V if m.row.feeds_output else H        # a Jordan cell feeds its output back, not h
    first = G * H * (E + fed_back) + 2 * G * H
    rest = (m.layers - 1) * (G * H * (H + fed_back) + 2 * G * H)
    decoder = (0 if m.tie_weights else V * H) + V
    return V * E + first + rest + decoder


def training_bytes(model_config, train_config, vocab: int | None = None) -> int:
    """Estimated bytes to train ``model_config`` with ``train_config`` (vocabulary ``vocab``,
    default the config's ``vocab_size`` or 2 when it is not known yet)."""
    m, t = model_config, train_config
    V = max(vocab or m.vocab_size, 2)
    G, S = m.gates, m.states
    itemsize = 8 if t.dtype == "float64" else 4
    params = parameter_count(m, V)
    tokens = t.batch_size * t.seq_len
    per_token = m.layers * m.hidden * (G + S + 2) + m.embed + 2 * V
    activations = _WORKSPACE * tokens * per_token
    return itemsize * (params * (1 + _PER_PARAMETER.get(t.optimizer, 3)) + activations)


def fits_in_memory(model_config, train_config, available: int | None = None) -> bool:
    """Whether training ``model_config`` (its vocabulary set) with ``train_config`` fits."""
    return training_bytes(model_config, train_config) <= (available_bytes() if available is None else available)


# the settings that scale the estimate
_SIZES = (("hidden", "model"), ("embed", "model"), ("layers", "model"), ("batch_size", "train"), ("seq_len", "train"))


def check_training_fits(model_config, train_config, vocab: int | None = None,
                        available: int | None = None) -> None:
    """Refuse a configuration whose training would not fit in memory, naming the option that
    makes it too big (the one whose default would shrink the estimate most) and the estimate.
    ``vocab`` defaults to the model's vocabulary size (unknown before the corpus is read)."""
    vocab = vocab or model_config.vocab_size or None
    fallback = f"a vocabulary of {vocab:,} tokens (--max-vocab)" if vocab else "this configuration"
    check_estimate_fits(lambda c: training_bytes(c["model"], c["train"], vocab),
                        {"model": model_config, "train": train_config}, _SIZES, fallback, available)
