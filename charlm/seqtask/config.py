"""Settings of sequence classifiers and taggers: the only place their defaults live.

CLI options of ``charlm classify train`` / ``charlm tag train`` mirror these field names; a bad
value becomes one ``ConfigError`` before any work starts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import _choice, _positive_int, parse_eval_every
from ..errors import ConfigError

TASKS = ("classify", "tag")
# The default pooling is "final": on 12-language word identification it beat max and mean at
# equal settings (dev accuracy 0.776 vs 0.756 vs 0.741 after 3 epochs, bidirectional LSTM 128).
# Each direction ends on one edge of the word (suffix, prefix), the strongest cues there;
# a mean over all steps blurs them.
POOLINGS = ("final", "mean", "max")
SCHEDULES = ("cosine", "constant")
MAX_NGRAM = 8
MAX_MEMBERS = 16


def per_layer_cells() -> tuple[str, ...]:
    """Cells whose kernels run one layer at a time (so both directions can reuse them)."""
    from ..kernels.cells import CELLS

    return tuple(name for name, cell in CELLS.items() if not cell.feeds_output)


@dataclass(frozen=True)
class SeqModelConfig:
    task: str = "classify"      # classify (one label per sequence) | tag (one label per token)
    cell: str = "lstm"          # recurrent cell of every layer and direction
    level: str = "char"         # tokens are characters or words
    split: str = ""             # word level: how text splits into words (whitespace | words)
    vocab_size: int = 0         # V, from the training data
    num_labels: int = 0         # C, from the training data
    embed: int = 64             # E, embedding width
    hidden: int = 128           # H, per direction
    layers: int = 1             # L, stacked layers
    bidirectional: bool = True  # a reverse direction beside the forward one (outputs 2H wide)
    dropout: float = 0.2        # on the inputs of layers 2..L and of the head (training only)
    input_dropout: float = 0.0  # drops whole token (and n-gram) embeddings at the input (training only)
    pooling: str = "final"      # classify: final states (both directions' last), or mean | max over valid steps
    ngrams: int = 0             # N: add hashed embeddings of the 2..N-grams ending at each token (0 = none)
    buckets: int = 32768        # K: hash buckets shared by those n-grams (with ngrams only)
    members: int = 1            # models trained side by side whose probabilities are averaged (an ensemble)
    member_salts: bool = False  # member k hashes its n-grams with salt k (members' collisions differ; ngrams.py)
    wide_ngrams: int = 0        # classify: add a linear model over the hashed 1..N-grams of the whole text (0 = none; wide.py)
    wide_buckets: int = 131072  # hash buckets of that linear model (rows of a buckets x labels table)
    wide_dropout: float = 0.0   # drops whole n-grams from that bag (training only)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def validate(self) -> "SeqModelConfig":
        _choice("task", self.task, TASKS)
        _choice("cell", self.cell, per_layer_cells())
        _choice("level", self.level, ("char", "word"))
        _choice("pooling", self.pooling, POOLINGS)
        _positive_int("vocab_size", self.vocab_size, minimum=2)
        _positive_int("num_labels", self.num_labels, minimum=1)
        for name in ("embed", "hidden", "layers", "buckets", "wide_buckets"):
            _positive_int(name, getattr(self, name))
        _positive_int("ngrams", self.ngrams, minimum=0)
        _positive_int("members", self.members)
        if self.members > MAX_MEMBERS:
            raise ConfigError(f"members must be at most {MAX_MEMBERS}, got {self.members}")
        if self.ngrams == 1 or self.ngrams > MAX_NGRAM:
            raise ConfigError(f"ngrams must be 0 (none) or from 2 to {MAX_NGRAM}, got {self.ngrams}")
        _positive_int("wide_ngrams", self.wide_ngrams, minimum=0)
        if self.wide_ngrams > MAX_NGRAM:
            raise ConfigError(f"wide_ngrams must be from 0 (none) to {MAX_NGRAM}, got {self.wide_ngrams}")
        if self.wide_ngrams and self.task != "classify":
            raise ConfigError("wide_ngrams is for classifiers only (one label per text), not taggers")
        for name in ("bidirectional", "member_salts"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("dropout", "input_dropout", "wide_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        return self


@dataclass(frozen=True)
class SeqTrainConfig:
    batch_size: int = 64        # sequences per step (bucketed by length: little padding)
    lr: float = 3e-3            # peak learning rate (Adam)
    min_lr: float = 1e-4        # where the schedule ends
    schedule: str = "cosine"    # cosine: decays from lr to min_lr over the budget | constant
    warmup_steps: int = 50      # linear warm-up at the start
    weight_decay: float = 0.0   # Adam's coupled L2 (a hashed table's rows: on the steps that use them; sparse_adam.py)
    clip_norm: float = 5.0      # global gradient-norm clip (0 = off)
    epochs: float = 0.0         # budgets: the first one reached stops training
    steps: int = 0              # (none set: training/budget.py's DEFAULT_TIME_BUDGET)
    time_budget: float = 0.0    # wall-clock seconds
    eval_every: str = "auto"    # dev evaluation + checkpoint cadence: auto | steps ("500") | time ("30s")
    max_length: int = 0         # tokens kept per training sequence (0 = all)
    seed: int = 1234            # initialisation, dropout and data order
    dtype: str = "float32"      # float32 for speed, float64 for checks
    threads: int = 0            # cores used (0 = all): a bidirectional layer runs its directions on two

    def validate(self) -> "SeqTrainConfig":
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("dtype", self.dtype, ("float32", "float64"))
        for name in ("batch_size",):
            _positive_int(name, getattr(self, name))
        parse_eval_every(self.eval_every)
        for name in ("warmup_steps", "steps", "max_length", "seed", "threads"):
            _positive_int(name, getattr(self, name), minimum=0)
        for name in ("lr", "min_lr", "weight_decay", "clip_norm", "epochs", "time_budget"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        return self


def stored_eval_every(value):
    """``eval_every`` as a checkpoint written before the shared loop stored it: 0 meant once per
    epoch and becomes "auto"; a number of steps becomes its digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return "auto" if value == 0 else str(value)
    return value
