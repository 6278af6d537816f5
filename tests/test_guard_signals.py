"""Stop signals during training: the handler only records, the loop acts between steps, and the
exit status is 128 + the signal's number; Ctrl-C while the command line loads is one line.

Each case runs ``charlm train`` in a fresh process whose task sends the signals to itself from
inside a training step, at a chosen step: the moment is an event, never a delay."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

DRIVER = textwrap.dedent("""
    import os, sys
    from charlm.lm.task import LmTask
    step, signum, times = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    real = LmTask.step
    def step_then_signal(self, lr):
        real(self, lr)
        self.done = getattr(self, "done", 0) + 1
        if self.done == step:
            for _ in range(times):      # mid-step, as a user's kill would be
                os.kill(os.getpid(), signum)
    LmTask.step = step_then_signal
    sys.argv = ["charlm"] + sys.argv[4:]
    from charlm.entry import main
    main()
""")


def _train(tmp_path, signum, times, step=3):
    (tmp_path / "small.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 60)
    env = dict(os.environ, CHARLM_RUNS_DIR=str(tmp_path / "runs"), CHARLM_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", DRIVER, str(step), str(int(signum)), str(times), "train", "small.txt",
                           "--hidden", "8", "--layers", "1", "--threads", "1", "--steps", "1000", "--run-dir", "run"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


SIGNALS = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_one_signal_finishes_the_step_saves_it_and_exits_128_plus_its_number(tmp_path, signum):
    from charlm.lm.checkpoint import load_checkpoint

    proc = _train(tmp_path, signum, 1)
    assert proc.returncode == 128 + signum, proc.stderr
    assert "Traceback" not in proc.stderr and "continue with" in proc.stderr
    assert load_checkpoint(tmp_path / "run" / "last.safetensors").metadata["step"] == 3


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_second_signal_aborts_at_a_safe_point_with_its_own_status(tmp_path, signum):
    proc = _train(tmp_path, signum, 2)
    assert proc.returncode == 128 + signum, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "internal error" not in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "SystemError" not in proc.stderr


def test_ctrl_c_while_the_command_line_loads_is_one_line(tmp_path):
    script = textwrap.dedent("""
        import builtins
        real = builtins.__import__
        def interrupted(name, *args, **kw):
            if name == "rich.console":
                raise KeyboardInterrupt
            return real(name, *args, **kw)
        builtins.__import__ = interrupted
        from charlm.entry import main
        main()
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", script, "train"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 130 and proc.stderr == "error: interrupted\n"


def test_an_exception_that_replaced_a_signal_is_still_that_signal():
    from charlm.cli.common import StopSignal
    from charlm.cli.stop_signals import StopSignals

    with pytest.raises(StopSignal) as stopped:
        with StopSignals() as signals:
            signals.training(type("T", (), {"request_stop": lambda self: None})(), None)
            os.kill(os.getpid(), signal.SIGTERM)
            raise SystemError("CPUDispatcher(<function step>) returned a result with an exception set")
    assert stopped.value.signum == signal.SIGTERM


def test_a_problem_of_its_own_after_a_signal_keeps_its_line():
    from charlm.cli.stop_signals import StopSignals
    from charlm.errors import CheckpointError

    with pytest.raises(CheckpointError):
        with StopSignals() as signals:
            signals.training(type("T", (), {"request_stop": lambda self: None})(), None)
            os.kill(os.getpid(), signal.SIGTERM)
            raise CheckpointError("cannot write run/last.safetensors: No space left on device")
