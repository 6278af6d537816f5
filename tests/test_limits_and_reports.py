"""Inputs that are not files, sizes that cannot fit, reports that must be true, damaged
bookkeeping and config-file spellings: each a clear line or a correct report, never a hang, an
"internal error" or a misleading number.
"""
import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke

from charlm.cli.config_keys import read_config_file
from charlm.cli.train_cmd import OPTION_NAMES
from charlm.config import ModelConfig, TrainConfig
from charlm.errors import ConfigError
from charlm.lm import checkpoint as ckpt
from charlm.lm.footprint import check_training_fits, parameter_count, training_bytes
from charlm.runs.metrics import read_metrics_checked

TINY = ["--hidden", "8", "--embed", "4", "--layers", "1", "--seq-len", "8", "--batch-size", "2", "--threads", "1"]
TEXT = "".join(f"line {i % 9} of a \"quoted\" text (with brackets)\n" for i in range(200))


pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py


@pytest.fixture
def no_hang():
    """A FIFO must be refused, never opened: fail (not hang) if a command blocks on one."""
    def alarm(signum, frame):
        raise TimeoutError("blocked on a FIFO")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)



def write(path, text=TEXT):
    Path(path).write_text(text, encoding="utf-8")
    return Path(path)


def one_red_line(result, code=1):
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output
    return lines[0]


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    result = invoke("train", write(tmp_path / "ok.txt"), *TINY, "--steps", 4, "--eval-every", 2, "--run-dir", run)
    assert result.exit_code == 0, result.output
    return run


# -- 8. FIFOs and other non-regular files ------------------------------------------------------------


@pytest.mark.parametrize("where", ["corpus", "val-file", "config", "eval", "checkpoint", "neurons"])
def test_a_fifo_is_refused_in_one_line_wherever_a_file_is_read(tmp_path, run, no_hang, where):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    args = {"corpus": ["train", fifo, *TINY], "val-file": ["train", tmp_path / "ok.txt", "--val-file", fifo, *TINY],
            "config": ["train", tmp_path / "ok.txt", "--config", fifo], "eval": ["eval", run, fifo],
            "checkpoint": ["sample", fifo], "neurons": ["inspect", "neurons", run, fifo]}[where]
    line = one_red_line(invoke(*args))
    assert "pipe" in line and "named pipe (FIFO)" in line


def test_dev_stdin_is_refused_with_a_reason(tmp_path, no_hang):
    line = one_red_line(invoke("train", "/dev/stdin", *TINY, input="some text\n"))
    assert "/dev/stdin" in line and "not a regular text file" in line


def test_train_help_says_pipes_are_not_read():
    assert "/dev/stdin" in invoke("train", "-h").output


# -- 9. sizes without a cap -------------------------------------------------------------------------------


@pytest.mark.parametrize("args, option", [
    (["--hidden", "100000"], "--hidden 100000"),
    (["--embed", "50000000"], "--embed 50000000"),
    (["--layers", "2000000"], "--layers 2000000"),
    (["--batch-size", "1000000000", "--seq-len", "1000"], "--batch-size 1000000000"),
])
def test_a_model_too_big_for_memory_is_refused_naming_the_option(tmp_path, args, option):
    line = one_red_line(invoke("train", write(tmp_path / "ok.txt"), *args))
    assert option in line and "of memory" in line and "available" in line
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_an_absurd_toml_size_is_refused_not_an_internal_error(tmp_path):
    config = write(tmp_path / "big.toml", "hidden = 100000000000000000000000\n")
    line = one_red_line(invoke("train", write(tmp_path / "ok.txt"), "--config", config))
    assert "--hidden 100000000000000000000000" in line and "memory" in line


@pytest.mark.parametrize("args, option", [
    (["inspect", "memory", "--distances", "2,100000000"], "--distances"),
    (["inspect", "memory", "--hidden", "10000000"], "--hidden"),
    (["inspect", "gradients", "--fresh", "ok.txt", "--hidden", "10000000"], "--hidden"),
    (["bench", "--vocab", "100000000000"], "--vocab 100000000000"),
    (["bench", "--hidden", "1000000", "--batch", "4"], "--hidden 1000000"),
])
def test_inspect_sizes_are_capped_before_anything_is_allocated(tmp_path, args, option):
    write(tmp_path / "ok.txt")
    line = one_red_line(invoke(*args))
    assert option in line and "memory" in line


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "jordan"])
def test_parameter_count_in_closed_form_matches_the_model(cell):
    from charlm.lm.model import parameter_shapes

    for layers, tie in ((1, False), (3, False), (2, True)):
        config = ModelConfig(cell=cell, layers=layers, hidden=12, embed=12 if tie else 5, vocab_size=17,
                             tie_weights=tie)
        assert parameter_count(config, 17) == sum(math.prod(s) for _, s in parameter_shapes(config))


