"""An ensemble of K sequence models trained side by side: one checkpoint, one optimiser, one run.

Each member is a whole ``SeqModel`` (its own initialisation and dropout draws), a view into one
slice of the ensemble's flat buffer, stored under ``members.<k>.`` with the usual PyTorch names
(so each member loads on its own into the same torch modules). Every step trains every member
on the same batch with its own loss; the training loss is their mean (each member's gradient is
1/K of its own loss's, a scale Adam's update all but ignores). A prediction averages the members'
probabilities: ``forward`` returns log(mean_k softmax(logits_k)), which a softmax leaves as it
is, so everything that reads logits (scores, top-k labels, tags) reads the ensemble.

Members differ by their random draws, and with ``member_salts`` by their n-gram hashes too
(member k hashes with salt k, fixed by its index, so a stored ensemble hashes as it was trained),
so they make partly different mistakes; averaging their probabilities cancels part of them, at K
times the cost of a step.

Each member draws its dropout from its own generator, seeded from the run's generator in member
order at every training step, so its draws never depend on when or on which thread it runs.

A training step runs the members one of three ways (``schedule``), with the same results bit for
bit: one after another ("serial", the choice on one thread: each member's step whole, its caches
still warm for its backward pass); side by side on Python threads ("threads", the choice on two
threads or more: each thread trains whole members, their recurrent layers' blocks kept on that
thread, kernels/blocks.on_this_thread, so everything a member does runs beside the other thread's
member, its NumPy work and its n-gram tables included); or stacked ("stacked": every member's
recurrent layer in one kernel call, bidir.stacked_forward, D = members x directions blocks shared
by the threads; the rest of each member's step on the Python threads, ``MemberThreads``).
Stacking leaves cores idle while the members' serial NumPy work runs and meets at every layer;
whole members per thread do not, and train an epoch faster on two cores (docs/performance.md).
Members share no array they write, and a member's layers run one block per direction serially,
on threads, and stacked on up to three threads (bidir._blocks), so there the results depend
neither on the schedule nor on the thread count; stacked on four or more, a direction's streams
are split further and its weight gradients are summed in another order.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .config import SeqModelConfig
from .heads import log_softmax
from .model import SeqModel, parameter_shapes
from .scratch import Scratch
from .sparse_grad import GradLayout, divide


def build_model(config: SeqModelConfig, dtype=np.float32):
    """The model a configuration describes: a SeqModel, or a SeqEnsemble of ``members``."""
    return SeqEnsemble(config, dtype) if config.validate().members > 1 else SeqModel(config, dtype)


class SeqEnsemble:
    """K ``SeqModel`` members over one flat buffer; the same interface as ``SeqModel``."""

    def __init__(self, config: SeqModelConfig, dtype=np.float32):
        self.config = config.validate()
        self.dtype = np.dtype(dtype)
        self.shapes = parameter_shapes(config)
        one = replace(config, members=1)
        K = config.members
        self.size = sum(math.prod(shape) for _, shape in self.shapes)
        self.flat = np.zeros(self.size, self.dtype)
        self.grad_flat = np.zeros(self.size, self.dtype)
        m = self.size // K
        self.members = [SeqModel(one, dtype, flat=self.flat[k * m:(k + 1) * m], grad_flat=self.grad_flat[k * m:(k + 1) * m],
                                 ngram_salt=k if config.member_salts else 0) for k in range(K)]
        self.params = {f"members.{k}.{name}": a for k, member in enumerate(self.members)
                       for name, a in member.params.items()}
        self.grads = {f"members.{k}.{name}": a for k, member in enumerate(self.members)
                      for name, a in member.grads.items()}
        # the stacked layers' large arrays, reused by every training step (one at a time)
        self.scratch = Scratch()
        # how a training step runs the members: "serial", "threads" or "stacked" (module docstring),
        # or None: chosen by the thread count (``loss_and_grad``); the results are the same bit for bit
        self.schedule: str | None = None
        # Python threads the members run on (None: as many as the kernels have); the results are the
        # same bit for bit
        self.member_threads: int | None = None
        self._phases = MemberThreads()
        self.layout = GradLayout.joined([member.layout for member in self.members], range(0, K * m, m))

    @property
    def touched(self) -> list[np.ndarray] | None:
        """The table rows the last backward pass wrote, the members' lists one after another."""
        if any(member.touched is None for member in self.members):
            return None
        return [rows for member in self.members for rows in member.touched]

    def init_weights(self, rng: np.random.Generator) -> "SeqEnsemble":
        for member in self.members:
            member.init_weights(rng)
        return self

    # these read only ``shapes`` and ``params`` (zero_grad: ``grad_flat``, ``layout``, ``touched``), which
    # mean the same here
    state_dict = SeqModel.state_dict
    load_state_dict = SeqModel.load_state_dict
    zero_grad = SeqModel.zero_grad

    def member_generators(self, rng):
        """One generator per member, seeded from ``rng`` in member order (None: no dropout)."""
        if rng is None:
            return [None] * len(self.members)
        return [np.random.default_rng(seed) for seed in rng.integers(2 ** 63 - 1, size=len(self.members))]

    # -- forward / backward ------------------------------------------------------------------------

    def _schedule(self) -> tuple[str, int]:
        """(how the members run, "serial", "threads" or "stacked"; the Python threads for them)."""
        from ..runtime import kernel_threads

        threads = kernel_threads()
        return self.schedule or ("serial" if threads == 1 else "threads"), self.member_threads or threads

    def _each_member(self, run) -> list:
        """[run(k, member) for every member], on as many Python threads as the kernels have
        (or ``member_threads``). ``run`` must launch no parallel kernel (module docstring)."""
        threads = self._schedule()[1]
        members = self.members
        return self._phases.map(lambda k: run(k, members[k]), len(members), threads)

    def _forward_members(self, ids, lengths, rngs, scratch=None):
        """Every member's (logits, cache), their recurrent layers in one stacked pass."""
        from .bidir import stacked_forward

        c = self.config
        prepared = self._each_member(lambda k, member: member.inputs(ids, lengths, rngs[k]))
        spans = prepared[0][1][-1]
        drop = c.dropout if rngs[0] is not None else 0.0
        out, _, enc_cache = stacked_forward(self.members[0].cell, [m.params for m in self.members],
                                            [x for x, _ in prepared], spans, c.layers, c.directions,
                                            dropout=drop, rngs=rngs, scratch=scratch)
        F = c.directions * c.hidden
        return self._each_member(lambda k, member: member.head(np.ascontiguousarray(out[:, :, k * F:(k + 1) * F]),
                                                               prepared[k][1], enc_cache, rngs[k]))

    def forward(self, ids, lengths, *, rng=None):
        """log of the members' mean probabilities, shaped as a member's logits (0 at a tagger's
        padded steps), and the members' (logits, cache) pairs."""
        rngs, (schedule, threads) = self.member_generators(rng), self._schedule()
        if schedule == "stacked":
            outputs = self._forward_members(ids, lengths, rngs)
        else:
            apart = schedule == "threads"  # each member's layers on its own thread
            outputs = self._phases.map(lambda k: self.members[k].forward(ids, lengths, rng=rngs[k], serial=apart),
                                       len(self.members), threads if apart else 1)
        logp = log_softmax(np.stack([logits for logits, _ in outputs]).astype(np.float64))  # (K, ..., C)
        top = logp.max(axis=0)
        mean_logp = top + np.log(np.exp(logp - top).mean(axis=0))                     # log mean_k p_k
        if self.config.task == "tag":
            T = mean_logp.shape[0]
            mean_logp *= np.arange(T)[:, None, None] < np.asarray(lengths)[None, :, None]
        return mean_logp.astype(self.dtype), outputs

    def loss_and_grad(self, ids, lengths, labels, rng=None) -> float:
        """Mean of the members' losses; their gradients (each / K) into ``grads``, the members run
        as ``schedule`` says (module docstring)."""
        rngs, (schedule, threads) = self.member_generators(rng), self._schedule()
        if schedule == "stacked":
            total = self._stacked_loss_and_grad(ids, lengths, labels, rngs)
        else:
            self.zero_grad()  # every member at once: a member's own zeroing is a parallel pass

            apart = schedule == "threads"  # each member's layers on its own thread

            def step(k):
                return self.members[k].loss_and_grad(ids, lengths, labels, rngs[k], zeroed=True, serial=apart)

            losses = self._phases.map(step, len(self.members), threads if apart else 1)
            total = 0.0
            for loss in losses:  # in member order, whatever thread computed it
                total += loss
        divide(self.grad_flat, self.layout, self.touched, len(self.members))
        return total / len(self.members)

    def _stacked_loss_and_grad(self, ids, lengths, labels, rngs) -> float:
        """The sum of the members' losses, their gradients into ``grads``: one stacked pass."""
        from .bidir import stacked_backward

        c = self.config
        outputs = self._forward_members(ids, lengths, rngs, self.scratch)
        self.zero_grad()  # every member at once: each member's own would be a parallel pass on a member thread

        def head_backward(k, member):
            logits, cache = outputs[k]
            loss, dlogits = member.loss(logits, labels, lengths)
            return (loss, *member.head_backward(dlogits, cache, zeroed=True))

        backs = self._each_member(head_backward)  # (loss, dL/d(encoder outputs), wide rows) per member
        spans, enc_cache = outputs[0][1][7:9]
        dxs = stacked_backward(self.members[0].cell, [m.grads for m in self.members],
                               np.concatenate([dout for _, dout, _ in backs], axis=2), [None] * len(self.members),
                               spans, enc_cache, c.layers, c.directions, scratch=self.scratch)
        self._each_member(lambda k, member: member.inputs_backward(dxs[k], outputs[k][1], backs[k][2]))
        total = 0.0
        for loss, _, _ in backs:  # in member order, as the serial sum
            total += loss
        return total


class MemberThreads:
    """Runs one phase of every member on up to ``threads`` Python threads, member k on thread
    k mod n (thread 0 is the calling one, the others are started on first use), and returns the
    results in member order."""

    def __init__(self):
        self._executor, self._workers = None, 0

    def map(self, run, count: int, threads: int) -> list:
        """[run(k) for k in range(count)], on min(threads, count) threads."""
        n = min(threads, count)
        if n < 2:
            return [run(k) for k in range(count)]
        from concurrent.futures import ThreadPoolExecutor, wait

        if self._workers < n - 1:
            if self._executor is not None:
                self._executor.shutdown()
            self._executor, self._workers = ThreadPoolExecutor(n - 1, thread_name_prefix="charlm-member"), n - 1
        later = [self._executor.submit(lambda j=j: [run(k) for k in range(j, count, n)]) for j in range(1, n)]
        results = [None] * count
        try:
            results[0::n] = [run(k) for k in range(0, count, n)]
        finally:
            wait(later)  # the other threads' members are done before anything else runs
        for j, future in enumerate(later, start=1):
            results[j::n] = future.result()
        return results
