"""Training data with nothing to learn is refused in one line, and the automatic dev split never
takes the last training example of a label."""
import random
from collections import Counter

import numpy as np
import pytest

from cli_helpers import invoke, one_red_line

pytestmark = pytest.mark.usefixtures("isolated")
TINY = ("--hidden", 8, "--layers", 1, "--threads", 1, "--steps", 3)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("task, lines, extra, says", [
    ("classify", [f"word{i}\ten" for i in range(600)], (), "label 'en'"),
    ("classify", [f"\t{'abc'[i % 3]}" for i in range(600)], (), "every text is empty"),
    ("tag", ["abcdefghijkl"] * 100, ("--format", "spaces"), "no spaces"),
    ("tag", [line for i in range(100) for line in (f"w{i} N", f"v{i} N", "")], (), "tag 'N'"),
])
def test_a_task_with_nothing_to_learn_is_refused_before_training(tmp_path, task, lines, extra, says):
    line = one_red_line(invoke(task, "train", _write(tmp_path / "data.txt", lines), *extra, *TINY,
                               "--run-dir", tmp_path / "run"))
    assert says in line and "data.txt" in line
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("seed", range(6))
def test_the_held_out_dev_keeps_every_label_in_training(tmp_path, seed):
    from charlm.seqtask.data import Example
    from charlm.seqtask.learnable import hold_out

    rnd = random.Random(seed)
    # many singletons, some rare labels, a few common ones
    labels = [f"s{i}" for i in range(rnd.randint(0, 300))] + [f"r{i % 40}" for i in range(rnd.randint(0, 80))]
    labels += [rnd.choice("abc") for _ in range(rnd.randint(20, 200))]
    examples = [Example(f"text{i}", label) for i, label in enumerate(labels)]
    train, dev = hold_out(examples, 0.1, seed, tmp_path / "data.tsv")
    seen = Counter(e.label for e in train)
    assert dev and all(seen[e.label] for e in dev)
    assert Counter(e.label for e in train + dev) == Counter(labels)       # nothing lost or doubled
    assert len(dev) <= round(len(examples) * 0.1)


def test_a_split_that_needs_no_protection_is_the_plain_seeded_split(tmp_path):
    from charlm.seqtask.data import Example
    from charlm.seqtask.learnable import hold_out

    examples = [Example(f"text{i}", "ab"[i % 2]) for i in range(500)]
    train, dev = hold_out(examples, 0.2, 99, tmp_path / "data.tsv")
    plain = set(np.random.default_rng([99, 7]).permutation(500)[:100].tolist())   # runs made before resume alike
    assert [e.tokens for e in dev] == [f"text{i}" for i in sorted(plain)]
    assert len(train) == 400


def test_only_singleton_labels_and_no_dev_says_what_to_give(tmp_path):
    data = _write(tmp_path / "wl.tsv", [f"w{i}\tc{i}" for i in range(10_000)])
    line = one_red_line(invoke("classify", "train", data, *TINY, "--run-dir", tmp_path / "run"))
    assert "--dev" in line and "--dev-fraction 0" in line
    from charlm.seqtask.runs import data_spec, load_data

    train, dev = load_data(data_spec("classify", data, dev_fraction=0.0))   # what the line suggests works
    assert len(train) == 10_000 and dev == []
