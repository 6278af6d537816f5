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
order at every training step, so its draws never depend on when or on which thread it runs. The
members' recurrent layers run stacked, one kernel call per layer for all of them
(bidir.stacked_forward: D = members x directions blocks side by side, each member on its own
input), so they share the kernel threads; a block computes exactly what it would alone, so a
member's results are those of its own model (on one thread a training step runs the members one
after another instead: the same results, at less CPU time). The parallel kernels must not be
launched from two Python threads at once (Numba's workqueue layer, which charlm runs on, refuses
concurrent launches): stacking is how the members share the cores in the recurrent layers. The
rest of a member's step (its inputs and n-gram hashes, its head and wide path, their backward
passes) is serial NumPy and nogil kernels, which would leave a core idle: with two kernel
threads those phases run two members at a time on two Python threads (``MemberThreads``), while
the parallel kernels stay on the calling thread. Members share no array they write there, so the
results are the serial ones bit for bit.
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
        # training steps stack the members (True), run them one after another (False), or choose
        # by the thread count (None: see ``loss_and_grad``); the results are the same bit for bit
        self.stacked: bool | None = None
        # Python threads for the members' serial phases of a stacked step (None: two when the kernels
        # have two threads or more, else one); the results are the same bit for bit
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

    def _each_member(self, run) -> list:
        """[run(k, member) for every member], on two Python threads when the kernels have two
        (``member_threads``). ``run`` must launch no parallel kernel (module docstring)."""
        from ..runtime import kernel_threads

        threads = self.member_threads or min(2, kernel_threads())
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
        outputs = self._forward_members(ids, lengths, self.member_generators(rng))
        logp = log_softmax(np.stack([logits for logits, _ in outputs]).astype(np.float64))  # (K, ..., C)
        top = logp.max(axis=0)
        mean_logp = top + np.log(np.exp(logp - top).mean(axis=0))                     # log mean_k p_k
        if self.config.task == "tag":
            T = mean_logp.shape[0]
            mean_logp *= np.arange(T)[:, None, None] < np.asarray(lengths)[None, :, None]
        return mean_logp.astype(self.dtype), outputs

    def loss_and_grad(self, ids, lengths, labels, rng=None) -> float:
        """Mean of the members' losses; their gradients (each / K) into ``grads``. On one thread
        the members train one after another, each step whole (its caches still warm for its
        backward pass; stacked, they wait for every member's forward pass, which costs CPU time
        with nothing to gain on one thread); on more, stacked."""
        from ..runtime import kernel_threads

        rngs = self.member_generators(rng)
        if self.stacked is False or (self.stacked is None and kernel_threads() == 1):
            total = 0.0
            for member, member_rng in zip(self.members, rngs):
                total += member.loss_and_grad(ids, lengths, labels, member_rng)
        else:
            total = self._stacked_loss_and_grad(ids, lengths, labels, rngs)
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
    """Runs one phase of every member, the even ones on the calling thread and the odd ones on a
    second Python thread (started on first use), and returns the results in member order."""

    def __init__(self):
        self._executor = None

    def map(self, run, count: int, threads: int) -> list:
        """[run(k) for k in range(count)]; on two threads when ``threads`` >= 2."""
        if threads < 2 or count < 2:
            return [run(k) for k in range(count)]
        from concurrent.futures import ThreadPoolExecutor, wait

        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="charlm-member")
        later = self._executor.submit(lambda: [run(k) for k in range(1, count, 2)])
        results = [None] * count
        try:
            results[0::2] = [run(k) for k in range(0, count, 2)]
        finally:
            wait([later])  # the other thread's members are done before anything else runs
        results[1::2] = later.result()
        return results
