"""Resources: every task's memory estimate is made before allocating and honours a cgroup's limit;
a write that fails for want of space names the file and leaves the last checkpoint intact."""
import errno
import os
import types

import pytest

from cli_helpers import invoke, one_red_line

pytestmark = pytest.mark.usefixtures("isolated")
TINY = ("--layers", 1, "--threads", 1, "--steps", 3)


def _cgroup(tmp_path, monkeypatch, proc: str, files: dict):
    """A cgroup tree under tmp_path (``files``: relative path -> content) and the process's line."""
    from charlm.training import cgroup_memory

    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "proc_cgroup").write_text(proc)
    monkeypatch.setattr(cgroup_memory, "CGROUP_ROOT", str(root))
    monkeypatch.setattr(cgroup_memory, "PROC_CGROUP", str(tmp_path / "proc_cgroup"))


@pytest.mark.parametrize("proc, files, room", [
    ("0::/job/step\n", {"job/memory.max": "1000000000\n", "job/memory.current": "400000000\n",
                        "job/step/memory.max": "max\n", "job/step/memory.current": "300000000\n"}, 600_000_000),
    ("0::/job/step\n", {"job/memory.max": "max\n", "job/step/memory.max": "50000000\n",
                        "job/step/memory.current": "20000000\n"}, 30_000_000),
    ("0::/\n", {"memory.max": "8000000\n", "memory.current": "9000000\n"}, 0),         # over the limit
    ("4:memory:/slurm/uid_1/job_2\n1:cpu:/\n", {"memory/slurm/uid_1/job_2/memory.limit_in_bytes": "2000000\n",
                                                "memory/slurm/uid_1/job_2/memory.usage_in_bytes": "500000\n"},
     1_500_000),
    ("4:memory:/\n", {"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1's "no limit"
    ("0::/\n", {"memory.max": "max\n"}, None),
    ("0::/elsewhere\n", {"memory.max": "7000000\n", "memory.current": "1000000\n"}, 6_000_000),  # a namespace
])
def test_the_cgroup_limit_bounds_the_memory_available(tmp_path, monkeypatch, proc, files, room):
    from charlm.training.cgroup_memory import cgroup_room
    from charlm.training.memory import available_bytes

    _cgroup(tmp_path, monkeypatch, proc, files)
    assert cgroup_room() == room
    if room is not None:
        assert available_bytes() <= room


def test_a_model_that_fits_the_host_but_not_the_cgroup_is_refused(tmp_path, monkeypatch):
    _cgroup(tmp_path, monkeypatch, "0::/\n", {"memory.max": "4000000\n", "memory.current": "1000000\n"})
    (tmp_path / "small.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 60)
    line = one_red_line(invoke("train", tmp_path / "small.txt", "--hidden", 512, *TINY))
    assert "--hidden 512" in line and "available" in line
    (tmp_path / "wl.tsv").write_text("".join(f"w{i}\t{'abc'[i % 3]}\n" for i in range(600)))
    line = one_red_line(invoke("classify", "train", tmp_path / "wl.tsv", "--hidden", 512, *TINY))
    assert "--hidden 512" in line and "available" in line


@pytest.mark.parametrize("task, args, names", [
    ("classify", ("--hidden", 24000), "--hidden 24000"),
    ("classify", ("--ngrams", 3, "--buckets", 2_000_000_000), "--buckets 2000000000"),
    ("classify", ("--wide-ngrams", 3, "--wide-buckets", 2_000_000_000), "--wide-buckets 2000000000"),
    ("tag", ("--hidden", 24000), "--hidden 24000"),
])
def test_classify_and_tag_refuse_what_cannot_fit_before_allocating(tmp_path, task, args, names):
    data = tmp_path / "data.txt"
    if task == "classify":
        data.write_text("".join(f"w{i}\t{'abc'[i % 3]}\n" for i in range(600)))
    else:
        data.write_text("".join(f"w{i} {'NV'[i % 2]}\nv{i} N\n\n" for i in range(200)))
    line = one_red_line(invoke(task, "train", data, *args, *TINY, "--run-dir", tmp_path / "run"))
    assert names in line and "memory" in line
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("settings", [{}, {"hidden": 40, "layers": 2, "bidirectional": False},
                                      {"ngrams": 3, "buckets": 5000, "members": 3},
                                      {"wide_ngrams": 2, "wide_buckets": 7000, "cell": "gru"}])
def test_the_estimate_covers_what_training_allocates(settings):
    from charlm.seqtask.config import SeqModelConfig, SeqTrainConfig
    from charlm.seqtask.data import Example
    from charlm.seqtask.footprint import seq_training_bytes
    from charlm.seqtask.task import SeqTask

    examples = [Example(f"word{i}" * (1 + i % 5), "abc"[i % 3]) for i in range(90)]
    task = SeqTask(examples, [], SeqModelConfig(**settings), SeqTrainConfig(steps=1))
    held = task.model.flat.nbytes + task.model.grad_flat.nbytes * 3    # weights, gradient, Adam's two moments
    assert seq_training_bytes(task.mcfg, task.tcfg, int(task.train.lengths.max())) >= held


def _fail_fsync(module, monkeypatch, marker: str, nth: int):
    """Make ``module``'s fsync fail with ENOSPC on the ``nth`` sync of a file whose name holds ``marker``."""
    real, seen = os.fsync, []

    def fsync(fd):
        if marker in os.readlink(f"/proc/self/fd/{fd}"):
            seen.append(fd)
            if len(seen) == nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(module, "os", types.SimpleNamespace(**(vars(os) | {"fsync": fsync})))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names a descriptor's file through /proc")
@pytest.mark.parametrize("writer, marker, file", [("fsutil", ".last.safetensors.", "last.safetensors"),
                                                  ("metrics", "metrics.jsonl", "metrics.jsonl")])
def test_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, writer, marker, file):
    import importlib

    from charlm.lm.checkpoint import load_checkpoint

    (tmp_path / "small.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 60)
    module = importlib.import_module({"fsutil": "charlm.fsutil", "metrics": "charlm.runs.metrics"}[writer])
    _fail_fsync(module, monkeypatch, marker, 2)                       # the second write of that file
    run = tmp_path / "run"
    result = invoke("train", tmp_path / "small.txt", "--hidden", 8, "--layers", 1, "--threads", 1,
                    "--steps", 30, "--eval-every", 10, "--run-dir", run)
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot write ") and f"run/{file}: " in line and os.strerror(errno.ENOSPC) in line
    assert "last.safetensors at step 10, is intact" in line
    assert load_checkpoint(run / "last.safetensors").metadata["step"] == 10
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
