"""The classifier or tagger a time budget buys: features, width and ensemble chosen for the data.

Given a time budget (``--time``, or none at all: the default one), ``charlm classify train`` and
``charlm tag train`` choose what the user did not give, by the rule every task's chooser follows
(training/recipe.py: a ladder of candidates, cheapest first, each timed by a few real steps on
this machine, the richest one the budget still feeds). The evidence is the README's word language
identification tables (every setting tried, dev accuracy by epochs):

Classifiers.
  1. Features, whatever the budget: hashed embeddings of the 2..4-grams ending at each character
     (word pairs at the word level) with input dropout (without it they memorise the training
     texts), dropout 0.5, and the wide path, a linear model of the text's hashed 1..5-grams (word
     1..2-grams, fastText's choice, at the word level) with wide dropout. They beat the plain
     encoder at every epoch count measured, for a little more time per epoch. The wide table
     holds at most ``WIDE_TABLE`` weights per member: many labels get fewer buckets. At the
     character level, class 5-gram language models pooled with the ensemble (class_lm.py): about
     a second to count; 0.3-0.8 points of dev accuracy at three seeds, 0.2-0.5 on held-out words.
  2. Members: 1 to ``MAX_MEMBERS`` models averaged (their n-gram hashes salted apart); one more
     is added while each member still gets ``MEMBER_EPOCHS`` epochs in the budget. Averaging
     pays once every member is near its best: more members of fewer epochs each lost to fewer
     of more, and members beyond ``MAX_MEMBERS`` gained too little for their cost.
  3. Epochs: at most ``EPOCH_CAP``, the epochs a member needs: past them the ensembles measured
     only overfit (their dev loss rose from about 7 epochs on while the training loss kept falling,
     and a schedule that ends there did at least as well as one that runs on), so a longer budget
     ends early, with its learning rate annealed by then, instead of training on.
  The width stays as it is: wider encoders were no better at equal epochs and cost more.

Taggers: hashed n-gram embeddings at the character level (without input dropout: a text to
tag is long enough not to be memorised), which tagged spaces far better at equal epochs for
the same time per epoch; and the width, as the language model chooses its own: the widest of ``TAG_LADDER`` whose
tokens in the budget are still ``TOKENS_PER_PARAM`` per recurrent parameter. Measured on space
restoration at equal time, a wider tagger with a few tokens per parameter lost clearly to the
narrower one with several times more; the bound sits between the two.

Anything the user gives wins and is named in the chosen line; with a step or epoch budget alone
(no time) nothing is chosen. ``choose`` is a pure function of the data's shape, the budget and a
``rate`` (tests inject one); ``settle_recipe`` measures the rate and applies the choice.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

from ..training.recipe import Choice, climb, step_seconds

NGRAMS = {"char": 4, "word": 2}         # the n-gram embeddings' longest n-gram, by level
WIDE_NGRAMS = {"char": 5, "word": 2}    # the wide path's
CLASS_LM = {"char": 5, "word": 0}       # the class language models' order (word level: not measured, none)
INPUT_DROPOUT, DROPOUT, WIDE_DROPOUT = 0.5, 0.5, 0.3
WIDE_TABLE = 1 << 21                    # wide-path weights per member at most (buckets x labels)
WIDE_BUCKETS_RANGE = (1024, 131072)     # the wide table's buckets, fewest and most
MEMBER_EPOCHS = 8.0                     # epochs each member needs before one more member pays
MAX_MEMBERS = 4
EPOCH_CAP = MEMBER_EPOCHS
TAG_LADDER = (64, 128, 192, 256, 384)
TOKENS_PER_PARAM = 8.0                  # fitted: tokens per recurrent parameter below which a wider tagger loses
# settings that describe the run rather than its recipe: never listed as given
_NOT_RECIPE = frozenset({"steps", "epochs", "time_budget", "eval_every", "seed", "threads", "dtype"})


@dataclass(frozen=True)
class DataShape:
    examples: int
    tokens: int         # training tokens per epoch
    longest: int        # tokens of the longest training sequence
    held_out: bool = True   # a dev split exists: the class language models' weights are fitted on it


def budget_seconds(train_config) -> float:
    """The time budget a recipe is chosen for: the one given, or the default when no budget is
    given at all; 0 when only steps or epochs bound the run."""
    from ..training.budget import Budget

    t = train_config
    return t.time_budget or (Budget.of(t).seconds if not (t.steps or t.epochs) else 0.0)


def choose(model, train, shape: DataShape, given, rate, fits=lambda candidate: True, ranks: int = 1):
    """A ``Choice`` for ``model`` (its vocabulary and labels set) and ``train`` on data of this
    ``shape``, or None when there is nothing to choose. ``rate(model_config) -> training tokens
    per second``; ``fits(model_config)``: whether it fits in memory; under several ``ranks`` no
    ensemble is chosen (its members' dropout draws cannot be split across ranks)."""
    seconds = budget_seconds(train)
    if not seconds:
        return None
    given = frozenset(given)
    seconds_training = seconds * (1 - _eval_share())
    rates, t0 = {}, time.perf_counter()

    def epochs_of(key) -> float:
        return rates[key] * seconds_training / max(shape.tokens, 1)

    if model.task == "tag":
        features = {"ngrams": NGRAMS[model.level]} if model.level == "char" and "ngrams" not in given else {}
        ladder = (model.hidden,) if "hidden" in given else TAG_LADDER
        if not features and len(ladder) == 1:
            return None

        def sized(hidden: int):
            return replace(model, **features, hidden=hidden)

        def enough(hidden: int) -> bool:
            rates[hidden] = rate(sized(hidden))
            return rates[hidden] * seconds_training >= TOKENS_PER_PARAM * parameters(sized(hidden))
        best = climb(ladder, lambda h: fits(sized(h)), enough)
        if best is None:
            return None
        why = "width given" if len(ladder) == 1 else _next_rung_why(ladder, best, rates, lambda h: (
            f"width {h} would train {rates[h] * seconds_training / parameters(sized(h)):.1f} "
            f"tokens per parameter, < {TOKENS_PER_PARAM:g}"))
        values = features | ({} if "hidden" in given else {"hidden": best})
        return _choice(values, model, seconds, epochs_of(best), why, rates, t0, given)
    base = classify_features(model, given, shape.held_out)
    fixed = "members" in given or ranks > 1
    ladder = (model.members if "members" in given else 1,) if fixed else tuple(range(1, MAX_MEMBERS + 1))

    def candidate(members: int):
        salts = {} if "member_salts" in given else {
            "member_salts": members > 1 and bool(base.get("ngrams", model.ngrams) or base.get("wide_ngrams", model.wide_ngrams))}
        return replace(model, **base, **salts, members=members)

    def enough(members: int) -> bool:
        rates[members] = rate(candidate(members))
        return members == 1 or epochs_of(members) >= MEMBER_EPOCHS
    best = climb(ladder, lambda k: fits(candidate(k)), enough)
    if best is None:
        return None
    chosen = candidate(best)
    values = {k: getattr(chosen, k) for k in (*base, "members", "member_salts") if k not in given}
    epochs = epochs_of(best)
    if fixed:
        why = "members given" if "members" in given else "one model: an ensemble cannot be split across ranks"
    elif best == MAX_MEMBERS:
        why = f"{MAX_MEMBERS} members at most: more did not pay"
    else:
        why = _next_rung_why(ladder, best, rates,
                             lambda k: f"{k} members would get {epochs_of(k):.1f} epochs each, < {MEMBER_EPOCHS:g}")
    if train.epochs:
        epochs = min(epochs, train.epochs)
    elif epochs > EPOCH_CAP:
        values["epochs"], epochs = EPOCH_CAP, EPOCH_CAP
    return _choice(values, model, seconds, epochs, why, rates, t0, given)


def classify_features(model, given, held_out: bool = True) -> dict:
    """The classifier's features for its level, without the settings ``given``; no class language
    models without a dev split (``held_out``) to weigh them on."""
    level = model.level
    ngrams = model.ngrams if "ngrams" in given else NGRAMS[level]
    wide = model.wide_ngrams if "wide_ngrams" in given else WIDE_NGRAMS[level]
    chosen = {"ngrams": ngrams, "wide_ngrams": wide, "dropout": DROPOUT, "class_lm": CLASS_LM[level] if held_out else 0}
    if ngrams:
        chosen["input_dropout"] = INPUT_DROPOUT
    if wide:
        chosen |= {"wide_dropout": WIDE_DROPOUT, "wide_buckets": wide_buckets(model.num_labels)}
    return {k: v for k, v in chosen.items() if k not in given}


def wide_buckets(labels: int) -> int:
    """Buckets of the wide table for ``labels`` labels: a power of two, the table at most
    ``WIDE_TABLE`` weights, within ``WIDE_BUCKETS_RANGE``."""
    low, high = WIDE_BUCKETS_RANGE
    buckets = high
    while buckets > low and buckets * max(labels, 1) > WIDE_TABLE:
        buckets //= 2
    return buckets


def parameters(model) -> int:
    """Parameters besides the embedding tables (whose rows a step barely touches): what the
    tokens of a budget must train."""
    import math

    from .model import parameter_shapes

    return sum(math.prod(shape) for name, shape in parameter_shapes(model) if not name.endswith("embedding.weight"))


def _eval_share() -> float:
    from ..training.budget import MAX_EVAL_SHARE

    return MAX_EVAL_SHARE


def _next_rung_why(ladder, best, rates, below) -> str:
    """Why the climb stopped at ``best``: the next rung's shortfall, or that it did not fit."""
    position = ladder.index(best)
    if position + 1 == len(ladder):
        return "the largest tried"
    nxt = ladder[position + 1]
    return below(nxt) if nxt in rates else f"the next ({nxt}) would not fit in memory"


def _choice(values, model, seconds, epochs, why, rates, t0, given) -> Choice:
    recipe = describe(values, model)
    reason = f"{recipe}: ~{epochs:.1f} epochs in {seconds:g}s ({why})"
    return Choice(values, reason, rates, time.perf_counter() - t0, tuple(sorted(given - _NOT_RECIPE)))


def describe(values: dict, model) -> str:
    """What was chosen, in words (only the settings chosen)."""
    parts = []
    if "hidden" in values:
        parts.append(f"{'bidirectional ' if model.bidirectional else ''}{model.cell.upper()} "
                     f"{model.layers}×{values['hidden']}")
    if "members" in values:
        salted = " with own n-gram hashes" if values.get("member_salts") else ""
        parts.append(f"{values['members']} member{'s' if values['members'] > 1 else ''}{salted}")
    if values.get("ngrams"):
        parts.append(f"2..{values['ngrams']}-gram embeddings")
    if "input_dropout" in values:
        parts.append(f"input dropout {values['input_dropout']:g}")
    if values.get("wide_ngrams"):
        buckets = values.get("wide_buckets", model.wide_buckets)
        parts.append(f"wide 1..{values['wide_ngrams']}-grams"
                     + (f" ({buckets:,} buckets)" if buckets != WIDE_BUCKETS_RANGE[1] else ""))
    if "wide_dropout" in values:
        parts.append(f"wide dropout {values['wide_dropout']:g}")
    if values.get("class_lm"):
        parts.append(f"class {values['class_lm']}-gram LMs")
    if "dropout" in values:
        parts.append(f"dropout {values['dropout']:g}")
    if "epochs" in values:
        parts.append(f"at most {values['epochs']:g} epochs")
    return ", ".join(parts) or "nothing"


def stored_choice(metadata: dict) -> dict | None:
    """The choice a run's checkpoint holds (stored with its data's description), if it holds a
    well-formed one: a one-line ``reason`` and the ``given`` setting names."""
    spec = metadata.get("data")
    chosen = spec.get("chosen") if isinstance(spec, dict) else None
    if not (isinstance(chosen, dict) and isinstance(chosen.get("reason"), str)):
        return None
    given, probe = chosen.get("given", []), chosen.get("probe_seconds", 0.0)
    return chosen | {"given": [g for g in given if isinstance(g, str)] if isinstance(given, list) else [],
                     "probe_seconds": float(probe) if isinstance(probe, (int, float)) else 0.0}


def data_shape(encoded, held_out: bool = True) -> DataShape:
    """The shape of an encoded training split (batching.Encoded), and whether a dev split exists."""
    lengths = encoded.lengths
    return DataShape(len(lengths), int(lengths.sum()), int(lengths.max(initial=1)), held_out)


def settle_recipe(train, model, train_config, given, ranks: int = 1, held_out: bool = True):
    """(model config, training config, Choice or None) for a new run on the ``train`` examples:
    the recipe chosen for the budget (``choose``; the rate probed on this machine, the fit in
    memory estimated by footprint.py), the settings ``given`` kept."""
    if not budget_seconds(train_config):
        return model, train_config, None
    from .batching import encode_examples, fit_labels, fit_vocabulary
    from .footprint import seq_fits_in_memory

    tokenizer = fit_vocabulary(train, model.level, model.task)
    labels = fit_labels(train, model.task)
    sized = replace(model, vocab_size=len(tokenizer), num_labels=len(labels),
                    split=tokenizer.split if tokenizer.level == "word" else "")
    encoded = encode_examples(train, tokenizer, labels, model.task, max_length=train_config.max_length)
    shape = data_shape(encoded, held_out)
    sample = probe_batch(train, encoded.lengths, train_config.batch_size)
    choice = choose(sized, train_config, shape, given, lambda m: probe_rate(m, train_config, sample),
                    lambda m: seq_fits_in_memory(m, train_config, shape.longest), ranks)
    if choice is None:
        return model, train_config, None
    train_fields = {"epochs"}
    model = replace(model, **{k: v for k, v in choice.values.items() if k not in train_fields})
    train_config = replace(train_config, **{k: v for k, v in choice.values.items() if k in train_fields})
    replace(model, vocab_size=2, num_labels=1).validate()   # the data sizes come later (SeqTask)
    return model, train_config.validate(), choice


def probe_batch(train, lengths, batch_size: int) -> list:
    """One batch of training examples of about the median length: the steps a probe times."""
    import numpy as np

    order = np.argsort(lengths, kind="stable")
    middle = max(0, len(order) // 2 - batch_size // 2)
    return [train[i] for i in order[middle:middle + batch_size]]


def probe_rate(model, train_config, sample: list) -> float:
    """Training tokens per second of ``model`` (vocabulary and labels set) on this machine: a
    task on the ``sample`` batch alone, each step forward, backward, clipping and the optimiser's
    step as the run does them, the median of a few after an untimed one."""
    from .task import SeqTask

    t = replace(train_config, batch_size=len(sample), max_length=0)
    task = SeqTask(sample, None, model, t)
    task.init_weights()
    batch = task.next_batch()
    tokens = task.tokens(batch)

    def step():
        task.loss_and_grad(batch)
        task.clip()
        task.step(t.lr)
    with task.thread_scope(t.threads):
        return tokens / step_seconds(step)
