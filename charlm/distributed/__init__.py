"""Data-parallel training over MPI: one model trained by the N processes ``mpiexec -n N`` starts.

Every rank holds the whole model and the whole data position; rank r computes the gradient of a
contiguous block of the global batch's streams, one in-place ``Allreduce`` per step sums the
blocks' gradients, and every rank then applies the identical clipping and optimiser step, so
the run is the one a single process would make, up to float rounding. Rank 0 alone writes the
run directory and the terminal.

  launch.py     which rank this is (no MPI: a ``Solo`` world, and mpi4py is never imported);
                rank 0 decides, the others follow
  launcher.py   ``--ranks N``: the command runs ``mpiexec -n N`` as its child and hands it stop signals
  streams.py    the block of streams a rank owns, and random draws made for the global batch
  ranks.py      the collectives of one training step, an evaluation and a checkpoint
  agreement.py  before training: same charlm, same text, same configuration on every rank
"""
from __future__ import annotations

from .launch import INSTALL_HINT, Solo, from_rank0, on_rank0, rank_failed, world

__all__ = ["INSTALL_HINT", "Solo", "attach", "from_rank0", "on_rank0", "rank_failed", "world"]


def attach(loop):
    """The world a training loop (training/loop.py) runs in. Alone: a ``Solo`` that changes
    nothing. Several ranks: checks that they agree (agreement.py), then routes the loop's step,
    evaluation, checkpoints, clock and stop requests through ``ranks.Ranks``."""
    comm = world()
    if comm.size == 1:
        return Solo()  # its own: it keeps the loop's last step time
    from .agreement import check_agreement
    from .ranks import Ranks

    check_agreement(comm, loop)
    return Ranks(comm, loop)
