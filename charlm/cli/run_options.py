"""The options every training command shares (``--ranks``, ``--json``) and what ``--json`` prints."""
from __future__ import annotations

import json
import math

import click

from .common import emit, fail_line


def training_run_options(func):
    """``--ranks N`` and ``--json``, for ``train``, ``classify train`` and ``tag train``."""
    func = click.option("--ranks", type=click.IntRange(1),
                        help="train one model on N processes (runs this command under mpiexec and passes it Ctrl-C, "
                             "SIGTERM and SIGHUP; needs charlm[mpi])")(func)
    return json_option(func)


def ranks_job(ranks: int | None) -> int | None:
    """``--ranks N``: run this command under mpiexec, wait for it, and return the status to exit
    with (one line first if the job was killed); None without ``--ranks`` or inside the job."""
    from ..distributed.launcher import launch_ranks

    ended = launch_ranks(ranks)
    if ended is None:
        return None
    if ended.problem:
        fail_line(ended.problem)
    return ended.code


def json_option(func):
    """``--json``: every training command's summary, for scripts."""
    return click.option("--json", "as_json", is_flag=True,
                        help="print one JSON object on stdout when training ends (progress stays on stderr)")(func)


def emit_summary(done) -> None:
    """``--json``: what the run came to (events.DoneEvent.summary) as one line of strict JSON."""
    emit(json.dumps(_finite(done.summary())))


def _finite(value):
    """``value`` with every non-finite float as None (JSON has no NaN or infinity)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
