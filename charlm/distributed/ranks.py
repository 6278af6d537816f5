"""The collectives of data-parallel training: a step, an evaluation, a checkpoint, the clock.

A step (``loss_and_grad``):
  1. the task says how many streams (rows) the batch has (``streams``); this rank takes its
     contiguous block of them (streams.py) and has the task run forward and backward on it
     (``block_loss_and_grad`` of training/task.py), with dropout drawn for the whole batch. A
     rank left without a row (a short last batch of an epoch) runs row 0 again and counts for
     nothing, so that every rank draws the same random numbers and reaches the same collective;
  2. the task gives the block's share of the batch (rows, or tokens when the loss is a mean over
     tokens); the rank writes its gradient scaled by that share, its share of the loss, its stop
     request, and what the task asks to have summed over ranks (``sum_carry``: the rows of the
     hashed tables a lazy optimiser must move) into one buffer;
  3. one in-place ``Allreduce`` (sum) of that buffer: every rank now holds the gradient, the
     loss, the stop decision and the sums of the whole batch, and clips and steps identically.
A carried state (the language model's) stays global on every rank (each rank updates its own
block): a checkpoint gathers the blocks to rank 0, and a resume on any number of ranks slices it
anew.

Every decision the loop takes from the clock (time budget, schedule, evaluation cadence) must
be the same on every rank, so the clock is rank 0's, broadcast at each reading.
"""
from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from ..config import replace
from ..errors import CheckpointError, ConfigError
from .launch import local_ranks
from .streams import BlockRandom, block

TAIL = 2   # slots after the gradient: [loss share, stop requests]


class Ranks:
    """A loop's task trained by ``world.size`` ranks; the same interface as ``launch.Solo``."""

    def __init__(self, world, loop):
        self.comm, self.rank, self.size, self.writes = world.comm, world.rank, world.size, world.writes
        task = loop.task
        batch = task.tcfg.batch_size
        if batch < self.size:
            raise ConfigError(f"batch_size {batch} is smaller than the {self.size} ranks: every rank "
                              "needs at least one stream (raise --batch-size or use fewer ranks)")
        problem = task.split_problem()
        if problem:
            raise ConfigError(problem)
        if task.tcfg.threads == 0:  # "all cores" of a machine that several ranks share: a share
            task.tcfg = replace(task.tcfg, threads=max(1, (os.cpu_count() or 1) // local_ranks()))
        self.model = task.model
        self.sum_carry = getattr(task, "sum_carry", False)
        self.buffer = None   # gradient, TAIL slots, then the carry summed over ranks (made at the first step)
        self.stop_asked = False
        self.compute_s = self.allreduce_s = 0.0
        loop.clock = self.clock
        loop.request_stop = self.request_stop   # a signal on any rank stops all at one step
        if not self.writes:
            loop.metrics = _Discard()

    # -- the loop's hooks --------------------------------------------------------------------------

    def clock(self) -> float:
        return self.comm.bcast(time.perf_counter() if self.rank == 0 else None, root=0)

    def request_stop(self) -> None:
        self.stop_asked = True

    def loss_and_grad(self, loop, batch):
        """(loss over the whole batch, what the task keeps if the step is taken); the gradient of
        the whole batch in ``model.grad_flat`` on every rank. The task computes its block of the
        batch (``block_loss_and_grad``) and puts the blocks' carry together (``merge_blocks``)."""
        task = loop.task
        streams = task.streams(batch)
        b0, b1 = block(streams, self.rank, self.size)
        counts = b1 > b0
        if not counts:  # no row of this batch is ours: redo row 0 (same draws, same collective), weigh it 0
            b0, b1 = 0, 1
        t0 = time.perf_counter()
        loss, mine, share = task.block_loss_and_grad(batch, b0, b1, BlockRandom(task.rng, b0, b1, streams))
        grad = self.model.grad_flat
        n = grad.size
        extra = np.ravel(mine) if self.sum_carry else np.zeros(0, grad.dtype)
        if self.buffer is None or self.buffer.size != n + TAIL + extra.size:
            self.buffer = np.empty(n + TAIL + extra.size, grad.dtype)
        buf, share = self.buffer, share if counts else 0.0
        np.multiply(grad, grad.dtype.type(share), out=buf[:n])
        buf[n:n + TAIL] = (loss * share, 1.0 if self.stop_asked else 0.0)
        buf[n + TAIL:] = extra if counts else 0.0
        t1 = time.perf_counter()
        self.comm.Allreduce(_in_place(), buf)
        grad[...] = buf[:n]
        self.compute_s, self.allreduce_s = t1 - t0, time.perf_counter() - t1
        if buf[n + 1] > 0:
            loop._stop = True
        carry = buf[n + TAIL:].copy() if self.sum_carry else mine
        return float(buf[n]), task.merge_blocks(carry, b0, b1)

    def step_record(self) -> dict:
        """Rank 0's split of the last step: its own forward/backward, and the all-reduce (which
        includes waiting for the slowest rank)."""
        return {"compute_s": round(self.compute_s, 6), "allreduce_s": round(self.allreduce_s, 6)}

    def gather_floats(self, local, counts: list[int]) -> np.ndarray:
        """Every rank's ``local`` values (``counts[r]`` from rank r) concatenated in rank order, on
        every rank."""
        every = np.empty(sum(counts), np.float64)
        self.comm.Allgatherv(np.ascontiguousarray(local, np.float64), [every, counts])
        return every

    def allgather(self, value) -> list:
        """Every rank's (picklable) ``value``, in rank order, on every rank."""
        return self.comm.allgather(value)

    def full_state(self, state):
        """The carried state of all B streams (axis 2) on rank 0 (its own array elsewhere; None
        stays None). Rank 0 also checks that every rank still holds its weights bit for bit: MPI
        does not promise that every rank receives the same rounding of a sum, and a drift would
        grow unseen. Every rank calls it."""
        mine = None
        if state is not None:
            b0, b1 = block(state.shape[2], self.rank, self.size)
            mine = np.ascontiguousarray(state[:, :, b0:b1])
        parts = self.comm.gather((mine, _digest(self.model.flat)), root=0)
        if self.rank != 0:
            return state
        drifted = [str(r) for r, (_, digest) in enumerate(parts) if digest != parts[0][1]]
        if drifted:
            raise CheckpointError(f"the weights of rank {', '.join(drifted)} no longer equal rank 0's ("
                                  "differently rounded sums, or a faulty node); the last checkpoint is intact: "
                                  "resume from it")
        return None if state is None else np.concatenate([part for part, _ in parts], axis=2)


def _digest(flat: np.ndarray) -> str:
    return hashlib.blake2b(memoryview(np.ascontiguousarray(flat)).cast("B"), digest_size=16).hexdigest()


def _in_place():
    from mpi4py import MPI

    return MPI.IN_PLACE


class _Discard:
    """Metrics of a rank that does not write: dropped."""

    def add(self, record: dict) -> None:
        pass

    def flush(self) -> None:
        pass
