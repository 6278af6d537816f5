"""Settings of a language model and of its training: the only place their defaults live.

Each field is declared with ``setting()`` (settings.py): its default, range or choices, help and
option spelling. The options of ``charlm train`` (``--hidden`` is ``ModelConfig.hidden``) and
the keys of a ``--config`` TOML file are generated from these declarations, and ``validate()``
checks them, so that a bad value becomes one clear ``ConfigError`` before any work starts.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from .errors import ConfigError
from .kernels.cells import CELLS as _CELL_TABLE
from .kernels.cells import get_cell
from .settings import Overrides, check, names, setting, spec_of

CELLS = tuple(_CELL_TABLE)   # the --cell choices, in the table's order
# cells side by side (charlm inspect), simplest first: fewest gates, the output-fed ones last
COMPARED_CELLS = tuple(sorted(CELLS, key=lambda n: (_CELL_TABLE[n].feeds_output, _CELL_TABLE[n].gates)))
PER_LAYER_CELLS = tuple(n for n in COMPARED_CELLS if not _CELL_TABLE[n].feeds_output)
LEVELS = ("char", "word")
SPLITS = ("whitespace", "words")   # data/tokenizer.py's word-splitting rules (not imported: it loads NumPy)
EOS_MODES = ("auto", "line", "paragraph", "none")
CONDITIONS = ("input", "state")   # how a labelled model takes its label (lm/layers.py)
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad")
SCHEDULES = ("constant", "cosine", "linear", "plateau")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class ModelConfig:
    cell: str = setting("gru", choices=CELLS, help="recurrent cell")
    vocab_size: int = setting(0, minimum=2, option=False, help="V, set from the tokenizer when the model is built")
    embed: int = setting(64, minimum=1, help="embedding width")
    hidden: int = setting(256, minimum=1, help="hidden state width of every layer")
    layers: int = setting(2, minimum=1, help="stacked recurrent layers")
    # one mask per stream and window, the same at every step (variational dropout)
    dropout: float = setting(0.0, minimum=0, below=1,
                             help="dropout between layers and before the decoder, one mask per window")
    weight_dropout: float = setting(0.0, minimum=0, below=1, help="DropConnect on the recurrent weights W_hh")
    tie_weights: bool = setting(False, help="share the embedding and decoder (needs embed = hidden)")
    labels: int = setting(0, minimum=0, option=False, help="labels the model knows, set from its lines")
    condition: str = setting("input", choices=CONDITIONS,
                             help="--labelled: the label is one more input at every step, or the initial state")

    @property
    def row(self):
        """This cell's row of the cell table (kernels/cells.py)."""
        return get_cell(self.cell)

    @property
    def gates(self) -> int:
        """G: rows of W_ih / W_hh per hidden unit (4 for LSTM, 3 for GRU, 1 for RNN and Jordan)."""
        return self.row.gates

    @property
    def states(self) -> int:
        """S: state arrays carried per layer (h and c for LSTM, h otherwise)."""
        return self.row.states

    def validate(self) -> "ModelConfig":
        check(self)
        if self.weight_dropout and self.row.recurrent != "hh":
            raise ConfigError(f"weight_dropout applies to W_hh, which the {self.cell} cell does not have")
        if self.labels and self.row.feeds_output:
            raise ConfigError(f"labelled lines need a cell that feeds back its own state, not {self.cell}")
        if self.tie_weights and self.embed != self.hidden:
            raise ConfigError(
                f"--tie-weights needs embed == hidden (got embed={self.embed}, hidden={self.hidden})")
        return self


NO_BUDGET = "none (5 minutes)"   # how help states an unset budget (training/budget.py DEFAULT_TIME_BUDGET)


