"""Settings of the encoder-decoder: the model's shape, declared once (settings.py) for its checks and options.

The vocabulary sizes come from the data (``option=False``); the CLI's ``charlm seq2seq train``
generates its options from the other fields and trains with ``seqtask.config.SeqTrainConfig``.
Nothing here loads the kernels: the command line imports it to build its help.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ConfigError
from ..seqtask.config import SeqTrainConfig, per_layer_cells
from ..settings import check, names, setting

# attention.KINDS: Luong's bilinear score, Bahdanau's MLP; "none": the decoder sees only the
# encoder's final vector (an autoencoder's bottleneck)
ATTENTIONS = ("general", "additive", "none")
LEVELS = ("char", "word")
# `charlm seq2seq train`'s defaults where the dataclasses' do not suit it (the training settings are
# chosen for classifiers); a value given wins. The PyTorch recipe for grapheme to phoneme (a lower
# peak, a tighter clip for the input-feeding decoder, a schedule that decays to zero) without
# dropout or label smoothing: with them, the model of a 15-minute budget (about ten passes over the
# data) still got a fifth of its own training words wrong; without them it learns faster than it
# overfits (docs/seq2seq.md, measured at full length). The weights are averaged over the last
# quarter of the budget (training/average.py), the horizon that won at equal steps there.
DEFAULTS = {"lr": 2e-3, "clip_norm": 1.0, "min_lr": 0.0, "average": 0.25}
# Beam search ranks finished outputs by log-probability / length ** this (seq2seq/predict.py says why)
LENGTH_PENALTY = 0.6
# An autoencoder's own defaults (averaging: not measured there)
AUTOENCODER_DEFAULTS = {"average": 0.0}


@dataclass(frozen=True)
class Seq2SeqConfig:
    src_vocab: int = setting(0, minimum=1, option=False, help="source vocabulary, from the training data")
    tgt_vocab: int = setting(0, minimum=1, option=False, help="target vocabulary, from the training data")
    cell: str = setting("lstm", choices=per_layer_cells(), help="recurrent cell of the encoder and the decoder")
    embed: int = setting(64, minimum=1, help="embedding width (source and target)")
    hidden: int = setting(256, minimum=1, help="hidden width per encoder direction; the decoder's state")
    layers: int = setting(1, minimum=1, help="encoder layers")
    bidirectional: bool = setting(True, flag="--bidirectional/--unidirectional",
                                  help="the encoder reads each source both ways, or forward only")
    attention: str = setting("general", choices=ATTENTIONS, help="general (bilinear), additive, or none (the decoder sees only the encoder's final vector)")
    dropout: float = setting(0.0, minimum=0, below=1,
                             help="dropout on embeddings, between encoder layers and before the output (training "
                                  "only)")
    label_smoothing: float = setting(0.0, minimum=0, below=1,
                                     help="the training targets' weight spread evenly over every token (training only)")

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def width(self) -> int:
        """F: the width of the encoder outputs."""
        return self.directions * self.hidden

    def validate(self) -> "Seq2SeqConfig":
        check(self)
        return self


def make_configs(values: dict, autoencode: bool = False) -> tuple[Seq2SeqConfig, SeqTrainConfig]:
    """A new run's configurations from ``values`` (field name -> value; ``None`` means unset),
    validated before any data is read (the vocabulary sizes come from the data later). An
    autoencoder has no attention: its decoder sees only the encoder's final vector."""
    values = DEFAULTS | (AUTOENCODER_DEFAULTS if autoencode else {}) | {k: v for k, v in values.items()
                                                                            if v is not None}
    if autoencode:
        if values.get("attention", "none") != "none":
            raise ConfigError("an autoencoder has no attention (its decoder reads only the encoder's final vector): "
                              "leave --attention out")
        values["attention"] = "none"
    model_fields, train_fields = names(Seq2SeqConfig), names(SeqTrainConfig)
    unknown = sorted(set(values) - model_fields - train_fields)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    model = Seq2SeqConfig(**{k: v for k, v in values.items() if k in model_fields})
    train = SeqTrainConfig(**{k: v for k, v in values.items() if k in train_fields}).validate()
    replace(model, src_vocab=1, tgt_vocab=1).validate()
    return model, train
