"""Data-parallel training under mpiexec gives the run of one process; faults stop the whole job.

The multi-rank tests start the venv's own ``mpiexec`` (the ``mpi`` extra: mpi4py and the mpich
wheel) with tiny models and one thread per rank, and skip when it is absent. The rest run anywhere.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from charlm.distributed.streams import BlockRandom, block, stream_uniform

MPIEXEC = Path(sys.executable).with_name("mpiexec")
HAS_MPI = MPIEXEC.exists() and shutil.which(str(MPIEXEC)) is not None and \
    subprocess.run([sys.executable, "-c", "import mpi4py"], capture_output=True).returncode == 0
needs_mpi = pytest.mark.skipif(not HAS_MPI, reason="needs the mpi extra (pip install 'charlm[mpi]'): "
                                                   "mpi4py and an mpiexec beside the Python")
TINY = ["--layers", "2", "--hidden", "12", "--embed", "8", "--batch-size", "7", "--seq-len", "8",
        "--threads", "1", "--seed", "3", "--sample-every", "0"]
WORDS = "the quick brown fox jumps over a lazy dog while rain fell on the quiet town".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("dp") / "words.txt"
    path.write_text("\n".join(" ".join(rng.choice(WORDS, 10)) for _ in range(1500)) + "\n")
    return path


def charlm(args, ranks=0, timeout=900, **kw):
    """Run the CLI, under ``mpiexec -n ranks`` when ranks > 0. The timeout only ends a run that
    hangs: a cold compile on a loaded machine may take minutes."""
    cmd = [sys.executable, "-m", "charlm", *map(str, args)]
    if ranks:
        cmd = [str(MPIEXEC), "-n", str(ranks), *cmd]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_"))}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env | kw.pop("env", {}), **kw)


def records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def assert_same_run(a: Path, b: Path, rtol: float) -> float:
    """Same steps, per-step losses and validation losses within ``rtol``; the largest ratio seen."""
    la, lb = records(a, "step"), records(b, "step")
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    worst = 0.0
    for key, kind in (("loss", "step"), ("val_loss", "eval")):
        x = np.array([r[key] for r in records(a, kind)])
        y = np.array([r[key] for r in records(b, kind)])
        assert x.shape == y.shape and x.size > 0
        rel = np.abs(x - y) / np.abs(x)
        worst = max(worst, float(rel.max()))
    assert worst <= rtol, worst
    return worst


# -- anywhere ---------------------------------------------------------------------------------------

def test_blocks_cover_the_batch_in_order():
    for batch in range(1, 12):
        for size in range(1, batch + 1):
            blocks = [block(batch, r, size) for r in range(size)]
            assert blocks[0][0] == 0 and blocks[-1][1] == batch
            assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(blocks, blocks[1:] + [(batch, None)]))


def test_block_random_draws_the_global_rows_and_keeps_generators_in_step():
    whole = np.random.default_rng(5).random((7, 3))
    gens = [np.random.default_rng(5) for _ in range(3)]
    parts = [stream_uniform(BlockRandom(g, *block(7, r, 3), 7), (block(7, r, 3)[1] - block(7, r, 3)[0], 3), 0)
             for r, g in enumerate(gens)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert len({g.random() for g in gens}) == 1  # every rank's generator advanced alike
    plain = np.random.default_rng(5)
    np.testing.assert_array_equal(stream_uniform(plain, (7, 3), 0), whole)


def test_without_a_launcher_charlm_never_imports_mpi4py(corpus, tmp_path):
    code = ("import sys, charlm.cli, charlm.lm.train, charlm.distributed as d;"
            "assert d.world().size == 1 and 'mpi4py' not in sys.modules, 'imported'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    done = charlm(["train", corpus, *TINY, "--steps", "2", "--run-dir", tmp_path / "r"])
    assert done.returncode == 0, done.stderr


def without_mpi4py(tmp_path) -> dict:
    """An environment in which ``import mpi4py`` fails, installed or not."""
    fake = tmp_path / "fake"
    (fake / "mpi4py").mkdir(parents=True)
    (fake / "mpi4py" / "__init__.py").write_text("raise ImportError('no mpi4py here')\n")
    return {"PYTHONPATH": str(fake)}


def test_ranks_without_mpi4py_say_how_to_install_it(corpus, tmp_path):
    done = charlm(["train", corpus, *TINY, "--steps", "2", "--run-dir", tmp_path / "r"],
                  env={"PMI_SIZE": "2", "PMI_RANK": "0"} | without_mpi4py(tmp_path))
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'charlm[mpi]'" in lines[0], done.stderr
    assert not (tmp_path / "r").exists()


def test_asking_for_ranks_without_mpi4py_says_how_to_install_it(corpus, tmp_path):
    done = charlm(["train", corpus, *TINY, "--ranks", "2", "--steps", "2", "--run-dir", tmp_path / "r"],
                  env=without_mpi4py(tmp_path))
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "--ranks needs mpi4py" in done.stderr and "pip install 'charlm[mpi]'" in done.stderr


# -- under mpiexec ----------------------------------------------------------------------------------

@needs_mpi
def test_ranks_option_launches_mpiexec_and_trains_the_same_run(corpus, tmp_path):
    from charlm.lm.checkpoint import load_checkpoint

    i = TINY.index("--threads")
    unthreaded = TINY[:i] + TINY[i + 2:]
    args = ["train", corpus, *unthreaded, "--steps", "4", "--eval-every", "2", "--dtype", "float64", "--dropout", "0.2"]
    assert charlm([*args, "--threads", "1", "--run-dir", tmp_path / "alone"]).returncode == 0
    done = charlm([*args, "--ranks", "2", "--run-dir", tmp_path / "two"])
    assert done.returncode == 0, done.stderr
    assert_same_run(tmp_path / "alone", tmp_path / "two", 1e-10)
    assert "allreduce_s" in records(tmp_path / "two", "step")[0]
    threads = load_checkpoint(tmp_path / "two" / "last.safetensors").metadata["train_config"]["threads"]
    assert threads == max(1, (os.cpu_count() or 1) // 2)  # the two ranks share the cores

@needs_mpi
def test_one_two_three_ranks_train_the_run_of_one_process_float64(corpus, tmp_path):
    args = ["train", corpus, *TINY, "--steps", "12", "--eval-every", "5", "--dropout", "0.2",
            "--weight-dropout", "0.1", "--dtype", "float64"]
    alone = charlm([*args, "--run-dir", tmp_path / "alone"])
    assert alone.returncode == 0, alone.stderr
    for ranks in (1, 2, 3):
        run = tmp_path / f"ranks{ranks}"
        done = charlm([*args, "--run-dir", run], ranks=ranks)
        assert done.returncode == 0, done.stderr
        worst = assert_same_run(tmp_path / "alone", run, 1e-10)
        print(f"float64, {ranks} ranks: largest relative difference {worst:.2e}")
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f"ranks{ranks}")) == [run.name]
        if ranks > 1:
            step = records(run, "step")[-1]
            assert step["compute_s"] > 0 and step["allreduce_s"] >= 0


@needs_mpi
def test_an_output_fed_cell_draws_its_masks_for_the_whole_batch_too(corpus, tmp_path):
    args = ["train", corpus, *TINY, "--cell", "jordan", "--steps", "6", "--eval-every", "3", "--dropout", "0.3",
            "--dtype", "float64"]
    assert charlm([*args, "--run-dir", tmp_path / "alone"]).returncode == 0
    done = charlm([*args, "--run-dir", tmp_path / "two"], ranks=2)
    assert done.returncode == 0, done.stderr
    assert_same_run(tmp_path / "alone", tmp_path / "two", 1e-10)


@needs_mpi
def test_three_ranks_float32_over_fifty_steps(corpus, tmp_path):
    args = ["train", corpus, *TINY, "--steps", "50", "--eval-every", "25", "--dropout", "0.1", "--dtype", "float32"]
    assert charlm([*args, "--run-dir", tmp_path / "alone"]).returncode == 0
    done = charlm([*args, "--run-dir", tmp_path / "three"], ranks=3)
    assert done.returncode == 0, done.stderr
    print(f"float32, 3 ranks: largest relative difference {assert_same_run(tmp_path / 'alone', tmp_path / 'three', 1e-5):.2e}")


@needs_mpi
def test_resume_on_another_number_of_ranks_continues_the_same_run(corpus, tmp_path):
    from charlm.lm.checkpoint import load_checkpoint

    # a constant rate: extending a cosine schedule's budget on resume would (rightly) change it
    args = [*TINY, "--eval-every", "4", "--dropout", "0.2", "--dtype", "float64", "--schedule", "constant"]
    assert charlm(["train", corpus, *args, "--steps", "12", "--run-dir", tmp_path / "whole"]).returncode == 0
    first = charlm(["train", corpus, *args, "--steps", "8", "--run-dir", tmp_path / "split"], ranks=2)
    assert first.returncode == 0, first.stderr
    state = load_checkpoint(tmp_path / "split" / "last.safetensors").extra["train_state"]
    assert state.shape[2] == 7  # every rank's streams, gathered
    second = charlm(["train", "--resume", tmp_path / "split", "--steps", "12"], ranks=3)
    assert second.returncode == 0, second.stderr
    assert_same_run(tmp_path / "whole", tmp_path / "split", 1e-10)


@needs_mpi
def test_a_rank_reading_different_text_stops_the_job_before_training(corpus, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text().replace("fox", "cat"))
    cmd = [sys.executable, "-m", "charlm", "train", *TINY, "--steps", "3", "--run-dir", str(tmp_path / "r")]
    done = subprocess.run([str(MPIEXEC), "-n", "1", *cmd, str(corpus), ":", "-n", "1", *cmd, str(other)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "rank 1 read different" in done.stderr and "other.txt" in done.stderr, done.stderr
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


@needs_mpi
def test_a_rank_running_another_charlm_version_is_named(corpus, tmp_path):
    args = ["train", *TINY, "--steps", "3", "--run-dir", str(tmp_path / "r"), str(corpus)]
    other = "import charlm, sys; charlm.__version__ = '9.9.9'; from charlm.cli import main; main()"
    done = subprocess.run([str(MPIEXEC), "-n", "1", sys.executable, "-m", "charlm", *args, ":",
                           "-n", "1", sys.executable, "-c", other, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, done.stderr
    assert "rank 1 runs charlm 9.9.9 and rank 0 charlm" in done.stderr, done.stderr


@needs_mpi
def test_a_rank_that_cannot_read_the_corpus_is_named(corpus, tmp_path):
    cmd = [sys.executable, "-m", "charlm", "train", *TINY, "--steps", "3", "--run-dir", str(tmp_path / "r")]
    done = subprocess.run([str(MPIEXEC), "-n", "1", *cmd, str(corpus), ":", "-n", "1", *cmd,
                           str(tmp_path / "missing.txt")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    named = [line for line in done.stderr.splitlines() if "rank 1:" in line]
    assert len(named) == 1 and "missing.txt" in named[0], done.stderr


def _train_until_checkpointed(run: Path, eval_every: int, fault, corpus) -> subprocess.Popen:
    """Start a long 2-rank run, wait for its first checkpoint, call ``fault(proc)``, and wait for
    the job to end. The time limits only end a job that hangs (the test then fails): a loaded
    machine may be slow, and no speed is asserted."""
    args = ["train", corpus, *TINY, "--steps", "100000", "--eval-every", eval_every, "--run-dir", run]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_"))}
    proc = subprocess.Popen([str(MPIEXEC), "-n", "2", sys.executable, "-m", "charlm", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        end = time.monotonic() + 600
        while not (run / "last.safetensors").exists():
            assert proc.poll() is None and time.monotonic() < end, "no checkpoint appeared"
            time.sleep(0.2)
        fault(proc)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc


def _rank_pid(rank: int, mpiexec: int) -> int:
    """The pid of the python process with PMI_RANK=rank below this test's ``mpiexec`` (only this
    test's own processes: another test's job may be running beside it)."""
    from charlm.distributed.launcher import job_ranks

    for pid in job_ranks(mpiexec):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in env:
            return pid
    raise AssertionError(f"rank {rank} not found")


@needs_mpi
def test_a_killed_rank_stops_every_rank_and_the_checkpoint_stays_loadable(corpus, tmp_path):
    from charlm.lm.checkpoint import load_checkpoint

    run = tmp_path / "r"
    proc = _train_until_checkpointed(run, 3, lambda p: os.kill(_rank_pid(1, p.pid), signal.SIGKILL), corpus)
    assert proc.returncode != 0  # the launcher took the other rank down with it
    assert load_checkpoint(run / "last.safetensors").metadata["step"] > 0


@needs_mpi
def test_sigterm_to_the_launcher_stops_all_ranks_at_one_step_and_resumes(corpus, tmp_path):
    from charlm.lm.checkpoint import load_checkpoint

    run = tmp_path / "r"
    proc = _train_until_checkpointed(run, 50, lambda p: p.send_signal(signal.SIGTERM), corpus)
    stopped = load_checkpoint(run / "last.safetensors").metadata["step"]
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr.read()
    assert stopped == records(run, "step")[-1]["step"]  # saved at the step all ranks stopped after
    more = charlm(["train", "--resume", run, "--steps", stopped + 2], ranks=2)
    assert more.returncode == 0, more.stderr
    assert records(run, "step")[-1]["step"] == stopped + 2
