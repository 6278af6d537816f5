"""Classification and tagging as a training task (training/task.py): bucketed batches of whole
sequences, Adam lazy on the hashed tables' rows (sparse_adam.py) with a sparse-aware clip
(sparse_grad.py), dev scoring.

Evaluations are ranked by dev accuracy (ties: lower dev loss); without a dev split the training
data is scored instead, and the events say so. Checkpoints are ``store.py``'s format with the
labels, the data description and content digests of both splits. Under several ranks
(charlm/distributed/) a rank trains a block of each batch as blocks.py cuts it.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import replace

import numpy as np

from ..errors import CheckpointError, ConfigError
from ..training.run_state import read_position
from ..training.task import Evaluation
from . import store
from .batching import encode_examples, epoch_batches, fit_labels, fit_vocabulary, pad
from .config import SeqModelConfig, SeqTrainConfig

BRIEF = ("loss", "accuracy", "macro_f1", "sequence_accuracy")   # the scores events, records and best files keep


class SeqTask:
    metric = "accuracy"
    display_settings = ()
    sum_carry = True   # several ranks: the table rows each touched, summed (blocks.py)
    class_lms = None   # with class_lm: the labels' n-gram models, pooled with the model's (fusion.py)
    fusion = None      # fusion.Weights of the last evaluation

    def __init__(self, train, dev, model_config: SeqModelConfig, train_config: SeqTrainConfig, *,
                 data_spec=None, resume: store.SeqCheckpoint | None = None):
        from .ensemble import build_model
        from .sparse_adam import LazyAdam

        self.tcfg = train_config.validate()
        task = model_config.task
        if resume is None:
            tokenizer = fit_vocabulary(train, model_config.level, task)
            labels = fit_labels(train, task)
            split = tokenizer.split if tokenizer.level == "word" else ""
            model_config = replace(model_config, vocab_size=len(tokenizer), num_labels=len(labels), split=split)
        else:
            tokenizer, labels, model_config = resume.tokenizer, resume.labels, resume.config
        self.mcfg, self.tokenizer, self.labels = model_config.validate(), tokenizer, labels
        self.data_spec = dict(data_spec or {})
        self.train = encode_examples(train, tokenizer, labels, task, max_length=self.tcfg.max_length,
                                     where="training data: ")
        self.dev = encode_examples(dev, tokenizer, labels, task, where="dev data: ") if dev else None
        from .footprint import check_seq_training_fits

        # before allocating: a mistyped size is refused in one line, not by the OOM killer
        check_seq_training_fits(self.mcfg, self.tcfg, int(self.train.lengths.max(initial=1)))
        self.model = build_model(self.mcfg, np.dtype(self.tcfg.dtype))
        if self.mcfg.class_lm:
            from .class_lm import ClassLM

            self.class_lms = ClassLM.fit(self.train.inputs, self.train.targets, self.mcfg.class_lm,
                                         self.mcfg.vocab_size, self.mcfg.num_labels)
        self._dev_lm = None     # the language models' log-posteriors of the dev split: they never change
        self.optimizer = LazyAdam(self.model.layout, self.model.size, self.model.dtype,
                                  weight_decay=self.tcfg.weight_decay)
        self.rng = np.random.default_rng(self.tcfg.seed)
        self.data_epoch, self.data_batch = 0, 0   # the data position: batches of this epoch done
        self._epoch_cache = None
        self._rows = None   # several ranks: the table rows every rank's block touched (None: the model's own)

    def init_weights(self) -> None:
        self.model.init_weights(self.rng)

    @functools.cached_property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.tcfg.batch_size)

    @functools.cached_property
    def _fingerprint(self) -> dict:
        return {"training": self.train.digest(), "dev": self.dev.digest() if self.dev is not None else None}

    def fingerprint(self) -> dict:
        """Content digests of the training and dev splits, computed once."""
        return dict(self._fingerprint)

    # -- data and steps ------------------------------------------------------------------------

    def epoch(self) -> float:
        return self.data_epoch + self.data_batch / self.batches_per_epoch

    def next_batch(self):
        if self._epoch_cache is None or self._epoch_cache[0] != self.data_epoch:
            self._epoch_cache = (self.data_epoch, epoch_batches(self.train.lengths, self.tcfg.batch_size,
                                                                self.tcfg.seed, self.data_epoch))
        batch = self._batch(self._epoch_cache[1][self.data_batch])
        self.data_batch += 1
        if self.data_batch >= self.batches_per_epoch:
            self.data_epoch, self.data_batch = self.data_epoch + 1, 0
        return batch

    def _batch(self, index):
        return pad(self.train, index, self.mcfg.task)

    def tokens(self, batch) -> int:
        return int(np.sum(batch[1]))

    def loss_and_grad(self, batch):
        ids, lengths, targets = batch
        return self.model.loss_and_grad(ids, lengths, targets, self.rng), None

    def streams(self, batch) -> int:
        return len(batch[1])

    def split_problem(self) -> str | None:
        c = self.mcfg
        if c.members > 1 and (c.dropout or c.input_dropout or c.wide_dropout):
            return ("an ensemble's members draw their dropout from generators of their own, which ranks cannot "
                    "draw for the whole batch: train it on one process, or with --dropout 0 and no input or "
                    "wide-path dropout")
        return None

    def block_loss_and_grad(self, batch, b0: int, b1: int, rng):
        """Under several ranks (distributed/ranks.py, seqtask/blocks.py): loss and gradient of rows
        b0..b1 of the batch sorted as the model sorts it, with dropout drawn for the whole batch;
        the table rows they touched (a 0/1 mask) and their share of the batch's mean loss."""
        from . import blocks

        model = self.model
        self._zero_gradient()
        whole = blocks.sort_batch(batch)
        draws = blocks.BlockDraws(getattr(rng, "generator", rng), whole, b0, b1, self.mcfg)
        loss = model.loss_and_grad(*blocks.block_of(whole, b0, b1), draws)
        draws.finish()
        return loss, blocks.touched_mask(model.layout, model.touched), blocks.share(whole, b0, b1, self.mcfg.task)

    def merge_blocks(self, touched, b0: int, b1: int) -> None:
        """``touched``: every rank's mask summed; the step clips and moves the union of the rows."""
        from .blocks import mask_rows

        self._rows = mask_rows(self.model.layout, touched)

    def _zero_gradient(self) -> None:
        """Zero what the last step's sum wrote (other ranks' rows too), so that the model's pass,
        which zeroes only its own rows, starts from zero everywhere."""
        from .sparse_grad import zero

        rows = self.rows
        if rows is None:
            self.model.grad_flat[...] = 0
        else:
            zero(self.model.grad_flat, self.model.layout, rows)

    @property
    def rows(self):
        """The table rows this step's gradient holds: the model's, or under ranks every rank's."""
        return self._rows if self._rows is not None else self.model.touched

    def commit(self, carry) -> None:
        pass  # sequences are independent: nothing is carried from one batch to the next

    def clip(self) -> float:
        from .sparse_grad import clip_norm

        return clip_norm(self.model.grad_flat, self.model.layout, self.rows, self.tcfg.clip_norm)

    def step(self, lr: float) -> None:
        self.optimizer.step(self.model.flat, self.model.grad_flat, lr, self.rows)

    def warm_up(self) -> None:
        """Compile the kernels on the first two training sequences, with a random stream of its own."""
        ids, lengths, targets = pad(self.train, np.arange(min(2, len(self.train))), self.mcfg.task)
        self.model.loss_and_grad(ids, lengths, targets, np.random.default_rng(0))

    def thread_scope(self, threads: int):
        from .model import kernel_scope

        return kernel_scope(threads)

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, step: int, train_loss: float, comm) -> Evaluation:
        from .metrics import predict_logits, score_logits

        split = self.dev or self.train
        logits = predict_logits(self.model, split, comm=comm)
        if self.class_lms is not None:
            logits = list(self._pooled(logits, split))
        scores = score_logits(logits, split, self.labels, self.mcfg.task)
        brief = {k: scores[k] for k in BRIEF if k in scores}
        return Evaluation(brief, scores["loss"], self.dev is not None)

    def _pooled(self, logits: list, split) -> np.ndarray:
        """The model's ``logits`` of ``split`` pooled with the class language models, their weights
        fitted on the dev split; without one, kept as they are: scored on its own training texts,
        which the language models hold, the fit would trust them blindly."""
        from . import fusion
        from .metrics import log_probs

        if self.dev is None:
            self.fusion = fusion.Weights()
            return np.stack(logits)
        if self._dev_lm is None:
            self._dev_lm = self.class_lms.log_posteriors(self.dev.inputs)
        model_logp = log_probs(np.stack(logits))
        self.fusion = fusion.fit(model_logp, self._dev_lm, np.asarray(self.dev.targets, np.int64))
        return fusion.pool(model_logp, self._dev_lm, self.fusion)

    @staticmethod   # no state: a sweep ranks its trials' best scores by it too
    def better(scores: dict, best: dict | None) -> bool:
        best = best or {"accuracy": -1.0, "loss": math.inf}
        return scores["accuracy"] > best["accuracy"] or (scores["accuracy"] == best["accuracy"]
                                                         and scores["loss"] < best["loss"])

    def sample(self, step: int) -> None:
        return None

    # -- checkpoints -----------------------------------------------------------------------------

    def _save(self, path, step: int, extra=None, **metadata):
        meta = {"train_config": dataclasses.asdict(self.tcfg), "data": self.data_spec, "step": step,
                "train_examples": len(self.train), "fingerprint": self.fingerprint()} | metadata
        tensors = self.model.state_dict()
        if self.class_lms is not None:
            tensors |= self.class_lms.arrays()
            if self.fusion is not None:
                meta["fusion"] = self.fusion.as_dict()
        return store.save(path, self.mcfg, self.tokenizer, self.labels, tensors, extra=extra, metadata=meta)

    def save_last(self, path, loop_meta: dict, comm, arrays=None):
        state, scalars = self.optimizer.state_dict()
        comm.full_state(None)  # several ranks: rank 0 checks that every rank holds the same weights
        if not comm.writes:
            return path
        return self._save(path, loop_meta["step"], extra=state | (arrays or {}), optimizer=scalars,
                          rng=self.rng.bit_generator.state,
                          data_position={"epoch": self.data_epoch, "batch": self.data_batch},
                          **{k: v for k, v in loop_meta.items() if k != "step"})

    def save_best(self, path, step: int, scores: dict, comm):
        return self._save(path, step, scores=scores) if comm.writes else path

    def restore(self, last: store.SeqCheckpoint):
        """Load weights, optimiser, random state and data position from ``last``; returns the
        loop's (Position, schedule state). Reads checkpoints of the shape written before the
        loop was shared too (data position and best scores inside ``position``)."""
        meta = last.metadata
        try:
            self.model.load_state_dict(last.tensors)
            self.optimizer.load_state_dict(last.extra, meta["optimizer"])
            self.rng.bit_generator.state = meta["rng"]
            where = meta.get("data_position") or meta["position"]
            self.data_epoch, self.data_batch = int(where["epoch"]), int(where["batch"])
            if not (0 <= self.data_batch < self.batches_per_epoch and self.data_epoch >= 0):
                raise ValueError("data position out of range")
            best = meta["position"].get("best")
            if isinstance(best, list):  # [accuracy, loss] before the shared loop
                best = None if best[0] < 0 else {"accuracy": float(best[0]),
                                                 "loss": math.inf if best[1] is None else float(best[1])}
            if best is not None and not isinstance(best, dict):
                raise TypeError("best scores are not a mapping")
            if self.class_lms is not None:
                self.fusion = last.fusion
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, ConfigError) as e:
            raise CheckpointError(f"{last.path}: training state is incomplete or malformed "
                                  f"({type(e).__name__})") from None
        return read_position(meta, best, last.path, last.extra)