@dataclass(frozen=True)
class BudgetSettings:
    """The settings of a training budget, the same for every task: the first one reached stops
    training; none given: training/budget.py's DEFAULT_TIME_BUDGET."""
    steps: int = setting(0, minimum=0, shown=NO_BUDGET, help="stop after this many steps")
    epochs: float = setting(0.0, minimum=0, shown=NO_BUDGET, help="stop after this many passes over the training data")
    time_budget: float = setting(0.0, minimum=0, flag="--time", kind="duration", shown=NO_BUDGET,
                                 help="stop after this long, e.g. 90s, 10m, 1h30m")
    eval_every: str = setting("auto", kind="cadence",
                              help="evaluate and checkpoint: auto, every N steps (500) or every duration (30s)")
    average: float = setting(0.0, minimum=0, below=1,
                             help="evaluate and keep as best the mean of the weights over this last fraction "
                                  "of the budget, e.g. 0.25 (0 = off); training goes on from the raw weights")


@dataclass(frozen=True)
class TrainConfig(BudgetSettings):
    # data
    level: str = setting("char", choices=LEVELS, help="tokenize into characters or words")
    split: str = setting("whitespace", choices=SPLITS,
                         help="word level: whitespace-separated pieces, or words with each punctuation mark a token")
    eos: str = setting("auto", choices=EOS_MODES, help="what ends a sequence: a line, a paragraph, nothing, or guess")
    labelled: bool = setting(False, help="lines are text<TAB>label: learn each text given its label")
    val_fraction: float = setting(0.1, minimum=0, below=1, help="tail of the corpus held out for validation")
    val_file: str = setting("", kind="path", shown="none", help="separate validation text (replaces --val-fraction)")
    max_vocab: int = setting(0, minimum=0, help="word level: keep the most frequent words (0 = all)")
    min_count: int = setting(1, minimum=1, help="word level: rarer words become <unk>")
    # truncated BPTT: state is carried across windows
    seq_len: int = setting(64, minimum=1, help="steps of truncated backpropagation through time")
    batch_size: int = setting(32, minimum=1, help="parallel streams per step")
    # optimisation
    optimizer: str = setting("adam", choices=OPTIMIZERS, help="optimiser")
    lr: float = setting(2e-3, above=0, help="peak learning rate")
    weight_decay: float = setting(0.0, minimum=0, help="weight decay (adamw: decoupled)")
    momentum: float = setting(0.9, minimum=0, help="SGD momentum")
    schedule: str = setting("cosine", choices=SCHEDULES, help="learning-rate schedule")
    warmup_steps: int = setting(0, minimum=0, help="linear warm-up steps (any schedule)")
    min_lr: float = setting(0.0, minimum=0, help="cosine and linear schedules: final learning rate")
    clip_norm: float = setting(5.0, minimum=0, help="clip the global gradient norm (0 = off)")
    clip_value: float = setting(0.0, minimum=0, help="clip each gradient element (0 = off)")
    # bookkeeping (the budget: BudgetSettings)
    sample_every: int = setting(0, minimum=0, help="steps between short samples in the view (0 = off)")
    track_gradients: bool = setting(
        False, help="log gradient lag curves at each evaluation (charlm inspect gradients, charlm info)")
    seed: int = setting(1234, minimum=0, help="seed of initialisation, dropout and data order")
    threads: int = setting(0, minimum=0, help="CPU threads (0 = all cores)")
    dtype: str = setting("float32", choices=DTYPES, help="float32 for speed, float64 for checks")

    def validate(self) -> "TrainConfig":
        check(self)
        parse_eval_every(self.eval_every)
        if self.min_lr > self.lr:
            raise ConfigError(f"min_lr ({self.min_lr:g}) must not be above lr ({self.lr:g}): "
                              "the schedule decays from lr down to min_lr")
        return self


