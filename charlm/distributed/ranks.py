"""The collectives of data-parallel training: a step, an evaluation, a checkpoint, the clock.

A step (``loss_and_grad``):
  1. this rank has the task run forward and backward on its block of the batch's streams
     (streams.py; ``block_loss_and_grad`` of training/task.py), from its block of the carried
     state, with dropout masks drawn for the whole batch;
  2. it scales its gradient, the mean over its T*b tokens, by b/B, so that the sum over ranks is
     the mean over all T*B tokens, and writes its share of the loss and its stop request into
     two slots that follow the gradient in the same buffer;
  3. one in-place ``Allreduce`` (sum) of that buffer: every rank now holds the gradient, the
     loss and the stop decision of the whole batch, and clips and steps identically.
The carried state stays global on every rank (each rank updates its own block): a checkpoint
gathers the blocks to rank 0, and a resume on any number of ranks slices it anew.

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
        self.begin, self.end = block(batch, self.rank, self.size)
        self.batch = batch
        if task.tcfg.threads == 0:  # "all cores" of a machine that several ranks share: a share
            task.tcfg = replace(task.tcfg, threads=max(1, (os.cpu_count() or 1) // local_ranks()))
        self.model = task.model
        self.buffer = _gradients_with_tail(task.model)
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
        batch (``block_loss_and_grad``) and puts the blocks' carried state together (``merge_blocks``)."""
        task, b0, b1 = loop.task, self.begin, self.end
        t0 = time.perf_counter()
        loss, mine, share = task.block_loss_and_grad(batch, b0, b1, BlockRandom(task.rng, b0, b1, self.batch))
        buf = self.buffer
        buf[:-TAIL] *= buf.dtype.type(share)
        buf[-TAIL:] = (loss * share, 1.0 if self.stop_asked else 0.0)
        t1 = time.perf_counter()
        self.comm.Allreduce(_in_place(), buf)
        self.compute_s, self.allreduce_s = t1 - t0, time.perf_counter() - t1
        if buf[-1] > 0:
            loop._stop = True
        return float(buf[-2]), task.merge_blocks(mine, b0, b1)

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

    def full_state(self, state):
        """The carried state of all B streams on rank 0 (its own array elsewhere). Rank 0 also
        checks that every rank still holds its weights bit for bit: MPI does not promise that
        every rank receives the same rounding of a sum, and a drift would grow unseen."""
        mine = np.ascontiguousarray(state[:, :, self.begin:self.end])
        parts = self.comm.gather((mine, _digest(self.model.flat)), root=0)
        if self.rank != 0:
            return state
        drifted = [str(r) for r, (_, digest) in enumerate(parts) if digest != parts[0][1]]
        if drifted:
            raise CheckpointError(f"the weights of rank {', '.join(drifted)} no longer equal rank 0's ("
                                  "differently rounded sums, or a faulty node); the last checkpoint is intact: "
                                  "resume from it")
        return np.concatenate([block for block, _ in parts], axis=2)


def _gradients_with_tail(model) -> np.ndarray:
    """Move the model's gradients into a buffer with TAIL more slots, so the step's loss and
    stop requests travel in the gradient's one Allreduce; returns that buffer."""
    buf = np.zeros(model.size + TAIL, model.dtype)
    buf[:model.size] = model.grad_flat
    model.grad_flat = buf[:model.size]
    offset = 0
    for name, shape in model.shapes:
        size = int(np.prod(shape))
        model.grads[name] = model.grad_flat[offset:offset + size].reshape(shape)
        offset += size
    if model.config.tie_weights:
        model.grads["decoder.weight"] = model.grads["encoder.weight"]
    return buf


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
