"""Settings of sequence classifiers and taggers: the only place their defaults live.

Fields are declared with ``setting()`` (settings.py); the options of ``charlm classify train`` /
``charlm tag train`` are generated from them, and a bad value becomes one ``ConfigError`` before
any work starts.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..config import BudgetSettings, parse_eval_every
from ..errors import ConfigError
from ..kernels.cells import CELLS
from ..settings import Overrides, check, names, setting

TASKS = ("classify", "tag")
# The default pooling is "final", chosen by measurement over max and mean (docs/results.md,
# "Pooling"): each direction ends on one edge of the word (suffix, prefix), the strongest
# cues there; a mean over all steps blurs them.
POOLINGS = ("final", "mean", "max")
SCHEDULES = ("cosine", "constant")
MAX_NGRAM = 8
MAX_MEMBERS = 16
CLASSIFY_ONLY = ("pooling", "wide_ngrams", "wide_buckets", "wide_dropout", "class_lm")   # one label per text
# settings that only shape a path another setting turns on: given alone, they would do nothing
_NEEDS = {"buckets": ("ngrams", "the n-gram embeddings"), "wide_buckets": ("wide_ngrams", "the wide path"),
          "wide_dropout": ("wide_ngrams", "the wide path")}


def per_layer_cells() -> tuple[str, ...]:
    """Cells whose kernels run one layer at a time (so both directions can reuse them)."""
    return tuple(name for name, cell in CELLS.items() if not cell.feeds_output)




@dataclass(frozen=True)
class SeqModelConfig:
    task: str = setting("classify", choices=TASKS, option=False,
                        help="classify (one label per sequence) | tag (one label per token)")
    cell: str = setting("lstm", choices=per_layer_cells(), help="recurrent cell")
    level: str = setting("char", choices=("char", "word"), help="tokens are characters or words")
    split: str = setting("", option=False, help="word level: how text splits into words (whitespace | words)")
    vocab_size: int = setting(0, minimum=2, option=False, help="V, from the training data")
    num_labels: int = setting(0, minimum=1, option=False, help="C, from the training data")
    embed: int = setting(64, minimum=1, help="embedding width")
    hidden: int = setting(128, minimum=1, help="hidden width per direction")
    layers: int = setting(1, minimum=1, help="stacked layers")
    bidirectional: bool = setting(True, flag="--bidirectional/--unidirectional",
                                  help="read each sequence both ways, or forward only")   # outputs 2H wide
    dropout: float = setting(0.2, minimum=0, below=1,
                             help="dropout between layers and before the head (training only)")
    label_smoothing: float = setting(0.0, minimum=0, below=1,
                                     help="the training loss's target: 1 - e on the label, e spread over "
                                          "all labels (training only)")
    input_dropout: float = setting(0.0, minimum=0, below=1,
                                   help="drop whole token (and n-gram) embeddings at the input (training only)")
    pooling: str = setting("final", choices=POOLINGS, help="how a sequence becomes one vector: the final "
                                                          "states, or the mean or max over its steps")
    ngrams: int = setting(0, minimum=0, help="add hashed embeddings of the 2..N-grams ending at each token (0 = none)")
    buckets: int = setting(32768, minimum=1, help="hash buckets of those n-gram embeddings")
    members: int = setting(1, minimum=1, maximum=MAX_MEMBERS,
                           help="models trained side by side, their probabilities averaged (an ensemble)")
    # salted: the members' hash collisions differ (ngrams.py)
    member_salts: bool = setting(False, flag="--member-salts/--shared-hashes",
                                 help="each member hashes its n-grams with its own salt")
    wide_ngrams: int = setting(0, minimum=0, help="add a linear classifier over the hashed 1..N-grams of the whole "
                                                  "text, its logits summed with the head's (0 = none)")   # wide.py
    wide_buckets: int = setting(131072, minimum=1, help="hash buckets of that linear classifier")
    wide_dropout: float = setting(0.0, minimum=0, below=1, help="drop whole n-grams from its bag (training only)")
    # class_lm.py and fusion.py; the weights are fitted on the dev split (none without one)
    class_lm: int = setting(0, minimum=0, help="pool the classifier with an N-gram language model of each "
                                               "label's texts, weighed on the dev split (0 = none)")

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def validate(self) -> "SeqModelConfig":
        check(self)
        if self.ngrams == 1 or self.ngrams > MAX_NGRAM:
            raise ConfigError(f"ngrams must be 0 (none) or from 2 to {MAX_NGRAM}, got {self.ngrams}")
        if self.wide_ngrams > MAX_NGRAM:
            raise ConfigError(f"wide_ngrams must be from 0 (none) to {MAX_NGRAM}, got {self.wide_ngrams}")
        if self.class_lm > MAX_NGRAM:
            raise ConfigError(f"class_lm must be from 0 (none) to {MAX_NGRAM}, got {self.class_lm}")
        for name in ("wide_ngrams", "class_lm"):
            if getattr(self, name) and self.task != "classify":
                raise ConfigError(f"{name} is for classifiers only (one label per text), not taggers")
        return self


@dataclass(frozen=True)
class SeqTrainConfig(BudgetSettings):   # the budget and evaluation cadence: config.BudgetSettings
    batch_size: int = setting(64, minimum=1, help="sequences per step")   # bucketed by length: little padding
    lr: float = setting(3e-3, above=0, help="peak learning rate (Adam)")
    min_lr: float = setting(1e-4, minimum=0, help="learning rate at the end of the budget")
    schedule: str = setting("cosine", choices=SCHEDULES, help="learning-rate schedule over the budget")
    warmup_steps: int = setting(50, minimum=0, help="linear warm-up steps")
    # Adam's coupled L2; a hashed table's rows decay on the steps that use them (sparse_adam.py)
    weight_decay: float = setting(0.0, minimum=0, help="L2 weight decay")
    clip_norm: float = setting(5.0, minimum=0, help="clip the global gradient norm (0 = off)")
    max_length: int = setting(0, minimum=0, help="tokens kept per training sequence (0 = all)")
    seed: int = setting(1234, minimum=0, help="seed of initialisation, dropout, data order and the dev hold-out")
    dtype: str = setting("float32", choices=("float32", "float64"), help="float32 for speed, float64 for checks")
    threads: int = setting(0, minimum=0, help="cores to use (0 = all; a bidirectional layer runs its two "
                                              "directions at once)")

    def validate(self) -> "SeqTrainConfig":
        check(self)
        parse_eval_every(self.eval_every)
        return self


def make_seq_configs(task: str, values: dict) -> tuple[SeqModelConfig, SeqTrainConfig]:
    """The configurations of a new ``task`` run: defaults updated with ``values`` (field name ->
    value; ``None`` means unset), validated before any data is read (the vocabulary and the labels
    come from the data later). Unknown names, and settings given without the path they shape, are
    refused."""
    values = {k: v for k, v in values.items() if v is not None}
    model_fields, train_fields = names(SeqModelConfig), names(SeqTrainConfig)
    unknown = sorted(set(values) - model_fields - train_fields)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    for name, (needed, what) in _NEEDS.items():
        if name in values and not values.get(needed):
            raise ConfigError(f"{name} is for {what}, which {needed} turns on: give {needed} too")
    if values.get("member_salts") and not (values.get("ngrams") or values.get("wide_ngrams")):
        raise ConfigError("member_salts salts the members' n-gram hashes: give ngrams or wide_ngrams too")
    model = SeqModelConfig(task=task, **{k: v for k, v in values.items() if k in model_fields})
    train = SeqTrainConfig(**{k: v for k, v in values.items() if k in train_fields}).validate()
    replace(model, vocab_size=2, num_labels=1).validate()
    return model, train


def seq_resume_overrides(values: dict, model_class=SeqModelConfig) -> Overrides:
    """The training settings ``values`` (``None`` means unset) given to continue a run, checked as
    for a new run; the trainer decides which may change (SeqTrainer.resume). A model setting (a
    field of ``model_class``) is refused: the checkpoint fixes the model."""
    values = {k: v for k, v in values.items() if v is not None}
    model_keys = sorted(set(values) & names(model_class))
    if model_keys:
        raise ConfigError(f"cannot change the model when resuming ({', '.join(model_keys)}); "
                          "start a new run instead")
    return Overrides(SeqTrainConfig(**values).validate(), frozenset(values))


def stored_eval_every(value):
    """``eval_every`` as a checkpoint written before the shared loop stored it: 0 meant once per
    epoch and becomes "auto"; a number of steps becomes its digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return "auto" if value == 0 else str(value)
    return value