def replace(config, **changes):
    """``dataclasses.replace`` that ignores ``None`` values (unset CLI options)."""
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls, data: dict):
    """Build ``cls`` from a dict, refusing unknown keys with a clear message."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as e:  # pragma: no cover - dataclass signature errors
        raise ConfigError(f"bad {cls.__name__}: {e}") from None


_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([hms]?)", re.IGNORECASE)


def parse_duration(value) -> float:
    """Seconds in ``value``: a number (seconds) or a string like ``90s``, ``10m``, ``1h30m``, ``1.5h``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text, seconds, pos = value.strip(), 0.0, 0
        while pos < len(text):
            m = _DURATION.match(text, pos)
            if not m or (not m.group(2) and m.end() < len(text)):
                raise ConfigError(f"time must look like 90s, 10m, 1h or 1h30m; got {value!r}")
            seconds += float(m.group(1)) * {"h": 3600, "m": 60}.get(m.group(2).lower(), 1)
            pos = m.end()
    else:
        raise ConfigError(f"time must look like 90s, 10m, 1h or 1h30m; got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"time must be a finite duration >= 0, got {value!r}")
    return seconds


def parse_eval_every(value) -> tuple[str, float]:
    """("auto", 0), ("steps", n) or ("seconds", s) from ``eval_every``: "auto", an integer
    number of steps (int or digits), or a duration such as "30s" or "5m"."""
    if isinstance(value, bool):
        raise ConfigError(f"eval_every must be auto, a number of steps or a duration like 30s; got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"eval_every must be at least 1 step, got {value}")
        return "steps", float(value)
    if not isinstance(value, str):
        raise ConfigError(f"eval_every must be auto, a number of steps or a duration like 30s; got {value!r}")
    text = value.strip().lower()
    if text == "auto":
        return "auto", 0.0
    if text.isdigit():
        return parse_eval_every(int(text))
    try:
        seconds = parse_duration(text)
    except ConfigError:
        raise ConfigError(f"eval_every must be auto, a number of steps (500) or a duration (30s, 5m); "
                          f"got {value!r}") from None
    if seconds <= 0:
        raise ConfigError(f"eval_every must be a duration longer than 0s, got {value!r}")
    return "seconds", seconds


def make_configs(values: dict) -> tuple[ModelConfig, TrainConfig]:
    """Defaults updated with ``values`` (field name -> value; ``None`` means unset), split
    between the two dataclasses and validated. Unknown names are refused."""
    model_fields, train_fields = names(ModelConfig), names(TrainConfig)
    unknown = sorted(set(values) - model_fields - train_fields)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    values = {k: v for k, v in values.items() if v is not None}
    if "time_budget" in values:
        values["time_budget"] = parse_duration(values["time_budget"])
    for name in ("steps", "epochs", "time_budget"):
        value = values.get(name)  # 0 is the dataclass's "no limit"; given explicitly it is a mistake
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
            raise ConfigError(f"{spec_of(TrainConfig, name).option} must be more than 0 (leave it out for no limit)")
    if isinstance(values.get("eval_every"), int) and not isinstance(values["eval_every"], bool):
        values["eval_every"] = str(values["eval_every"])  # TOML: eval_every = 500
    model = ModelConfig(**{k: v for k, v in values.items() if k in model_fields})
    train = TrainConfig(**{k: v for k, v in values.items() if k in train_fields})
    dataclasses.replace(model, vocab_size=max(model.vocab_size, 2)).validate()  # V comes later, from the corpus
    return model, train.validate()


def resume_overrides(values: dict) -> Overrides:
    """The training settings ``values`` (field name -> value; ``None`` means unset) given to
    continue a run, checked as for a new run; a model setting is refused (the checkpoint fixes it)."""
    values = {k: v for k, v in values.items() if v is not None}
    model_keys = sorted(set(values) & names(ModelConfig))
    if model_keys:
        raise ConfigError(f"cannot change the model when resuming ({', '.join(model_keys)}); "
                          "start a new run instead")
    _, train = make_configs(values)  # unknown names and bad values fail here, as for a new run
    return Overrides(train, frozenset(values))