def test_memory_estimate_grows_with_each_size_and_names_the_culprit():
    base = training_bytes(ModelConfig(), TrainConfig(), 65)
    assert training_bytes(ModelConfig(hidden=512), TrainConfig(), 65) > base
    assert training_bytes(ModelConfig(), TrainConfig(batch_size=64), 65) > base
    assert training_bytes(ModelConfig(), TrainConfig(dtype="float64"), 65) > base
    check_training_fits(ModelConfig(), TrainConfig(), 65, available=10 * base)
    with pytest.raises(ConfigError, match="--seq-len 100000"):
        check_training_fits(ModelConfig(), TrainConfig(seq_len=100_000), 65, available=10 * base)
    with pytest.raises(ConfigError, match="vocabulary of 10,000,000"):
        check_training_fits(ModelConfig(), TrainConfig(), 10_000_000, available=10 * base)


# -- 10. reports that must be true --------------------------------------------------------------------


def test_huge_numbers_are_shown_in_scientific_notation():
    import io

    from rich.console import Console

    from charlm.cli.render import eval_table, fmt_num, show

    assert fmt_num(1e300) == "1.000e+300" and fmt_num(2.5) == "2.500" and fmt_num(123456.0) == "123456.000"
    console = Console(file=io.StringIO(), width=100)
    show(console, eval_table({"loss_nats": 690.8, "bits_per_char": 996.6, "perplexity": 1e300, "tokens": 10,
                              "oov": 0}, "run", ["f.txt"]))
    text = console.file.getvalue()
    assert "1.000e+300" in text and "0000000000" not in text


def test_a_word_prime_of_unk_is_refused_by_name(tmp_path):
    run = tmp_path / "wrun"
    assert invoke("train", write(tmp_path / "w.txt"), "--level", "word", *TINY, "--steps", 2, "--eval-every", 2,
                  "--run-dir", run).exit_code == 0
    line = one_red_line(invoke("sample", run, "--prime", "line <unk>"))
    assert "<unk>" in line and "0 unknown" not in line


def test_runs_dir_that_is_a_file_is_reported_as_such(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(write(tmp_path / "not-a-dir")))
    for args in (["sample"], ["info"], ["eval", "x.txt"]):
        line = one_red_line(invoke(*args))
        assert "not-a-dir" in line and "not a directory" in line and "no runs" not in line


def test_invalid_utf8_message_offers_nothing_the_cli_lacks(tmp_path):
    (tmp_path / "latin.txt").write_bytes("caf\xe9 ol\xe9\n".encode("latin-1") * 3 + b"x" * 50)
    line = one_red_line(invoke("train", tmp_path / "latin.txt", *TINY))
    assert "invalid UTF-8" in line and "errors=" not in line


def test_eval_with_a_mistyped_run_names_the_run(tmp_path, run):
    write(tmp_path / "t.txt")
    line = one_red_line(invoke("eval", "runs/typo", tmp_path / "t.txt"))
    assert "runs/typo" in line and "no such run" in line


def test_info_reports_steps_trained_not_the_best_models_step(tmp_path, run):
    early = (run / ckpt.MODEL_FILE).read_bytes()
    assert invoke("train", "--resume", run, "--steps", 8, "--eval-every", 2).exit_code == 0
    (run / ckpt.MODEL_FILE).write_bytes(early)          # the best model stayed at step 4
    data = json.loads(invoke("info", run, "--json").stdout)
    assert data["step"] == 8
    assert "8 steps" in invoke("info", run).stdout


def test_info_of_a_val_file_run_shows_the_file_not_a_fraction(tmp_path):
    run = tmp_path / "vrun"
    assert invoke("train", write(tmp_path / "ok.txt"), "--val-file", write(tmp_path / "v.txt", TEXT[:500]),
                  *TINY, "--steps", 2, "--eval-every", 2, "--run-dir", run).exit_code == 0
    shown = invoke("info", run).stdout
    assert "val_file" in shown and "val_fraction" not in shown


def test_without_validation_text_nothing_is_called_val(tmp_path):
    run = tmp_path / "nrun"
    result = invoke("train", write(tmp_path / "ok.txt"), "--val-fraction", "0", *TINY, "--steps", 4,
                    "--eval-every", 2, "--run-dir", run)
    assert result.exit_code == 0, result.output
    assert "best val" not in result.stderr and " val " not in result.stderr and "best avg train" in result.stderr
    shown = invoke("info", run).stdout
    assert "best training loss" in shown and "best validation" not in shown


def test_a_run_that_diverges_before_any_checkpoint_does_not_offer_one(tmp_path):
    run = tmp_path / "drun"
    result = invoke("train", write(tmp_path / "ok.txt"), *TINY, "--lr", "1e30", "--clip-norm", "0",
                    "--steps", 50, "--eval-every", 40, "--run-dir", run)
    assert result.exit_code == 1, result.output
    assert "diverged" in result.stderr and "intact" not in result.stderr
    assert "sample it" not in result.stderr and not (run / ckpt.MODEL_FILE).exists()


