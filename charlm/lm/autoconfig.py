"""The model a time budget buys: width, regularisation and learning rate chosen for the corpus.

When ``charlm train`` is given a time budget and no model size, the best model is not a fixed
one: a short budget wants a small network that sees the text several times, a long one a wide
network that would otherwise overfit. ``choose`` measures what this machine does (a short
throughput probe of each candidate width: a few real training steps, compiled kernels
excluded) and applies a rule fitted to the runs of docs/results.md (docs/model-choice.md):

  1. candidates are the model asked for (cell, layers: by default a GRU 2xH) at each width H
     from ``LADDER``; the probe predicts the characters each would train in the budget,
     ``tokens = rate(H) x seconds``;
  2. the budget's overfitting pressure, ``tokens x P(H) / corpus**2`` (epochs times parameters
     per training character; nearly the same for every width, as a wider model trains fewer
     tokens), decides the regime: from ``PRESSURE_FOR_DROPOUT`` on, the run will memorise the
     text unless regularised, so it gets variational dropout ``DROPOUT`` between layers and on
     the decoder's input, and decoupled weight decay ``WEIGHT_DECAY`` (AdamW); below, both cost
     more than they save;
  3. the widest H is kept whose parameters P(H) still see ``tokens >= k x P(H)``, with
     k = ``TOKENS_PER_PARAM`` (below that, a wider model is undertrained and loses to a narrower
     one at equal time), or the smaller ``TOKENS_PER_PARAM_REGULARISED`` when dropout is on
     (the wider model's extra capacity then goes to generalising instead of memorising).

Anything the user gives wins: a field given on the command line or in the config file is never
changed (an optimiser or a weight decay given keeps both as they are), and when the width is
given nothing is probed. Widths that would not fit in memory are not candidates.
``settle_model`` is the one place a new run's model is decided, the fit checked. The choice is
deterministic given the probe's figures (``rate`` may be any function, so tests inject one).
"""
from __future__ import annotations

import time

from ..config import ModelConfig, TrainConfig, replace
from ..training.recipe import PROBE_STEPS, Choice, climb, step_seconds

LADDER = (128, 192, 256, 384, 512, 768, 1024)   # hidden sizes considered, narrowest first
TOKENS_PER_PARAM = 4.0      # fitted: characters per parameter below which a wider model loses
TOKENS_PER_PARAM_REGULARISED = 1.5   # fitted: the same with dropout and weight decay on
PRESSURE_FOR_DROPOUT = 8.0  # fitted: epochs x parameters per character from which dropout wins
DROPOUT = 0.25
WEIGHT_DECAY = 0.1          # fitted: AdamW's decoupled decay in the regularised regime
MODEL_FIELDS, TRAIN_FIELDS = ("hidden", "dropout"), ("optimizer", "weight_decay")


def stack_parameters(vocab: int, embed: int, hidden: int, layers: int, gates: int = 4) -> int:
    """Parameters of embedding + L recurrent layers of ``gates`` blocks + decoder (PyTorch's
    count, both biases per layer)."""
    G = gates * hidden
    rnn = sum(G * ((embed if layer == 0 else hidden) + hidden + 2) for layer in range(layers))
    return vocab * embed + rnn + hidden * vocab + vocab


def overfitting_pressure(tokens: float, params: int, corpus_tokens: int) -> float:
    """Epochs times parameters per training character: how far a run can go towards memorising
    its text (a few: it generalises; tens: it memorises unless regularised)."""
    return (tokens / corpus_tokens) * (params / corpus_tokens)


