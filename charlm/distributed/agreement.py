"""Before the first step: every rank runs the same charlm on the same text and configuration.

Ranks that differ would train different models and average their gradients into nonsense, or
wait forever in a collective the others never reach. Each rank sends rank 0's check a short
description of itself; any difference stops the job with one line naming the rank.
"""
from __future__ import annotations

from ..errors import ConfigError, CorpusError


def describe(loop) -> dict:
    from .. import __version__
    from ..config import to_dict

    task = loop.task
    corpus = getattr(task, "corpus", None)
    return {"version": __version__, "fingerprint": task.fingerprint(),
            "sources": [str(s) for s in corpus.sources] if corpus is not None else [],
            "model": to_dict(task.mcfg), "train": to_dict(task.tcfg), "step": loop.pos.step}


def first_difference(rank: int, theirs: dict, ours: dict) -> str | None:
    """One line on how rank ``rank`` differs from rank 0, or None."""
    if theirs["version"] != ours["version"]:
        return (f"rank {rank} runs charlm {theirs['version']} and rank 0 charlm {ours['version']}: "
                "install the same charlm on every node")
    if theirs["fingerprint"] != ours["fingerprint"]:
        parts = [p for p in ours["fingerprint"] if theirs["fingerprint"].get(p) != ours["fingerprint"][p]]
        return (f"rank {rank} read different {' and '.join(parts)} text from rank 0 in "
                f"{', '.join(theirs['sources'])}: every rank needs identical copies of the files")
    for what in ("model", "train"):
        keys = sorted(k for k in set(theirs[what]) | set(ours[what])
                      if theirs[what].get(k) != ours[what].get(k))
        if keys:
            return (f"rank {rank} built a different {what} configuration from rank 0 ({', '.join(keys)}): "
                    "give every setting explicitly, or train with a step or epoch budget")
    if theirs["step"] != ours["step"]:
        return f"rank {rank} starts at step {theirs['step']} and rank 0 at step {ours['step']}"
    return None


def check_agreement(world, loop) -> None:
    """Raise on rank 0 (which speaks for the job) if any rank differs; the others then leave
    quietly when rank 0 aborts the job, or go on together."""
    everyone = world.comm.gather(describe(loop), root=0)
    problem = None
    if world.rank == 0:
        problem = next((p for r, d in enumerate(everyone[1:], 1)
                        if (p := first_difference(r, d, everyone[0]))), None)
    problem = world.comm.bcast(problem, root=0)
    if problem is not None:
        if world.rank == 0:
            raise (CorpusError if " text from rank 0 " in problem else ConfigError)(problem)
        # Give rank 0 time to print the line and abort the job (which ends this wait at once): a
        # rank that exited first could have the launcher kill rank 0 before it said why. Ten
        # seconds was once not enough on a loaded machine; a minute only bounds a rank 0 that died.
        import time

        time.sleep(60)
        raise SystemExit(1)
