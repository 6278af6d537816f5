"""``--json`` on every training command: one JSON object on stdout (what the run came to), the
progress on stderr as without it."""
import json

import pytest
from cli_helpers import invoke
from test_classify import toy_examples, write_tsv
from test_tag import next_is_vowel_examples

pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py

SEQ = ["--hidden", "6", "--embed", "5", "--batch-size", "8", "--steps", "6", "--eval-every", "3", "--threads", "1"]


def check_summary(result, metric: str, run_dir) -> dict:
    """The one object stdout holds, in the schema every training command prints."""
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    summary = json.loads(lines[0])
    assert set(summary) == {"run_dir", "reason", "message", "steps", "seconds", "best", "time_split"}
    assert summary["run_dir"] == str(run_dir) and summary["reason"] == "steps" and summary["steps"] == 6
    assert isinstance(summary["seconds"], float) and summary["seconds"] > 0 and summary["message"]
    best = summary["best"]
    assert best["metric"] == metric and best["value"] == best["scores"][metric]
    assert best["step"] in (3, 6) and isinstance(best["value"], float)
    assert set(summary["time_split"]) == {"train_s", "eval_s", "checkpoint_s", "compile_s"}
    assert "steps" in result.stderr or "step" in result.stderr   # the progress and summary stay on stderr
    return summary


def test_train_json(tmp_path):
    (tmp_path / "c.txt").write_text("the cat sat on the mat and the dog sat on the log\n" * 40)
    result = invoke("train", "c.txt", "--hidden", "8", "--embed", "4", "--layers", "1", "--seq-len", "8",
                    "--batch-size", "4", "--steps", "6", "--eval-every", "3", "--run-dir", "lm", "--json")
    summary = check_summary(result, "val_loss", "lm")
    assert set(summary["best"]["scores"]) == {"val_loss", "val_bpc", "val_ppl"}


def test_classify_train_json(tmp_path):
    write_tsv(tmp_path / "train.tsv", toy_examples(40))
    result = invoke("classify", "train", "train.tsv", *SEQ, "--run-dir", "cls", "--json")
    summary = check_summary(result, "accuracy", "cls")
    assert {"loss", "accuracy", "macro_f1"} <= set(summary["best"]["scores"])


def test_tag_train_json(tmp_path):
    lines = [line for e in next_is_vowel_examples(40) for line in [*(f"{t}\t{g}" for t, g in zip(e.tokens, e.label)), ""]]
    (tmp_path / "train.conll").write_text("\n".join(lines))
    result = invoke("tag", "train", "train.conll", *SEQ, "--run-dir", "tag", "--json")
    summary = check_summary(result, "accuracy", "tag")
    assert "sequence_accuracy" in summary["best"]["scores"]
