"""The space-restoration benchmark (benchmarks/restore_spaces.py): its normalisation, its held-out
split and its boundary scores."""
import importlib.util
from pathlib import Path

import pytest


def benchmark():
    path = Path(__file__).parent.parent / "benchmarks" / "restore_spaces.py"
    spec = importlib.util.spec_from_file_location("restore_spaces_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_text_becomes_lower_case_letters_and_single_spaces():
    assert benchmark().normalise("Don't--stop, Élan  42 fois!") == "dont stop elan fois"


def test_held_out_lines_are_long_enough_and_never_trained_on(tmp_path):
    b = benchmark()
    lines = [f"Entry {'x' * (i + 1)}: " + "word " * (2 + i % 9) for i in range(60)] + ["", "Short one."]
    (tmp_path / "book.txt").write_text("\n".join(lines) + "\n")
    b.prepare(tmp_path / "book.txt", tmp_path / "out", heldout=5, seed=0)
    held = (tmp_path / "out" / "heldout.txt").read_text().splitlines()
    train = (tmp_path / "out" / "train.txt").read_text().splitlines()
    assert len(held) == 5 and all(len(h.replace(" ", "")) >= b.MIN_LETTERS for h in held)
    assert not set(held) & set(train) and len(train) == len(lines) - 5


def test_boundary_scores():
    b = benchmark()
    gold = [["the", "cat", "sat"], ["a", "dog"]]
    assert b.scores(gold, gold) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "exact_lines": 1.0}
    s = b.scores(gold, [["the", "cats", "at"], ["adog"]])   # 1 of 2 predicted right, 1 of 3 found
    assert (s["precision"], s["recall"], s["exact_lines"]) == (0.5, 1 / 3, 0.0)
    assert s["f1"] == pytest.approx(0.4)
