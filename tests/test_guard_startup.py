"""A stop signal before the first training step ends the command at once: nothing new to save.

Each case runs a training command in a fresh process whose task sends the signal to itself as its
warm-up (kernel compilation) begins, then goes on warming up and leaves a mark if it got that far:
the moment is an event, and a stop that waited for the compiler shows as the mark."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_classify import toy_examples, write_tsv

DRIVER = textwrap.dedent("""
    import os, sys, pathlib
    from charlm.lm.task import LmTask
    from charlm.seqtask.task import SeqTask
    signum, mark = int(sys.argv[1]), pathlib.Path(sys.argv[2])
    def hooked(real):
        def warm_up(self):
            os.kill(os.getpid(), signum)    # as the kernels start compiling
            real(self)
            mark.write_text("warmed up")    # reached only by a stop that waited for the compiler
        return warm_up
    LmTask.warm_up, SeqTask.warm_up = hooked(LmTask.warm_up), hooked(SeqTask.warm_up)
    sys.argv = ["charlm"] + sys.argv[3:]
    from charlm.entry import main
    main()
""")
TINY = ["--hidden", "8", "--layers", "1", "--threads", "1"]
SIGNALS = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])


def _env(tmp_path):
    return dict(os.environ, CHARLM_RUNS_DIR=str(tmp_path / "runs"), PYTHONPATH=os.pathsep.join(sys.path))


def _charlm(tmp_path, *args, signum=None):
    """``charlm ARGS`` in tmp_path; with ``signum``, sent to itself as its warm-up begins."""
    hook = [] if signum is None else ["-c", DRIVER, str(int(signum)), str(tmp_path / "mark")]
    return subprocess.run([sys.executable, *(hook or ["-m", "charlm"]), *map(str, args)], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=600)


def _files(run: Path) -> dict:
    """The run's files and their bytes (the lock file names its newest holder: not the run's)."""
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != ".charlm.lock"}


def _stopped_at_once(proc, signum, tmp_path):
    assert proc.returncode == 128 + signum, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert lines == ["error: stopped before the first step; nothing to save"], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mark").exists()   # the warm-up did not run to its end


@pytest.fixture
def small(tmp_path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text("the quick brown fox jumps over the lazy dog\n" * 60)
    return path


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_while_compiling_a_new_run_exits_at_once_and_leaves_no_run(tmp_path, small, signum):
    proc = _charlm(tmp_path, "train", small, *TINY, "--steps", "5", "--run-dir", "run", signum=signum)
    _stopped_at_once(proc, signum, tmp_path)
    assert not (tmp_path / "run").exists()   # the directory made for it went again


def test_a_stop_while_compiling_a_classifier_is_the_same_for_every_task(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", toy_examples(64))
    proc = _charlm(tmp_path, "classify", "train", train, "--hidden", "6", "--threads", "1", "--steps", "3",
                   "--run-dir", "run", signum=signal.SIGTERM)
    _stopped_at_once(proc, signal.SIGTERM, tmp_path)
    assert not (tmp_path / "run").exists()


def test_a_stop_while_a_resumed_run_compiles_leaves_its_files_untouched(tmp_path, small):
    first = _charlm(tmp_path, "train", small, *TINY, "--steps", "2", "--run-dir", "run")
    assert first.returncode == 0, first.stderr
    before = _files(tmp_path / "run")
    proc = _charlm(tmp_path, "train", "--resume", "run", "--steps", "6", signum=signal.SIGHUP)
    _stopped_at_once(proc, signal.SIGHUP, tmp_path)
    assert _files(tmp_path / "run") == before
    again = _charlm(tmp_path, "train", "--resume", "run", "--steps", "3")   # and it still resumes
    assert again.returncode == 0, again.stderr


def test_a_stop_while_an_overwriting_run_compiles_leaves_the_old_run_whole(tmp_path, small):
    first = _charlm(tmp_path, "train", small, *TINY, "--steps", "2", "--run-dir", "run")
    assert first.returncode == 0, first.stderr
    before = _files(tmp_path / "run")
    other = tmp_path / "other.txt"
    other.write_text("pack my box with five dozen liquor jugs\n" * 60)
    proc = _charlm(tmp_path, "train", other, *TINY, "--steps", "5", "--run-dir", "run", "--overwrite",
                   signum=signal.SIGTERM)
    _stopped_at_once(proc, signal.SIGTERM, tmp_path)
    assert _files(tmp_path / "run") == before


def test_the_handler_raises_before_the_first_step_and_records_once_the_loop_runs():
    from charlm.cli.common import StopSignal
    from charlm.cli.stop_signals import StopSignals

    asked = []
    trainer = type("T", (), {"started": False, "request_stop": lambda self: asked.append(True)})()
    with pytest.raises(StopSignal) as stopped:
        with StopSignals() as signals:
            signals.training(trainer, None)
            os.kill(os.getpid(), signal.SIGTERM)   # (delivered before kill() returns)
            pytest.fail("not stopped")
    assert stopped.value.why == "stopped before the first step; nothing to save" and asked == []
    with StopSignals() as signals:
        signals.training(trainer, None)
        trainer.started = True                     # the loop's first step has begun
        os.kill(os.getpid(), signal.SIGTERM)
        assert asked == [True] and signals.exit_code == 128 + signal.SIGTERM
