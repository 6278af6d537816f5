"""The command line, through click's CliRunner; effects are checked through the library.

Every run here is tiny (hidden 16, a few dozen steps on a few kB of text made in tmp_path).
"""
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cli_helpers import invoke, one_red_line
from click.testing import CliRunner

from charlm.cli import main
from charlm.data.builtin_corpora import pseudo_names
from charlm.lm import checkpoint as ckpt

TINY = ["--hidden", "16", "--embed", "8", "--layers", "1", "--seq-len", "16", "--batch-size", "4"]
TEXT = "".join(f"the {w} fox jumps over the lazy dog number {i % 7}\n"
               for i, w in enumerate(["quick", "slow", "brown", "red"] * 30))


pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py



def write(path, text=TEXT):
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path


def train_tiny(tmp_path, *extra, name="run", text=TEXT, steps=20):
    corpus = write(tmp_path / f"{name}.txt", text)
    run = tmp_path / "runs" / name
    result = invoke("train", corpus, *TINY, "--steps", steps, "--eval-every", 10, "--run-dir", run, *extra)
    assert result.exit_code == 0, result.output
    return run, result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by the sample/eval/info tests (they only read it)."""
    tmp = tmp_path_factory.mktemp("trained")
    corpus = write(tmp / "corpus.txt")
    run = tmp / "runs" / "tiny"
    result = CliRunner().invoke(main, ["train", str(corpus), *TINY, "--steps", "30", "--eval-every", "10",
                                       "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    return run


# -- help, version, start-up -------------------------------------------------------------------


def test_help_does_not_import_numba():
    code = ("import sys\nfrom charlm.cli import main\n"
            "for args in (['--help'], ['train', '-h'], ['sample', '-h'], ['eval', '-h'], ['info', '-h']):\n"
            "    try:\n        main(args)\n    except SystemExit as e:\n        assert e.code == 0, args\n"
            "heavy = [m for m in ('numba', 'numpy', 'scipy', 'torch', 'plotext') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("HEAVY []"), out


def test_short_sample_does_not_import_numba(trained):
    """The first NUMPY_TOKENS tokens of a sample come from the NumPy loop (generate_numpy.py), so a
    short `charlm sample` starts without loading Numba; a prime longer than that uses the kernel."""
    code = ("import sys\nfrom charlm.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "print('NUMBA', 'numba' in sys.modules, file=sys.stderr)\n")
    long_prime = TEXT[:300] * (1 + 300 // len(TEXT[:300]))
    for args, loaded in ((["-n", "200"], False), (["-n", "5", "--prime", long_prime], True)):
        run = subprocess.run([sys.executable, "-c", code, "sample", str(trained), *args, "--seed", "3"],
                             capture_output=True, text=True, check=True)
        assert run.stderr.strip().endswith(f"NUMBA {loaded}"), run.stderr
        assert run.stdout


def test_version_and_python_dash_m():
    result = invoke("--version")
    assert result.exit_code == 0 and "charlm" in result.output
    done = subprocess.run([sys.executable, "-m", "charlm", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("charlm")


def test_train_options_mirror_config_fields():
    from dataclasses import fields

    from charlm.config import ModelConfig, TrainConfig

    names = {p.name for p in main.commands["train"].params}
    wanted = {f.name for cls in (ModelConfig, TrainConfig) for f in fields(cls)} - {"vocab_size", "labels"}   # set from the data
    assert wanted <= names


# -- train ----------------------------------------------------------------------------------


def test_train_writes_a_run_and_logs_plain_lines(tmp_path):
    run, result = train_tiny(tmp_path, "--sample-every", 10)
    loaded = ckpt.load_checkpoint(run)
    assert loaded.config.hidden == 16 and loaded.config.layers == 1
    assert loaded.metadata["step"] in (10, 20)
    evals = [r for r in ckpt.read_metrics(run) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [10, 20]
    err = result.stderr
    assert "eval step 10" in err and "sample at step 10" in err     # stderr is not a terminal
    assert "training summary" in err and f"charlm sample {os.path.relpath(run)}" in err
    assert result.stdout == ""


def test_checkpoint_carries_the_state_sampling_starts_from(trained):
    """Sampling starts from a trained-regime state (Trainer._start_state), not the zero state a
    carried-state model never saw; it is saved in the checkpoint and used by the Sampler."""
    import numpy as np

    from charlm.lm.sample import Sampler

    loaded = ckpt.load_checkpoint(trained)
    start = np.array(loaded.metadata["start_state"])
    c = loaded.config
    assert start.shape == (c.layers, c.states, c.hidden) == (1, c.states, 16) and np.abs(start).sum() > 0
    np.testing.assert_allclose(Sampler.from_checkpoint(loaded).start_state, start, atol=1e-6)


def test_train_default_run_dir_is_under_runs(tmp_path):
    write(tmp_path / "poems.txt")
    result = invoke("train", "poems.txt", *TINY, "--steps", 5, "--eval-every", 5)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("poems-") and (run / ckpt.MODEL_FILE).exists()


def test_config_file_and_flags_override_it(tmp_path):
    write(tmp_path / "c.toml", '[model]\ncell = "gru"\nhidden = 24\n[train]\nsteps = 6\n'
                               'eval_every = 3\ntime_budget = "2m"\nlr = 0.01\n')
    run, _ = train_tiny(tmp_path, "--config", tmp_path / "c.toml", "--hidden", 12, steps=4)
    loaded = ckpt.load_checkpoint(run)
    assert (loaded.config.cell, loaded.config.hidden) == ("gru", 12)  # the flag wins
    train_config = loaded.metadata["train_config"]
    assert train_config["steps"] == 4 and train_config["time_budget"] == 120.0 and train_config["lr"] == 0.01


def test_time_accepts_durations(tmp_path):
    run, _ = train_tiny(tmp_path, "--time", "1h30m", steps=3)
    assert ckpt.load_checkpoint(run).metadata["train_config"]["time_budget"] == 5400.0


def test_resume_extends_the_budget(tmp_path):
    run, _ = train_tiny(tmp_path, steps=10)
    result = invoke("train", "--resume", run, "--steps", 20)
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stderr
    assert ckpt.load_checkpoint(run / ckpt.LAST_FILE).metadata["step"] == 20
    one_red_line(invoke("train", "--resume", run, "--hidden", 32))            # model is fixed
    assert "already holds a run" in one_red_line(invoke("train", tmp_path / "run.txt", "--run-dir", run))


@pytest.mark.parametrize("args, message", [
    (["missing.txt"], "missing.txt: no such file"),
    (["emptydir"], "is a directory"),
    (["empty.txt"], "empty.txt: is empty"),
    (["ok.txt", "--val-file", "nope.txt"], "nope.txt: no such file"),
    (["ok.txt", "--config", "nope.toml"], "nope.toml: no such config file"),
    (["ok.txt", "--config", "bad.toml"], "unknown setting 'hiden' (did you mean 'hidden'"),
    (["ok.txt", "--config", "broken.toml"], "invalid TOML"),
    (["ok.txt", "--tie-weights"], "--tie-weights needs embed == hidden"),
    (["--resume", "no-such-run"], "no-such-run: no such run directory"),
])
def test_train_user_errors(tmp_path, args, message):
    (tmp_path / "emptydir").mkdir()
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "ok.txt")
    write(tmp_path / "bad.toml", "hiden = 3\n")
    write(tmp_path / "broken.toml", "hidden = = 3\n")
    assert message in one_red_line(invoke("train", *args, *TINY, "--steps", 2))


@pytest.mark.parametrize("args", [["--hidden", "0"], ["--cell", "tree"], ["--time", "5 parsecs"],
                                  ["--lr", "-1"], ["--no-such-option"]])
def test_bad_option_values_are_usage_errors(tmp_path, args):
    write(tmp_path / "ok.txt")
    line = one_red_line(invoke("train", "ok.txt", *args), code=2)
    assert "charlm train -h" in line


def test_ctrl_c_saves_and_prints_the_resume_command(tmp_path):
    write(tmp_path / "c.txt", TEXT * 10)
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "train", "c.txt", *TINY, "--steps", "1000000",
                             "--eval-every", "100000", "--run-dir", "runs/r"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = []  # without a terminal the first step prints a line: training is under way then
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("step "):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = "".join(seen) + err
    assert proc.returncode == 130, err
    assert "charlm train --resume runs/r" in err and "Traceback" not in err
    assert ckpt.load_checkpoint(tmp_path / "runs" / "r" / ckpt.LAST_FILE).metadata["step"] >= 1


# -- sample ------------------------------------------------------------------------------------


def test_sample_is_reproducible_with_a_seed(trained):
    first = invoke("sample", trained, "--seed", 5, "--max-length", 60, "--num-samples", 2)
    again = invoke("sample", trained, "--seed", 5, "--max-length", 60, "--num-samples", 2)
    assert first.exit_code == 0, first.output
    assert first.stdout == again.stdout and first.stdout.strip()
    assert "seed 5" in first.stderr and "seed 5" not in first.stdout
    greedy = [invoke("sample", trained, "-t", 0, "--prime", "the ", "-n", 30).stdout for _ in range(2)]
    assert greedy[0] == greedy[1] and greedy[0].startswith("the ")


def test_sample_defaults_to_the_most_recent_run(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(trained.parent))
    result = invoke("sample", "--seed", 1, "-n", 20)
    assert result.exit_code == 0 and str(trained.name) in result.stderr


def test_sample_json(trained):
    result = invoke("sample", trained, "--json", "--seed", 2, "--num-samples", 3, "-n", 25, "-t", 0.7)
    data = json.loads(result.stdout)
    assert len(data["samples"]) == 3 and data["seed"] == 2 and data["temperature"] == 0.7
    assert all(len(s) <= 25 * 1 + 25 for s in data["samples"])


def test_names_model_samples_one_name_per_sample(tmp_path):
    run, _ = train_tiny(tmp_path, "--hidden", 48, "--eos", "line", "--lr", "0.01", name="names",
                        text=pseudo_names(600, seed=1), steps=150)
    result = invoke("sample", run, "--json", "--seed", 3, "--num-samples", 8, "--max-length", 40)
    samples = json.loads(result.stdout)["samples"]
    assert len(samples) == 8
    for name in samples:
        assert "\n" not in name and " " not in name and len(name) < 40  # ended at <eos>, not the cap
    text = invoke("sample", run, "--seed", 3, "--num-samples", 8, "--max-length", 40).stdout
    assert text.splitlines() == samples                                   # one name per line


def test_sample_errors(trained, tmp_path):
    assert "no language-model runs yet" in one_red_line(invoke("sample"))
    assert "--prime" in one_red_line(invoke("sample", trained, "--prime", "QZ€"))
    assert "temperature" in one_red_line(invoke("sample", trained, "-t", "-1"))
    bad = write(tmp_path / "bad.safetensors", "not a checkpoint at all")
    assert "bad.safetensors" in one_red_line(invoke("sample", bad))
    assert "holds no checkpoint" in one_red_line(invoke("sample", tmp_path))


# -- eval --------------------------------------------------------------------------------------


def test_eval_table_json_and_surprisal(trained, tmp_path):
    from charlm.lm.evaluate import evaluate

    held = write(tmp_path / "held.txt", TEXT[:500])
    expected = evaluate(ckpt.load_checkpoint(trained), [held])
    data = json.loads(invoke("eval", trained, held, "--json").stdout)
    assert {"loss_nats", "bits_per_char", "perplexity", "tokens", "oov"} <= set(data)
    assert data["loss_nats"] == pytest.approx(expected.loss_nats) and data["tokens"] == expected.tokens
    table = invoke("eval", trained, held)
    assert table.exit_code == 0 and "perplexity" in table.stdout and "bits per char" in table.stdout
    heat = invoke("eval", trained, held, "--surprisal")
    assert "surprisal" in heat.stdout and "the " in heat.stdout


def test_eval_gives_bits_per_character_at_every_level(trained, tmp_path):
    """A character model scores one token per character (a line break counts one), so its bits
    per character are its loss / ln 2; a word model's are its total bits over the same count."""
    import math

    text = "the cat sat.\nthe dog ran\n"
    held = write(tmp_path / "held.txt", text)
    char = json.loads(invoke("eval", trained, held, "--json").stdout)
    characters = char["characters"]
    assert characters == char["tokens"] and abs(characters - len(text)) <= 1   # the closing <eos>
    assert char["bits_per_char"] == pytest.approx(char["loss_nats"] / math.log(2))
    words, _ = train_tiny(tmp_path, "--level", "word", "--split", "words", name="words", steps=3)
    word = json.loads(invoke("eval", words, held, "--json").stdout)
    assert word["characters"] == characters and word["tokens"] < characters
    assert word["bits_per_char"] == pytest.approx(word["loss_nats"] * word["tokens"] / characters / math.log(2))
    assert "bits per char" in invoke("eval", words, held).stdout


