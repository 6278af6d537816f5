"""Transduction as a training task (training/task.py): batches bucketed by length, dense Adam
with global-norm clipping, dev scoring by greedy word error rate.

Evaluations rank by lower dev WER (ties: lower dev loss); without a dev split the training
pairs are scored instead, and the events say so. Checkpoints are ``store.py``'s format with the
data description and content digests of both splits.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..seqtask.config import SeqTrainConfig
from ..seqtask.task import SeqTask
from ..training.task import Evaluation
from . import store
from .config import Seq2SeqConfig
from .data import BOS, EOS, SOURCE_SPECIALS, TARGET_SPECIALS, Pair, Vocab, batch, encode_pairs, group

TRAIN_SCORED = 1000   # sources of the training data scored at each evaluation when there is no dev split


def decode_limit(encoded) -> int:
    """Tokens a decoded output may have: twice the longest training target, and some."""
    return 2 * max((len(t) for t in encoded.targets), default=1) + 10


class Seq2SeqTask(SeqTask):
    """SeqTask's data position, checkpoint timing and restore; its own batches, optimiser and scores."""

    metric = "wer"
    display_settings = ()

    def __init__(self, train, dev, model_config: Seq2SeqConfig, train_config: SeqTrainConfig, *,
                 levels: dict, data_spec=None, resume: store.Seq2SeqCheckpoint | None = None):
        from ..optim import Adam
        from .model import Seq2SeqModel

        self.tcfg = train_config.validate()
        if resume is None:
            source = Vocab.fit((p.source for p in train), SOURCE_SPECIALS)
            target = Vocab.fit((p.target for p in train), TARGET_SPECIALS)
            model_config = dataclasses.replace(model_config, src_vocab=len(source), tgt_vocab=len(target))
        else:
            source, target, model_config = resume.source, resume.target, resume.config
        self.mcfg, self.source, self.target, self.levels = model_config.validate(), source, target, dict(levels)
        self.bos, self.eos = target.index[BOS], target.index[EOS]
        self.data_spec = dict(data_spec or {})
        self.train = encode_pairs(train, source, target, self.tcfg.max_length)
        # what evaluations decode and score: the dev split, else the first training sources
        self.dev_groups = group(dev) if dev else group(train)[:TRAIN_SCORED]
        self.dev = encode_pairs(dev, source, target) if dev else None
        self.scored = self.dev if dev else encode_pairs([Pair(s, t) for s, ts in self.dev_groups for t in ts],
                                                        source, target)
        self.model = Seq2SeqModel(self.mcfg, np.dtype(self.tcfg.dtype))
        self.optimizer = Adam(self.model.size, self.model.dtype, weight_decay=self.tcfg.weight_decay)
        self.rng = np.random.default_rng(self.tcfg.seed)
        self.max_output = decode_limit(self.train)
        self.data_epoch, self.data_batch = 0, 0
        self._epoch_cache = None

    def _batch(self, index):
        return batch(self.train, index, self.bos, self.eos)

    def tokens(self, items) -> int:
        return int(np.sum(items[1]) + np.sum(items[4]))

    def loss_and_grad(self, items):
        return self.model.loss_and_grad(*items, self.rng), None

    def clip(self) -> float:
        from ..optim import clip_grad_norm

        return clip_grad_norm(self.model.grad_flat, self.tcfg.clip_norm)

    def step(self, lr: float) -> None:
        self.optimizer.step(self.model.flat, self.model.grad_flat, lr)

    def split_problem(self) -> str:
        """Several ranks: refused (its batches and its decoder's dropout are not split by rows yet)."""
        return "seq2seq trains in one process: several ranks are for train, classify train and tag train"

    def warm_up(self) -> None:
        """Compile the kernels on the first two pairs (with a random stream of its own) and a decoding step."""
        first = np.arange(min(2, len(self.train)))
        items = batch(self.train, first, self.bos, self.eos)
        self.model.loss_and_grad(*items, np.random.default_rng(0))
        self.model.greedy(items[0], items[1], self.bos, self.eos, 1)

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, step: int, train_loss: float, comm) -> Evaluation:
        from .metrics import dev_loss
        from .predict import score_groups

        rates = score_groups(self.model, self.dev_groups, self.source, self.target, self.max_output)
        loss = dev_loss(self.model, self.scored, self.bos, self.eos)
        return Evaluation({"loss": loss, "wer": rates["wer"], "per": rates["per"]}, loss, self.dev is not None)

    def better(self, scores: dict, best: dict | None) -> bool:
        best = best or {"wer": math.inf, "loss": math.inf}
        return scores["wer"] < best["wer"] or (scores["wer"] == best["wer"] and scores["loss"] < best["loss"])

    # -- checkpoints -----------------------------------------------------------------------------

    def _save(self, path, step: int, extra=None, **metadata):
        meta = {"train_config": dataclasses.asdict(self.tcfg), "data": self.data_spec, "step": step,
                "train_examples": len(self.train), "max_output": self.max_output,
                "fingerprint": self.fingerprint()} | metadata
        return store.save(path, self.mcfg, self.source, self.target, self.levels, self.model.state_dict(),
                          extra=extra, metadata=meta)