def choose(model: ModelConfig, train: TrainConfig, corpus_tokens: int, given: set, rate,
           fits=lambda candidate: True) -> Choice | None:
    """The widths and regularisation for a time budget; None when there is nothing to choose
    (no time budget, the user gave the width, or not even the narrowest width ``fits`` in
    memory). ``rate(model_config) -> tokens per second``."""
    seconds = train.time_budget
    if not seconds or "hidden" in given or model.row.feeds_output:
        return None  # the output-fed row's recurrence runs through the decoder: no such rule for it
    rates, t0 = {}, time.perf_counter()
    corpus = max(corpus_tokens, 1)
    dropout_at = {}

    def enough(hidden: int) -> bool:
        rates[hidden] = rate(replace(model, hidden=hidden))
        params = stack_parameters(model.vocab_size, model.embed, hidden, model.layers, model.gates)
        tokens = rates[hidden] * seconds
        dropout_at[hidden] = (model.dropout > 0 if "dropout" in given
                              else overfitting_pressure(tokens, params, corpus) >= PRESSURE_FOR_DROPOUT)
        needed = TOKENS_PER_PARAM_REGULARISED if dropout_at[hidden] else TOKENS_PER_PARAM
        return tokens >= needed * params  # below: undertrained, and wider ones are slower still

    best = climb(LADDER, lambda hidden: fits(replace(model, hidden=hidden)), enough)
    if best is None:
        return None  # not even the narrowest width fits in memory
    tokens = rates[best] * seconds
    epochs = tokens / corpus
    values = {"hidden": best}
    if "dropout" not in given and dropout_at[best]:
        values["dropout"] = DROPOUT
    if dropout_at[best] and not given & set(TRAIN_FIELDS):
        values.update(optimizer="adamw", weight_decay=WEIGHT_DECAY)
    regularised = [f"dropout {values['dropout']:g}"] if "dropout" in values else []
    regularised += [f"weight decay {values['weight_decay']:g}"] if "weight_decay" in values else []
    reason = (f"{model.layers}x{best} {model.row.torch_module}: ~{tokens / 1e6:.1f}M tokens in {seconds:g}s "
              f"({epochs:.1f} epochs)" + "".join(", " + r for r in regularised))
    return Choice(values, reason, rates, time.perf_counter() - t0)


def probe_rate(model: ModelConfig, train: TrainConfig, steps: int = PROBE_STEPS) -> float:
    """Training tokens per second of ``model`` at ``train``'s batch and window on this machine:
    forward, backward, clipping and the optimiser step on random ids, the median of ``steps``
    after an untimed one (training/recipe.step_seconds)."""
    import numpy as np

    from ..optim import clip_grad_norm, make_optimizer
    from ..runtime import thread_limits
    from .model import Model

    rng = np.random.default_rng(0)
    net = Model(replace(model, dropout=0.0)).init_weights(rng)
    opt = make_optimizer(train.optimizer, net.size, net.dtype, weight_decay=train.weight_decay)
    T, B = train.seq_len, train.batch_size
    x = rng.integers(0, model.vocab_size, (T, B))
    y = rng.integers(0, model.vocab_size, (T, B))
    state = net.init_state(B)

    def step():
        net.loss_and_grad(x, y, state, rng)
        clip_grad_norm(net.grad_flat, train.clip_norm)
        opt.step(net.flat, net.grad_flat, 0.0)
    with thread_limits(train.threads):
        return T * B / step_seconds(step, steps)


def settle_model(model: ModelConfig, train: TrainConfig, corpus, given: frozenset[str]):
    """(model config, training config, Choice or None): the one place a new run's model is
    decided. The vocabulary comes from ``corpus``; with a time budget and no width given, the
    width and regularisation are chosen (the probe runs on this machine, with the run's batch,
    window and thread count, on the widths that fit in memory); then the final configuration is
    checked to fit (footprint.py), before anything is allocated."""
    from .footprint import check_training_fits, fits_in_memory

    model = replace(model, vocab_size=len(corpus.tokenizer))
    choice = choose(model, train, int(corpus.train.size), given, lambda m: probe_rate(m, train),
                    fits=lambda m: fits_in_memory(m, train))
    if choice is not None:
        picked = choice.values
        model = replace(model, **{k: v for k, v in picked.items() if k in MODEL_FIELDS})
        train = replace(train, **{k: v for k, v in picked.items() if k in TRAIN_FIELDS})
    check_training_fits(model, train)
    return model, train, choice
