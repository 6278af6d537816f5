"""What reaches the terminal: strings from files are shown, never obeyed (escape sequences,
rich markup, emoji codes); results that cannot be delivered are an error while lost progress
never stops training; paths and commands are never cut at the terminal's width.
"""
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlm.cli import main
from charlm.cli.safe_text import printable, printable_text
from charlm.lm import checkpoint as ckpt

TINY = ["--hidden", "8", "--embed", "4", "--layers", "1", "--seq-len", "8", "--batch-size", "2", "--threads", "1"]
ESC_TITLE, ESC_CLEAR = "\x1b]0;pwned\x1b\\", "\x1b[2J"
WORDS = ["alpha", "beta", ESC_TITLE, "gamma", ESC_CLEAR, "delta"]
TEXT = "".join(" ".join(WORDS[(i * 7 + j) % 6] for j in range(8)) + "\n" for i in range(150))


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CHARLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def invoke(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def write(path, text=TEXT):
    Path(path).write_text(text, encoding="utf-8")
    return Path(path)


def no_controls(text: str):
    """No terminal control character other than newline (and no rich-interpreted emoji)."""
    bad = [c for c in text if (ord(c) < 32 and c not in "\n") or 0x7f <= ord(c) < 0xa0 or c in "\u202e\u2066"]
    assert not bad, repr(text[:500])


@pytest.fixture
def word_run(tmp_path):
    """A word model whose vocabulary holds escape sequences."""
    run = tmp_path / "wrun"
    result = invoke("train", write(tmp_path / "w.txt"), "--level", "word", *TINY, "--steps", 4,
                    "--eval-every", 2, "--run-dir", run)
    assert result.exit_code == 0, result.output
    return run


def cli(*args, **kw):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1") | kw.pop("env", {})
    code = "import sys; from charlm.cli import main; sys.argv[0] = 'charlm'; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, timeout=180, **kw)


# -- 6. escape sequences -------------------------------------------------------------------------


def test_printable_escapes_every_control_visibly_and_keeps_text():
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("x\ny\tz\r") == "x\\x0ay\\x09z\\x0d"
    assert printable("\u202eevil\x9b") == "\\u202eevil\\x9b"
    assert printable_text("line\n\tnext\x07") == "line\n\tnext\\x07"
    assert printable("héllo wörld ✓ 日本") == "héllo wörld ✓ 日本"


def test_info_shows_a_hostile_vocabulary_escaped(word_run):
    result = invoke("info", word_run)
    assert result.exit_code == 0, result.output
    no_controls(result.stdout)
    assert "\\x1b]0;pwned\\x1b\\" in result.stdout and "\\x1b[2J" in result.stdout
    # --json stays exact
    data = json.loads(invoke("info", word_run, "--json").stdout)
    assert ESC_CLEAR in data["vocab"]["first_tokens"]


def test_info_escapes_metadata_from_someone_elses_checkpoint(word_run, tmp_path):
    loaded = ckpt.load_checkpoint(word_run / ckpt.MODEL_FILE)
    meta = dict(loaded.metadata, sources=[f"/data/{ESC_TITLE}fake\nline.txt"])
    hostile = tmp_path / "hostile.safetensors"
    ckpt.save_checkpoint(hostile, loaded.config, loaded.tokenizer, loaded.tensors, metadata=meta)
    result = invoke("info", hostile)
    assert result.exit_code == 0, result.output
    no_controls(result.stdout + result.stderr)
    assert "\\x1b]0;pwned" in result.stdout


def test_eval_surprisal_shows_escape_sequences_in_the_text(word_run, tmp_path):
    text = write(tmp_path / "e.txt", f"alpha {ESC_CLEAR} beta\n" * 5)
    result = invoke("eval", word_run, text, "--surprisal")
    assert result.exit_code == 0, result.output
    no_controls(result.stdout)
    assert "\\x1b[2J" in result.stdout


def test_error_lines_escape_file_names_and_prime_text(word_run, tmp_path):
    result = invoke("train", tmp_path / f"no{ESC_CLEAR}such.txt")
    assert result.exit_code == 1
    no_controls(result.stderr)
    assert "no\\x1b[2Jsuch.txt" in result.stderr
    result = invoke("sample", word_run, "--prime", f"zeta{ESC_TITLE}")
    assert result.exit_code == 1
    no_controls(result.stderr)


def test_sample_escapes_controls_on_a_terminal_but_not_in_a_pipe_or_json(word_run):
    args = ["sample", word_run, "--seed", 3, "-n", 60, "--num-samples", 3]
    piped = cli(*args, capture_output=True, text=True)
    assert piped.returncode == 0, piped.stderr
    assert "\x1b" in piped.stdout                       # the product, exact, where it is saved
    as_json = json.loads(cli(*args, "--json", capture_output=True, text=True).stdout)
    assert any("\x1b" in s for s in as_json["samples"])
    leader, follower = pty.openpty()
    try:
        shown = cli(*args, stdout=follower, stderr=subprocess.DEVNULL)
        os.close(follower)
        follower = None
        data = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        if follower is not None:
            os.close(follower)
        os.close(leader)
    assert shown.returncode == 0
    assert b"\x1b" not in data and b"\\x1b" in data     # on a terminal: shown, not obeyed


def test_training_view_escapes_samples_and_corpus_names(tmp_path):
    corpus = write(tmp_path / f"c{ESC_CLEAR}.txt", TEXT)
    result = invoke("train", corpus, "--level", "word", *TINY, "--steps", 4, "--eval-every", 2,
                    "--sample-every", 2, "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    no_controls(result.stderr)
    assert "c\\x1b[2J.txt" in result.stderr


# -- 7. markup and emoji codes ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x:thumbs_up:y.txt", "[bold red]loud.txt", ":smile:.txt"])
def test_file_names_are_never_read_as_markup_or_emoji(tmp_path, name):
    corpus = write(tmp_path / name, "".join(f"line {i}\n" for i in range(200)))
    result = invoke("train", corpus, *TINY, "--steps", 2, "--eval-every", 2, "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert name in result.stderr and "👍" not in result.stderr and "😄" not in result.stderr
    missing = invoke("eval", tmp_path / "run", tmp_path / ("missing-" + name))
    assert "missing-" + name in missing.stderr and "👍" not in missing.stderr


def test_option_values_are_quoted_back_literally(word_run):
    result = invoke("sample", word_run, "--prime", ":smile: [red]x[/red]")
    assert result.exit_code == 1
    assert ":smile:" in result.stderr and "[red]x[/red]" in result.stderr and "😄" not in result.stderr
    result = invoke("inspect", "neurons", word_run, write(Path("t.txt"), "alpha beta\n" * 20), "--unit", "a:b:c")
    assert result.exit_code == 2
    assert "a:b:c" in result.stderr and "🅱" not in result.stderr


# -- 12. output that cannot be delivered ------------------------------------------------------------


@pytest.mark.parametrize("args", [["sample", "-n", 20], ["sample", "--json"], ["info"], ["info", "--json"],
                                  ["eval", "e.txt"], ["eval", "e.txt", "--json"]])
def test_closed_or_full_stdout_is_an_error(word_run, tmp_path, args):
    write(tmp_path / "e.txt", "alpha beta gamma\n" * 5)
    full_args = [args[0], word_run, *args[1:]]
    closed = cli(*full_args, cwd=tmp_path, preexec_fn=lambda: os.close(1), stderr=subprocess.PIPE, text=True)
    assert closed.returncode == 1 and "standard output" in closed.stderr, closed.stderr
    assert "Traceback" not in closed.stderr
    with open("/dev/full", "w") as full:
        result = cli(*full_args, cwd=tmp_path, stdout=full, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 1 and "No space left on device" in result.stderr, result.stderr


def test_a_reader_that_stops_early_is_a_quiet_sigpipe_status(word_run):
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from charlm.cli import main; main()", "sample",
                             str(word_run), "-n", "2000", "--num-samples", "200"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in stderr and "error" not in stderr


def test_a_broken_stderr_never_stops_training(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from charlm.cli import main; main()", "train",
                             str(write(tmp_path / "w.txt")), *TINY, "--steps", "60", "--eval-every", "20",
                             "--run-dir", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc.stderr.readline()
    proc.stderr.close()                 # like `2>&1 | head -1`
    assert proc.wait(timeout=180) == 0
    assert ckpt.load_checkpoint(run / ckpt.LAST_FILE).metadata["step"] == 60
    assert ckpt.load_checkpoint(run / ckpt.MODEL_FILE)


def test_tolerant_stream_drops_output_after_an_error():
    from charlm.cli.common import TolerantStream

    class Broken:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    stream = TolerantStream(Broken())
    assert stream.write("hello") == 5 and stream.broken
    stream.flush()
    assert not stream.isatty() and TolerantStream(None).broken


# -- 14. wrapping ---------------------------------------------------------------------------------------


def test_paths_and_commands_are_never_wrapped_on_a_narrow_terminal(tmp_path):
    run = tmp_path / "runs" / "a-rather-long-run-directory-name-that-cannot-fit"
    env = {"COLUMNS": "20"}
    result = invoke("train", write(tmp_path / "ok.txt", "".join(f"line {i}\n" for i in range(200))), *TINY,
                    "--steps", 2, "--eval-every", 2, "--run-dir", run, env=env)
    assert result.exit_code == 0, result.output
    shown = "runs/a-rather-long-run-directory-name-that-cannot-fit"
    lines = result.stderr.splitlines()
    assert any(line.endswith(f"charlm sample {shown}") for line in lines), result.stderr
    assert any(line.endswith(f"{shown}/last.safetensors") for line in lines)
    assert any(line.endswith(f"{shown}/model.safetensors") for line in lines)
    info = invoke("info", run, env=env)
    assert any(line.endswith(shown) and line.startswith("run") for line in info.stdout.splitlines()), info.stdout
    evaluated = invoke("eval", run, tmp_path / "ok.txt", env=env)
    assert any(line.startswith("ok.txt · scored by " + shown) for line in evaluated.stdout.splitlines())


def test_the_resume_command_is_one_line_when_stopped(tmp_path):
    import io

    from rich.console import Console

    from charlm.cli.render import kv_table, show

    console = Console(file=io.StringIO(), width=20)
    show(console, [kv_table([("resume from", "runs/" + "x" * 60 + "/last.safetensors")])])
    assert console.file.getvalue().splitlines() == ["resume from  runs/" + "x" * 60 + "/last.safetensors"]
