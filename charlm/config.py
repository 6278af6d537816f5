"""Configuration dataclasses: the only place defaults live.

CLI options mirror these field names (``--hidden`` is ``ModelConfig.hidden``); a TOML file given
with ``--config`` uses the same names. Everything is validated in ``validate()`` so that a bad
value becomes one clear ``ConfigError`` before any work starts.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from .errors import ConfigError
from .kernels.cells import CELL_IDS, get_cell  # noqa: F401  (CELL_IDS re-exported; the table is plain Python)
from .kernels.cells import CELLS as _CELL_TABLE

CELLS = tuple(_CELL_TABLE)   # the --cell choices, in the table's order
LEVELS = ("char", "word")
EOS_MODES = ("auto", "line", "paragraph", "none")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad")
SCHEDULES = ("constant", "cosine", "linear", "plateau")


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "gru"           # recurrent cell: gru | lstm | rnn (Elman, tanh) | jordan (output fed back)
    vocab_size: int = 0         # V, set from the tokenizer when the model is built
    embed: int = 64             # E, embedding width
    hidden: int = 256           # H, hidden (and cell) state width of every layer
    layers: int = 2             # L, stacked recurrent layers
    dropout: float = 0.0        # dropout on the inputs of layers 2..L and of the decoder: one mask per
                                # stream and window, the same at every step (training only)
    weight_dropout: float = 0.0 # DropConnect on every W_hh: one mask per window (training only)
    tie_weights: bool = False   # share encoder.weight and decoder.weight (needs embed == hidden)

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
        _choice("cell", self.cell, CELLS)
        _positive_int("vocab_size", self.vocab_size, minimum=2)
        _positive_int("embed", self.embed)
        _positive_int("hidden", self.hidden)
        _positive_int("layers", self.layers)
        for name in ("dropout", "weight_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        if self.weight_dropout and self.row.recurrent != "hh":
            raise ConfigError(f"weight_dropout applies to W_hh, which the {self.cell} cell does not have")
        if self.tie_weights and self.embed != self.hidden:
            raise ConfigError(
                f"--tie-weights needs embed == hidden (got embed={self.embed}, hidden={self.hidden})")
        return self


@dataclass(frozen=True)
class TrainConfig:
    # data
    level: str = "char"               # tokenize into characters or words
    eos: str = "auto"                 # sequence boundaries that become <eos>: auto | line | paragraph | none
    val_fraction: float = 0.1         # contiguous tail of the corpus held out for validation
    val_file: str = ""                # separate validation text (replaces val_fraction when set)
    max_vocab: int = 0                # word level: keep the most frequent words (0 = no limit)
    min_count: int = 1                # word level: rarer words become <unk>
    # truncated BPTT
    seq_len: int = 64                 # T, steps per window; state is carried across windows
    batch_size: int = 32              # B, parallel contiguous streams
    # optimisation
    optimizer: str = "adam"           # adam | adamw | sgd | rmsprop | adagrad
    lr: float = 2e-3                  # peak learning rate
    weight_decay: float = 0.0         # L2 (adamw: decoupled) weight decay
    momentum: float = 0.9             # sgd momentum
    schedule: str = "cosine"          # cosine | linear (decay over the budget) | constant | plateau (reduce on plateau)
    warmup_steps: int = 0             # linear warm-up steps (any schedule)
    min_lr: float = 0.0               # cosine: learning rate at the end of the budget
    clip_norm: float = 5.0            # global gradient-norm clip (0 = off)
    clip_value: float = 0.0           # element-wise gradient clip (0 = off)
    # budget (the first one reached stops training; all 0 = training/budget.py's DEFAULT_TIME_BUDGET)
    steps: int = 0                    # optimiser steps
    epochs: float = 0.0               # passes over the training stream
    time_budget: float = 0.0          # wall-clock seconds
    # bookkeeping
    eval_every: str = "auto"          # validation + checkpoint cadence: auto | steps ("500") | time ("30s")
    sample_every: int = 0             # steps between short samples shown while training (0 = off)
    track_gradients: bool = False     # at each evaluation, log gradient lag curves to metrics.jsonl
    seed: int = 1234                  # seeds initialisation, dropout and data order
    threads: int = 0                  # BLAS and Numba threads (0 = all cores)
    dtype: str = "float32"            # float32 for speed, float64 for checks

    def validate(self) -> "TrainConfig":
        _choice("level", self.level, LEVELS)
        _choice("eos", self.eos, EOS_MODES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("dtype", self.dtype, ("float32", "float64"))
        if not (isinstance(self.val_fraction, (int, float)) and 0.0 <= self.val_fraction < 1.0):
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        _positive_int("seed", self.seed, minimum=0)
        _positive_int("seq_len", self.seq_len)
        _positive_int("batch_size", self.batch_size)
        parse_eval_every(self.eval_every)
        _positive_int("min_count", self.min_count)
        for name in ("max_vocab", "steps", "warmup_steps", "threads", "sample_every"):
            _positive_int(name, getattr(self, name), minimum=0)
        for name in ("lr", "weight_decay", "momentum", "min_lr", "clip_norm", "clip_value",
                     "epochs", "time_budget"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
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


def load_config_file(path) -> dict:
    """Field values from a TOML file: flat keys, or ``[model]`` / ``[train]`` tables, with the
    dataclasses' field names (``time_budget`` may be a duration string such as ``"10m"``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise ConfigError("--config needs Python 3.11 or later (tomllib)") from None
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    values = {}
    for key, value in data.items():
        if key in ("model", "train") and isinstance(value, dict):
            values.update(value)
        else:
            values[key] = value
    return values


def make_configs(values: dict) -> tuple[ModelConfig, TrainConfig]:
    """Defaults updated with ``values`` (field name -> value; ``None`` means unset), split
    between the two dataclasses and validated. Unknown names are refused."""
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - model_fields - train_fields - {"vocab_size"})
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    values = dict(values)
    if values.get("time_budget") is not None:
        values["time_budget"] = parse_duration(values["time_budget"])
    for name, option in (("steps", "--steps"), ("epochs", "--epochs"), ("time_budget", "--time")):
        value = values.get(name)  # 0 is the dataclass's "no limit"; given explicitly it is a mistake
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
            raise ConfigError(f"{option} must be more than 0 (leave it out for no limit)")
    if isinstance(values.get("eval_every"), int) and not isinstance(values["eval_every"], bool):
        values["eval_every"] = str(values["eval_every"])  # TOML: eval_every = 500
    model = replace(ModelConfig(), **{k: v for k, v in values.items() if k in model_fields})
    train = replace(TrainConfig(), **{k: v for k, v in values.items() if k in train_fields})
    for name, want in _field_types(model) + _field_types(train):
        value = values.get(name)
        if value is not None and not _has_type(value, want):
            kind = {int: "an integer", float: "a number", bool: "true or false"}.get(want, "a string")
            raise ConfigError(f"{name} must be {kind}, got {value!r}")
    replace(model, vocab_size=max(model.vocab_size, 2)).validate()  # V comes later, from the corpus
    return model, train.validate()


def _field_types(config):
    return [(f.name, type(f.default)) for f in dataclasses.fields(config)]


def _has_type(value, want) -> bool:
    if want is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, want)


def _choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