def test_eval_errors(trained, tmp_path):
    (tmp_path / "adir").mkdir()
    write(tmp_path / "empty.txt", "")
    assert "missing.txt: no such file" in one_red_line(invoke("eval", trained, "missing.txt"))
    assert "is a directory" in one_red_line(invoke("eval", trained, "adir"))
    assert "is empty" in one_red_line(invoke("eval", trained, "empty.txt"))
    assert "give the text files" in one_red_line(invoke("eval", trained), code=2)
    assert "no language-model runs yet" in one_red_line(invoke("eval", "missing.txt"))


# -- info --------------------------------------------------------------------------------------


def test_info_text_and_json(trained):
    result = invoke("info", trained)
    assert result.exit_code == 0, result.output
    assert "parameters" in result.stdout and "model.safetensors" in result.stdout and "step" in result.stdout
    data = json.loads(invoke("info", trained, "--json").stdout)
    loaded = ckpt.load_checkpoint(trained)
    assert data["parameters"] == sum(t.size for t in loaded.tensors.values())
    assert data["model_config"]["hidden"] == 16 and data["vocab"]["size"] == len(loaded.tokenizer)
    assert [r["step"] for r in data["history"]["eval"]] == [10, 20, 30]


# -- the one place errors are reported ------------------------------------------------------------


