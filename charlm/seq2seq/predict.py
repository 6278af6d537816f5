"""Using a trained encoder-decoder: the output of each source, greedy or by beam search, and
scoring a ``source<TAB>target`` file by WER and token error rate against every reference.

The beam ranks finished hypotheses with a length penalty of ``LENGTH_PENALTY`` by default:
with none, a hypothesis that stops early is favoured (every token costs log-probability), and
a transduction that drops the end of its source is wrong however likely it is; dividing by
``length ** 1`` (the mean log-probability per token) would go too far the other way and favour
outputs that run on. The usual value of translation systems sits between.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..seqtask.predict import Loaded
from . import store
from .data import BOS, EOS, UNK, PAD, group, join, read_pairs
from .config import LENGTH_PENALTY
from .metrics import error_rates, greedy_outputs


def beam_outputs(model, sources: list, bos: int, eos: int, banned, options) -> list[list]:
    """Each source's hypotheses (decoding/beam.py), best first."""
    from ..decoding.beam import beam_search

    result = []
    for ids in sources:
        state = model.encode(np.asarray(ids, np.int64)[:, None], np.array([len(ids)], np.int64))
        result.append(beam_search(model, state, bos, eos, options, banned=banned))
    return result


def decode_all(model, sources: list, target, max_length: int, beam: int = 0, length_penalty=LENGTH_PENALTY):
    """(best output ids per source, hypotheses per source or None): greedy when ``beam`` is 0."""
    from ..decoding.beam import BeamOptions

    index = target.index
    bos, eos = index[BOS], index[EOS]
    banned = [index[PAD], index[UNK], bos]   # tokens the decoder was never trained to write
    if not beam:
        return greedy_outputs(model, sources, bos, eos, max_length, banned), None
    options = BeamOptions(beam=beam, max_length=max_length, length_penalty=length_penalty).validate()
    found = beam_outputs(model, sources, bos, eos, banned, options)
    best = [list(h[0].tokens[:-1] if h[0].finished else h[0].tokens) if h else [] for h in found]
    return best, found


def score_groups(model, groups, source, target, max_length: int, beam: int = 0, length_penalty=LENGTH_PENALTY):
    """error_rates of the outputs of ``groups`` ((source tokens, [target tokens...]) pairs)."""
    index = source.index
    outputs, _ = decode_all(model, [source.encode(s, index) for s, _ in groups], target, max_length, beam,
                            length_penalty)
    return error_rates([target.decode(ids) for ids in outputs], [targets for _, targets in groups])


@dataclass
class Transducer(Loaded):
    checkpoint: store.Seq2SeqCheckpoint
    read = staticmethod(store.load)

    @property
    def max_output(self) -> int:
        value = self.checkpoint.metadata.get("max_output")
        return value if isinstance(value, int) and 0 < value <= 100_000 else 200

    def _text(self, ids, side: str) -> str:
        vocab = self.checkpoint.target if side == "target" else self.checkpoint.source
        return join(vocab.decode(ids), self.checkpoint.levels[side])

    def predict(self, sources: list[tuple], beam: int = 0, length_penalty: float = LENGTH_PENALTY) -> list[dict]:
        """For each source (its tokens), {"source", "prediction"} and with a beam "hypotheses"
        (the beam's outputs, best first, each with its log-probability and the length-normalised
        score it was ranked by)."""
        from ..seqtask.model import kernel_scope

        check_beam(beam)
        c = self.checkpoint
        index = c.source.index
        with kernel_scope():
            best, found = decode_all(self._model(), [c.source.encode(s, index) for s in sources], c.target,
                                     self.max_output, beam, length_penalty)
        result = []
        for b, (tokens, ids) in enumerate(zip(sources, best)):
            item = {"source": join(tokens, c.levels["source"]), "prediction": self._text(ids, "target")}
            if found is not None:
                item["hypotheses"] = [{"prediction": self._text(h.tokens[:-1] if h.finished else h.tokens, "target"),
                                       "log_prob": h.log_prob, "score": h.score, "finished": h.finished} for h in found[b]]
            result.append(item)
        return result

    def vectors(self, sources: list[tuple]) -> np.ndarray:
        """(N, F): each source's encoding, the top encoder layer's final states (directions concatenated)."""
        from ..seqtask.model import kernel_scope
        from .data import pad_sources
        from .metrics import EVAL_BATCH

        model, index = self._model(), self.checkpoint.source.index
        result = np.zeros((len(sources), model.config.width), model.dtype)
        with kernel_scope():
            for b0 in range(0, len(sources), EVAL_BATCH):
                ids, lengths = pad_sources([self.checkpoint.source.encode(s, index) for s in sources[b0:b0 + EVAL_BATCH]])
                enc = model.encode_batch(ids, lengths)
                result[b0:b0 + len(lengths)] = model.bridge(enc, np.argsort(enc.order, kind="stable"))[2][0]
        return result

    def evaluate(self, path, beam: int = 0, length_penalty: float = LENGTH_PENALTY) -> dict:
        """WER and token error rate on a ``source<TAB>target`` file (several lines of one source:
        several references)."""
        from ..seqtask.model import kernel_scope

        check_beam(beam)
        c = self.checkpoint
        groups = group(read_pairs(path, c.levels["source"], c.levels["target"]))
        with kernel_scope():
            rates = score_groups(self._model(), groups, c.source, c.target, self.max_output, beam, length_penalty)
        decoding = f"beam {beam}, length penalty {length_penalty:g}" if beam else "greedy"
        return rates | {"file": str(path), "decoding": decoding}


def check_beam(beam: int) -> None:
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 0:
        raise ConfigError(f"beam must be an integer >= 1 (or 0 for greedy), got {beam!r}")
