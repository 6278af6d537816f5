"""Using a trained classifier or tagger: top-k labels of texts, tags of token sequences, the
restored spaces of a text, and scoring a labelled file."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.text_files import display_name, read_text, text_lines
from ..errors import ConfigError, CorpusError
from . import data, store
from .batching import Encoded, encode_examples, encode_tokens
from .metrics import log_probs, predict_logits, score
from .model import kernel_scope


@dataclass
class Loaded:
    """A checkpoint read by ``read`` and its model, built once on first use."""
    checkpoint: object
    read = staticmethod(store.load)

    @classmethod
    def load(cls, path):
        return cls(cls.read(path))

    def _model(self):
        if not hasattr(self, "_cached_model"):
            self._cached_model = self.checkpoint.build_model()
        return self._cached_model


@dataclass
class Predictor(Loaded):
    checkpoint: store.SeqCheckpoint

    @property
    def task(self) -> str:
        return self.checkpoint.config.task

    @property
    def derived_task(self) -> str | None:
        """"restore-spaces" for a tagger trained on text with its spaces removed, else None."""
        spec = self.checkpoint.metadata.get("data")
        return spec.get("derived_task") if isinstance(spec, dict) else None

    def _logits(self, token_lists) -> list:
        c = self.checkpoint
        inputs = [encode_tokens(c.tokenizer, t, self.task) for t in token_lists]
        encoded = Encoded(inputs, [0] * len(inputs), np.array([len(i) for i in inputs], np.int64))
        with kernel_scope():
            return predict_logits(self._model(), encoded)

    def classify(self, texts: list[str], top_k: int = 3) -> list[dict]:
        """For each text, its ``top_k`` labels with probabilities, likeliest first."""
        if self.task != "classify":
            raise ConfigError(f"{self.checkpoint.path} is a tagger, not a classifier (use `charlm tag`)")
        if top_k < 1:
            raise ConfigError(f"top-k must be >= 1, got {top_k}")
        result = []
        for text, logits in zip(texts, self._logits(texts)):
            p = np.exp(log_probs(logits))
            best = np.argsort(-p, kind="stable")[:top_k]
            result.append({"text": text, "labels": [{"label": self.checkpoint.labels[i], "probability": float(p[i])}
                                                    for i in best]})
        return result

    def tag(self, token_lists: list[list[str]]) -> list[dict]:
        """For each token sequence, the likeliest tag of every token and its probability."""
        if self.task != "tag":
            raise ConfigError(f"{self.checkpoint.path} is a classifier, not a tagger (use `charlm classify`)")
        result = []
        for tokens, logits in zip(token_lists, self._logits(token_lists)):
            p = np.exp(log_probs(logits))
            best = p.argmax(axis=1)
            result.append({"tokens": list(tokens), "tags": [self.checkpoint.labels[i] for i in best][:len(tokens)],
                           "probabilities": [float(p[t, i]) for t, i in enumerate(best)][:len(tokens)]})
        return result

    def restore_spaces(self, text: str) -> str:
        """``text`` with its spaces put back (by a tagger trained on the restore-spaces task)."""
        if self.derived_task != "restore-spaces":
            raise ConfigError(f"{self.checkpoint.path} was not trained on the restore-spaces task")
        lines = []
        for line in text_lines(text) or [""]:
            chars = [ch for ch in line if not ch.isspace()]
            if not chars:
                lines.append("")
                continue
            (tagged,) = self.tag([chars])
            lines.append(data.spaces_to_text(chars, tagged["tags"]))
        return "\n".join(lines)

    def evaluate(self, path, *, header: str = "auto") -> dict:
        """Every metric on a labelled file in the model's format (TSV, CoNLL, or plain text for
        a restore-spaces tagger)."""
        c = self.checkpoint
        examples = read_examples(path, self.task, self.derived_task, header=header,
                                 known_labels=c.labels)
        encoded = encode_examples(examples, c.tokenizer, c.labels, self.task, where=f"{path}: ")
        with kernel_scope():
            result = score(self._model(), encoded, c.labels) | {"file": str(path)}
        if c.class_lms is not None:   # what the classifier was pooled with, and how
            result["pooled"] = {"class_lm": c.config.class_lm, **c.fusion.as_dict()}
        return result


def read_examples(path, task: str, derived: str | None = None, *, header: str = "auto", known_labels=None):
    """The labelled examples of ``path`` for ``task`` (``derived``: "restore-spaces" reads plain text)."""
    if task == "classify":
        examples = data.read_tsv(path, header=header)
        if known_labels is not None and header == "auto" and len(examples) > 0:
            # a header that names a column looks like an unknown label: re-read without it
            first = data.read_tsv(path, header="yes")
            if len(first) < len(examples) and examples[0].label not in known_labels:
                return first
        return examples
    if derived == "restore-spaces":
        return data.read_restore_spaces(path)
    return data.read_conll(path)


def read_lines(path) -> list[str]:
    """The non-empty lines of a file of texts to classify."""
    lines = [line for line in text_lines(read_text(path)) if line.strip()]
    if not lines:
        raise CorpusError(f"{display_name(path)}: no lines to classify")
    return lines