def test_os_errors_and_interrupts_are_one_line(trained, monkeypatch):
    import charlm.lm.describe

    def raise_(exc):
        def f(*a, **k):
            raise exc
        return f

    monkeypatch.setattr(charlm.lm.describe, "describe_run", raise_(PermissionError(13, "Permission denied", "runs/x")))
    assert one_red_line(invoke("info", trained)) == "error: runs/x: Permission denied"
    monkeypatch.setattr(charlm.lm.describe, "describe_run", raise_(OSError(28, "No space left on device")))
    assert "No space left" in one_red_line(invoke("info", trained))
    monkeypatch.setattr(charlm.lm.describe, "describe_run", raise_(KeyboardInterrupt()))
    assert "interrupted" in one_red_line(invoke("info", trained), code=130)


def test_internal_error_goes_to_a_log_file(trained, tmp_path, monkeypatch):
    import charlm.lm.describe

    def boom(*a, **k):
        return 1 / 0

    monkeypatch.setattr(charlm.lm.describe, "describe_run", boom)
    line = one_red_line(invoke("info", trained))
    assert "internal error" in line and "ZeroDivisionError" in line and "please report" in line
    log = Path(line.rsplit("details in ", 1)[1].rstrip(")"))
    assert log.is_relative_to(tmp_path / "cache") and "Traceback" in log.read_text()


