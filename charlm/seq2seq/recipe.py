"""The encoder-decoder a time budget buys: its width, chosen for the data and the budget.

The same rule as every task's chooser (training/recipe.py): a ladder of widths, cheapest first,
each timed by a few real training steps on this machine, and the widest one the budget still
trains for ``EPOCHS_NEEDED`` passes over the data. Why the width and why passes: a 15-minute
grapheme-to-phoneme run of the 256-wide model was still improving quickly when its budget ended,
and a narrower model that costs less per step, given the extra steps, did better in the same
minutes (docs/seq2seq.md, "Choosing the width"); a longer budget buys the wider one its passes.
The hidden width sets the encoder's (per direction) and the decoder's together, as ``--hidden``
does. Anything the user gives wins: ``--hidden`` leaves nothing to choose; with a step or epoch
budget alone (no time) nothing is chosen; an autoencoder keeps its own settings.
"""
from __future__ import annotations

import time
from dataclasses import replace

from ..training.recipe import Choice, climb, step_seconds

LADDER = (128, 160, 192, 256, 320, 384, 512)
EPOCHS_NEEDED = 10.0    # passes a width must get in the budget, as the probe predicts them (fitted: docs/seq2seq.md)
# settings that describe the run rather than its recipe: never listed as given
_NOT_RECIPE = frozenset({"steps", "epochs", "time_budget", "eval_every", "seed", "threads", "dtype"})


def tokens_per_epoch(pairs) -> int:
    """Tokens a pass over ``pairs`` trains, as Seq2SeqTask.tokens counts a batch's: the sources',
    and the targets' with their <eos>."""
    return sum(len(p.source) + len(p.target) + 1 for p in pairs)


def choose(model, train, tokens: int, given, rate) -> Choice | None:
    """A ``Choice`` of ``hidden`` for ``model`` (vocabularies set) and ``train`` (a SeqTrainConfig)
    on data of ``tokens`` per epoch, or None when there is nothing to choose. ``rate(model_config)
    -> training tokens per second`` (tests inject one)."""
    from ..seqtask.recipe import budget_seconds
    from ..training.budget import MAX_EVAL_SHARE

    seconds = budget_seconds(train)
    given = frozenset(given)
    if not seconds or "hidden" in given:
        return None
    seconds_training = seconds * (1 - MAX_EVAL_SHARE)
    rates, t0 = {}, time.perf_counter()

    def epochs_of(hidden: int) -> float:
        return rates[hidden] * seconds_training / max(tokens, 1)

    def enough(hidden: int) -> bool:
        rates[hidden] = rate(replace(model, hidden=hidden))
        return epochs_of(hidden) >= EPOCHS_NEEDED
    best = climb(LADDER, lambda hidden: True, enough)
    position = LADDER.index(best)
    if epochs_of(best) < EPOCHS_NEEDED:
        why = f"the narrowest tried: fewer than {EPOCHS_NEEDED:g} epochs for any"
    elif position + 1 == len(LADDER):
        why = "the widest tried"
    else:
        wider = LADDER[position + 1]
        why = f"width {wider} would get {epochs_of(wider):.1f} epochs, < {EPOCHS_NEEDED:g}"
    reason = f"hidden {best}: ~{epochs_of(best):.1f} epochs in {seconds:g}s ({why})"
    return Choice({"hidden": best}, reason, rates, time.perf_counter() - t0, tuple(sorted(given - _NOT_RECIPE)))


def settle_width(train_pairs, model, train_config, given):
    """(model config, Choice or None) for a new run on ``train_pairs``: the width chosen for the
    budget (``choose``, its rate probed on this machine), a width given kept."""
    from .data import SOURCE_SPECIALS, TARGET_SPECIALS, Vocab

    source = Vocab.fit((p.source for p in train_pairs), SOURCE_SPECIALS)
    target = Vocab.fit((p.target for p in train_pairs), TARGET_SPECIALS)
    sized = replace(model, src_vocab=len(source), tgt_vocab=len(target))
    sample = probe_sample(train_pairs, train_config.batch_size)
    choice = choose(sized, train_config, tokens_per_epoch(train_pairs), given,
                    lambda m: probe_rate(m, train_config, sample, source, target))
    if choice is None:
        return model, None
    return replace(model, **choice.values), choice


def probe_sample(pairs, batch_size: int) -> list:
    """One batch of pairs of about the median length: the steps a probe times."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].source) + len(pairs[i].target))
    middle = max(0, len(order) // 2 - batch_size // 2)
    return [pairs[i] for i in order[middle:middle + batch_size]]


def probe_rate(model, train_config, sample: list, source, target) -> float:
    """Training tokens per second of ``model`` on this machine: the ``sample`` batch alone (in
    the run's vocabularies), each step forward, backward, clipping and the optimiser's step as
    Seq2SeqTask does them."""
    import numpy as np

    from ..optim import Adam, clip_grad_norm
    from ..seqtask.model import kernel_scope
    from .data import BOS, EOS, batch, encode_pairs
    from .model import Seq2SeqModel

    t = train_config
    rng = np.random.default_rng(t.seed)
    net = Seq2SeqModel(model, np.dtype(t.dtype)).init_weights(rng)
    optimizer = Adam(net.size, net.dtype, weight_decay=t.weight_decay)
    items = batch(encode_pairs(sample, source, target), np.arange(len(sample)), target.index[BOS], target.index[EOS])
    tokens = int(np.sum(items[1]) + np.sum(items[4]))

    def step():
        net.loss_and_grad(*items, rng)
        clip_grad_norm(net.grad_flat, t.clip_norm)
        optimizer.step(net.flat, net.grad_flat, t.lr)
    with kernel_scope(t.threads):
        return tokens / step_seconds(step)
