"""``charlm classify|tag train --ranks N`` trains the run of one process (float64, to rounding),
across a short last batch that leaves a rank without a sequence, and resumes on another number of
ranks; rank 0 alone writes the run. Skipped without the mpi extra, as test_distributed.py is."""
from pathlib import Path

import numpy as np
import pytest
from test_classify import toy_examples, write_tsv
from test_distributed import charlm, needs_mpi, records
from test_tag import next_is_vowel_examples

# 57 training sequences in batches of 8: every epoch ends with a batch of one (a rank of two has none)
SMALL = ["--hidden", "6", "--embed", "5", "--layers", "2", "--batch-size", "8", "--threads", "1", "--seed", "3",
         "--dtype", "float64", "--dropout", "0.2", "--input-dropout", "0.2", "--ngrams", "3", "--buckets", "61",
         "--eval-every", "5", "--lr", "0.02", "--warmup-steps", "0"]
WIDE = ["--wide-ngrams", "3", "--wide-buckets", "67", "--wide-dropout", "0.3", "--pooling", "mean"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("seqdp")
    write_tsv(root / "train.tsv", toy_examples(57))
    write_tsv(root / "dev.tsv", toy_examples(23, 1))
    for name, examples in (("train.conll", next_is_vowel_examples(57)), ("dev.conll", next_is_vowel_examples(19, 1))):
        (root / name).write_text("\n".join(line for e in examples
                                           for line in [*(f"{t}\t{g}" for t, g in zip(e.tokens, e.label)), ""]))
    return {"classify": ["classify", "train", root / "train.tsv", "--dev", root / "dev.tsv", *SMALL, *WIDE],
            "tag": ["tag", "train", root / "train.conll", "--dev", root / "dev.conll", *SMALL]}


def assert_same_seq_run(a: Path, b: Path, rtol: float = 1e-6) -> float:
    """The same steps, step losses and dev loss, accuracy and macro-F1 within ``rtol``; the
    largest relative difference seen."""
    sa, sb = records(a, "step"), records(b, "step")
    assert [r["step"] for r in sa] == [r["step"] for r in sb] and sa
    ea, eb = records(a, "eval"), records(b, "eval")
    assert [r["step"] for r in ea] == [r["step"] for r in eb] and ea
    worst = 0.0
    for key, x, y in [("loss", sa, sb)] + [(key, ea, eb) for key in ("loss", "accuracy", "macro_f1")]:
        x, y = np.array([r[key] for r in x]), np.array([r[key] for r in y])
        worst = max(worst, float((np.abs(x - y) / np.maximum(np.abs(x), 1e-300)).max()))
    assert worst <= rtol, worst
    return worst


@needs_mpi
@pytest.mark.parametrize("task", ["classify", "tag"])
def test_two_ranks_train_the_run_of_one_process(files, tmp_path, task):
    args = [*files[task], "--steps", "18"]   # two epochs and a bit: both short batches
    alone = charlm([*args, "--run-dir", tmp_path / "alone"])
    assert alone.returncode == 0, alone.stderr
    done = charlm([*args, "--run-dir", tmp_path / "two", "--ranks", "2", "--json"])
    assert done.returncode == 0, done.stderr
    print(f"{task}, 2 ranks: largest relative difference {assert_same_seq_run(tmp_path / 'alone', tmp_path / 'two'):.2e}")
    assert "allreduce_s" in records(tmp_path / "two", "step")[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone", "two"]   # rank 0 alone made a run
    assert done.stdout.count("\n") == 1 and '"steps": 18' in done.stdout    # rank 0 alone spoke


@needs_mpi
def test_resume_on_another_number_of_ranks_continues_the_same_run(files, tmp_path):
    args = [*files["tag"], "--schedule", "constant"]
    assert charlm([*args, "--steps", "15", "--run-dir", tmp_path / "whole"]).returncode == 0
    first = charlm([*args, "--steps", "10", "--run-dir", tmp_path / "split"], ranks=2)
    assert first.returncode == 0, first.stderr
    second = charlm(["tag", "train", "--resume", tmp_path / "split", "--steps", "15"], ranks=3)
    assert second.returncode == 0, second.stderr
    assert_same_seq_run(tmp_path / "whole", tmp_path / "split")


@needs_mpi
def test_an_ensemble_with_dropout_is_refused_in_one_line(files, tmp_path):
    done = charlm([*files["tag"], "--members", "2", "--steps", "2", "--run-dir", tmp_path / "run"], ranks=2)
    assert done.returncode != 0
    assert "ensemble" in done.stderr and "Traceback" not in done.stderr