# -- the live view ---------------------------------------------------------------------------


def test_live_view_renders_on_a_terminal(tmp_path):
    from rich.console import Console

    from charlm.cli.train_view import TrainView, summary_table
    from charlm.lm.train import DoneEvent, EvalEvent, SampleEvent, StepEvent

    trainer = SimpleNamespace(corpus=SimpleNamespace(tokenizer=SimpleNamespace(level="char"),
                                                         val=np.zeros(100)),
                              tcfg=SimpleNamespace(eval_every=10), progress=lambda step, epoch, elapsed: step / 40,
                              run_dir=tmp_path)
    (tmp_path / ckpt.MODEL_FILE).write_bytes(b"")  # the summary offers sampling only a saved model
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    view = TrainView(console, trainer, live=True)
    for step in range(1, 21):
        view.update(StepEvent(step, step / 10, 3.0 - step / 20, 1.5, 2e-3, 30_000.0, step * 0.5))
        if step % 10 == 0:
            scores = {"val_loss": 2.8 - step / 100, "val_bpc": 4.0, "val_ppl": 16.0}
            view.update(EvalEvent(step, 2.9, scores, "val_loss", scores, True, step * 0.5))
    view.update(SampleEvent(20, "to be or not"))
    view.update(DoneEvent(20, "steps", {"val_loss": 2.6}, 10.0, Path("runs/x"), "reached the step budget",
                          metric="val_loss"))
    console.print(view)
    console.print(summary_table(view, "runs/x", 1234))
    shown = console.file.getvalue()
    for piece in ("train loss", "bits/char", "chars/s", "eta", "step", "to be or not", "50%", "charlm sample runs/x"):
        assert piece in shown, piece
