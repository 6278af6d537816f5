"""The language model as a training task (training/task.py): truncated BPTT with carried state.

Batches are windows of ``batch_size`` contiguous streams (data/batches.py); the hidden state a
window ends with is carried into the next one, so it is part of the exact-resume checkpoint.
Evaluations are ranked by validation loss (lower is better); without held-out text the mean
training loss stands in, and the events say so.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import ModelConfig, TrainConfig, replace
from ..data.batches import StreamBatcher
from ..data.corpus import Corpus
from ..data.labelled import LineBatcher
from ..runs.fingerprint import corpus_fingerprint
from ..training.task import Evaluation
from . import train_state as files

LN2 = math.log(2.0)


class LmTask:
    metric = "val_loss"
    display_settings = ("sample_every", "track_gradients")   # a resume may change them: they never alter training

    def __init__(self, corpus: Corpus, model_config: ModelConfig, train_config: TrainConfig):
        from ..optim import make_optimizer
        from .model import Model

        self.corpus, self.tcfg = corpus, train_config.validate()
        self.labelled = corpus.labels is not None   # labelled lines (data/labelled.py): no carried state
        self.mcfg = replace(model_config, vocab_size=len(corpus.tokenizer),
                            labels=len(corpus.labels.names) if self.labelled else 0).validate()
        self.batcher = (LineBatcher(corpus.train, corpus.labels.train, self.tcfg.batch_size, self.tcfg.seed)
                        if self.labelled else StreamBatcher(corpus.train, self.tcfg.batch_size, self.tcfg.seq_len))
        self.model = Model(self.mcfg, dtype=np.dtype(self.tcfg.dtype))
        self.optimizer = make_optimizer(self.tcfg.optimizer, self.model.size, self.model.dtype,
                                        weight_decay=self.tcfg.weight_decay, momentum=self.tcfg.momentum)
        self.rng = np.random.default_rng(self.tcfg.seed)
        self.state = self.model.init_state(self.tcfg.batch_size)
        self.auto_choice = None      # autoconfig.Choice.to_dict() when the model was chosen for the budget
        self.init_from = None        # where a fine-tuned run's weights came from (lm/finetune.py)

    def init_weights(self) -> None:
        self.model.init_weights(self.rng)

    # -- data and steps ------------------------------------------------------------------------

    def epoch(self) -> float:
        return self.batcher.epoch + self.batcher.position / self.batcher.windows_per_epoch

    def next_batch(self):
        return self.batcher.next_batch()

    def tokens(self, batch) -> int:
        return int(np.count_nonzero(batch[1] >= 0)) if self.labelled else batch[0].size

    def streams(self, batch) -> int:
        return batch[0].shape[1]

    def split_problem(self) -> None:
        return None  # every setting splits: the masks are drawn per stream (stream_random.py)

    def loss_and_grad(self, batch):
        if self.labelled:  # every line starts from its label: nothing is carried to the next batch
            x, y, labels = batch
            loss, _ = self.model.loss_and_grad(x, y, self.model.line_state(labels), self.rng, labels)
            return loss, self.state
        x, y = batch
        return self.model.loss_and_grad(x, y, self.state, self.rng)

    def block_loss_and_grad(self, batch, b0: int, b1: int, rng):
        """Under several ranks (distributed/ranks.py): loss and gradient of streams b0..b1 only,
        their new carried state, and their share of the batch (the gradient is scaled by it)."""
        if self.labelled:  # lines: the share is the block's share of the batch's predicted tokens
            x, y, labels = (np.ascontiguousarray(a[..., b0:b1]) for a in batch)
            loss, _ = self.model.loss_and_grad(x, y, self.model.line_state(labels), rng, labels)
            return loss, None, np.count_nonzero(y >= 0) / max(self.tokens(batch), 1)
        x, y = batch
        state = np.ascontiguousarray(self.state[:, :, b0:b1])
        loss, mine = self.model.loss_and_grad(np.ascontiguousarray(x[:, b0:b1]), np.ascontiguousarray(y[:, b0:b1]),
                                              state, rng)
        return loss, mine, (b1 - b0) / self.tcfg.batch_size

    def merge_blocks(self, mine, b0: int, b1: int):
        """The whole carried state with this rank's streams b0..b1 replaced by ``mine``."""
        if self.labelled:
            return self.state
        state = self.state.copy()
        state[:, :, b0:b1] = mine
        return state

    def commit(self, carry) -> None:
        self.state = carry

    def clip(self) -> float:
        from ..optim import clip_grad_norm, clip_grad_value, grad_norm

        grad = self.model.grad_flat
        if self.tcfg.clip_value:  # the norm reported is the gradient's own, before any clipping
            norm = grad_norm(grad)
            clip_grad_value(grad, self.tcfg.clip_value)
            clip_grad_norm(grad, self.tcfg.clip_norm)
            return norm
        return clip_grad_norm(grad, self.tcfg.clip_norm)

    def step(self, lr: float) -> None:
        self.optimizer.step(self.model.flat, self.model.grad_flat, lr)

    def warm_up(self) -> None:
        """Compile (or load from Numba's cache) the training and evaluation kernels on a 2x2 batch."""
        from ..kernels.compile_aside import start, step_jobs

        # the backward's kernels compile in a helper process while this one compiles the forward's
        start(step_jobs(self.model.cell, self.model.dtype))
        x = np.zeros((2, 2), np.int64)
        labels = (np.zeros(2, np.int64),) if self.labelled else ()   # a labelled model's path too
        self.model.loss_and_grad(x, x, self.model.init_state(2), np.random.default_rng(0), *labels)
        self.model.token_nll(x, x, self.model.init_state(2))

    def thread_scope(self, threads: int):
        from ..runtime import thread_limits

        return thread_limits(threads)

    # -- evaluation ------------------------------------------------------------------------------

    def val_loss(self, comm) -> float:
        """Mean NLL per token of the held-out text (labelled lines: each from its own label; every
        rank scores them all, as they are few)."""
        from .evaluate import mean_nll
        from .evaluate import line_nll

        if self.labelled:
            return float(line_nll(self.model, np.asarray(self.corpus.val), self.corpus.labels.val).mean())
        return mean_nll(self.model, np.asarray(self.corpus.val), comm)

    def evaluate(self, step: int, train_loss: float, comm) -> Evaluation:
        held_out = self.corpus.val.size > 1
        # no held-out text: judge by the training loss, and say so in the event
        val_loss = self.val_loss(comm) if held_out else train_loss
        char_level = self.corpus.tokenizer.level == "char"
        scores = {"val_loss": val_loss, "val_bpc": val_loss / LN2 if char_level else None,
                  "val_ppl": math.exp(min(val_loss, 700.0))}
        records = []
        if self.tcfg.track_gradients:  # its own seeded generator: training's random stream is untouched
            from .gradflow import tracking_record

            record = tracking_record(self.model, self.corpus.val if held_out else self.corpus.train,
                                     step, self.tcfg.seed)
            records = [record] if record is not None else []
        return Evaluation(scores, val_loss, held_out, records)

    @staticmethod   # no state: a sweep ranks its trials' best scores by it too
    def better(scores: dict, best: dict | None) -> bool:
        return scores["val_loss"] < (best["val_loss"] if best else math.inf)

    def sample(self, step: int) -> str | None:
        every = self.tcfg.sample_every
        return self.sample_text(step) if every and step % every == 0 else None

    def sample_text(self, step: int, max_length: int = 200, temperature: float = 0.8) -> str:
        """A short sample from the current weights. Seeded by (seed, step) with its own
        generator, so showing samples never changes the training run."""
        from .sample import SampleOptions, Sampler

        options = SampleOptions(temperature=temperature, max_length=max_length,
                                seed=self.tcfg.seed * 1_000_003 + step)
        if self.labelled:  # a line of the first label, shown with it
            from .labels import conditioned

            plain, start = conditioned(self.model, 0)
            text = "".join(Sampler(plain, self.corpus.tokenizer, start).stream("", options))
            return f"[{self.corpus.labels.names[0]}] {text}"
        sampler = Sampler(self.model, self.corpus.tokenizer, files.start_state(self, step),
                          ends=self.corpus.eos != "none")
        return "".join(sampler.stream("", options))

    # -- checkpoints (train_state.py) -------------------------------------------------------------

    def save_last(self, path, loop_meta: dict, comm, arrays=None):
        return files.save_last(self, path, loop_meta, comm, arrays)

    def save_best(self, path, step: int, scores: dict, comm):
        return files.save_best(self, path, step, scores, comm)

    def fingerprint(self) -> dict:
        return corpus_fingerprint(self.corpus)