def test_neurons_heading_names_the_property_asked_for(tmp_path, run):
    text = write(tmp_path / "t.txt")
    result = invoke("inspect", "neurons", run, text, "--property", "line_position", "--top", 8)
    assert result.exit_code == 0, result.output
    heading = next(line for line in result.stdout.splitlines() if line.startswith("unit L"))
    assert "tracks line_position" in heading


# -- 11. damaged bookkeeping --------------------------------------------------------------------------


DAMAGE = [b"\xff\xfe not utf-8\n", b'{"step": "x"}\n', b'{"kind": "eval", "step": 3, "val_loss": "low"}\n',
          b"[1, 2]\n", b'{"kind": "step", "step": -4, "loss": 1}\n', b'{"kind": "step", "step": 2, "loss": true}\n']


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_metrics_are_reported_with_file_and_line_and_never_block(run, damage):
    with open(run / ckpt.METRICS_FILE, "ab") as f:
        f.write(damage)
    n = len((run / ckpt.METRICS_FILE).read_bytes().splitlines())
    result = invoke("info", run)
    assert result.exit_code == 0, result.output
    assert f"{ckpt.METRICS_FILE} line {n}" in result.stderr and "skipped" in result.stderr
    assert invoke("info", run, "--json").exit_code == 0
    resumed = invoke("train", "--resume", run, "--steps", 6, "--eval-every", 2)
    assert resumed.exit_code == 0, resumed.output
    assert [r["step"] for r in ckpt.read_metrics(run) if r["kind"] == "step"] == [1, 2, 3, 4, 5, 6]


def test_read_metrics_checked_skips_a_torn_last_line_quietly(tmp_path):
    (tmp_path / ckpt.METRICS_FILE).write_bytes(b'{"kind": "step", "step": 1, "loss": 2.0}\n{"kind": "st')
    records, problems = read_metrics_checked(tmp_path)
    assert [r["step"] for r in records] == [1] and problems == []


def test_a_malformed_gradient_record_is_skipped_by_info(run):
    with open(run / ckpt.METRICS_FILE, "a") as f:
        f.write(json.dumps({"kind": "gradients", "step": 4, "norms": "nonsense"}) + "\n")
    result = invoke("info", run)
    assert result.exit_code == 0, result.output
    assert "gradient record of step 4" in result.stderr


# -- 13. config file spellings ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, field, value", [
    ('time = "10m"\n', "time_budget", "10m"),
    ("val-fraction = 0.2\n", "val_fraction", 0.2),
    ("[train]\nbatch-size = 8\n", "batch_size", 8),
    ('[model]\ncell = "gru"\n', "cell", "gru"),
    ("time_budget = 30\n", "time_budget", 30),
    ("tie-weights = true\n", "tie_weights", True),
])
def test_config_keys_accept_option_spellings(tmp_path, text, field, value):
    assert read_config_file(write(tmp_path / "c.toml", text), OPTION_NAMES) == {field: value}


@pytest.mark.parametrize("text, expect", [
    ("hiden = 3\n", "did you mean 'hidden'"),
    ("val_fration = 0.1\n", "did you mean 'val_fraction'"),
    ('time = "1m"\ntime_budget = "2m"\n', "same setting"),
    ('run_dir = "x"\n', "--run-dir on the command line"),
    ("zzzz = 1\n", "settings are the options"),
])
def test_unknown_config_keys_name_the_key_and_the_closest_setting(tmp_path, text, expect):
    with pytest.raises(ConfigError, match=expect) as info:
        read_config_file(write(tmp_path / "c.toml", text), OPTION_NAMES)
    assert "c.toml" in str(info.value)


def test_a_setting_in_the_wrong_table_or_given_twice_is_refused(tmp_path):
    from charlm.cli.options import option_names
    from charlm.config import ModelConfig, TrainConfig

    tables = {"model": set(option_names(ModelConfig)), "train": set(option_names(TrainConfig))}
    for text, expect in (("[train]\nhidden = 64\n", r"'hidden' is not a \[train\] setting; move it to \[model\]"),
                         ("hidden = 32\n[model]\nhidden = 64\n", "same setting"),
                         ("[model]\nlr = 0.1\n", r"move it to \[train\]")):
        with pytest.raises(ConfigError, match=expect):
            read_config_file(write(tmp_path / "c.toml", text), OPTION_NAMES, tables)
    result = invoke("train", write(tmp_path / "ok.txt"), "--config", write(tmp_path / "t.toml", "[train]\nhidden = 8\n"),
                    "--steps", "2", "--run-dir", tmp_path / "never")
    assert result.exit_code != 0 and "move it to [model]" in result.output and not (tmp_path / "never").exists()


def test_a_time_key_sets_the_budget_through_the_cli(tmp_path):
    config = write(tmp_path / "c.toml", 'time = "2s"\nval-fraction = 0.2\nsteps = 3\neval-every = 3\n')
    result = invoke("train", write(tmp_path / "ok.txt"), "--config", config, *TINY, "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "0:02 of training" in result.stderr
    assert ckpt.load_checkpoint(tmp_path / "r" / ckpt.LAST_FILE).metadata["train_config"]["val_fraction"] == 0.2
