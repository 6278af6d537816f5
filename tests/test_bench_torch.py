"""charlm bench beside PyTorch: the table's arithmetic (FLOPs, ratios, the FMA limit), the models
compared being charlm's own, the message without PyTorch, the sequence tasks on tiny shapes, the
first-run profile and the precompilation plan. No timing assertion: speeds are only checked to exist."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from charlm.bench import host
from charlm.bench import speed as B
from charlm.bench.first_run import CompileTimes, summarise
from charlm.bench.seq_speed import seq_batches, seq_flops_per_token
from charlm.cli import main

CPUINFO = ("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f\ncpu MHz\t\t: 2600.000\nsiblings\t: 2\n"
           "cpu cores\t: 2\nprocessor\t: 1\ncpu MHz\t\t: 2500.000\n")
TINY_SEQ = {"cell": "lstm", "layers": 1, "hidden": 4, "batch": 3, "seq_len": 6, "vocab": 7, "embed": 3, "threads": 1,
            "warmup": 0, "steps": 1}


def test_fma_limit_is_the_product_of_its_factors(monkeypatch):
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "+avx2,+fma,-avx512f")
    assert host.fma_limit(2, cpuinfo=CPUINFO, cpus=2)["lanes"] == 8  # the kernels compiled without AVX-512
    monkeypatch.delenv("NUMBA_CPU_FEATURES")
    limit = host.fma_limit(2, cpuinfo=CPUINFO, cpus=2)
    assert (limit["cores"], limit["fma_units"], limit["lanes"], limit["clock_ghz"]) == (2, 2, 16, 2.6)
    assert limit["gflops"] == pytest.approx(2 * 2 * 16 * 2 * 2.6)
    assert host.fma_limit(1, cpuinfo=CPUINFO, cpus=2)["cores"] == 1            # held to the threads used
    avx2 = host.fma_limit(2, fma_units=1, cpuinfo=CPUINFO.replace(" avx512f", ""), cpus=2)
    assert (avx2["lanes"], avx2["gflops"]) == (8, pytest.approx(2 * 1 * 8 * 2 * 2.6))
    smt = host.fma_limit(4, cpuinfo=CPUINFO.replace("cpu cores\t: 2", "cpu cores\t: 1"), cpus=4)
    assert smt["cores"] == 2                                                     # 2 hardware threads per core
    assert host.fma_limit(2, clock_ghz=3.0, cpuinfo=CPUINFO, cpus=2)["clock_source"] == "given"
    line = host.describe(limit)
    assert "assumed" in line and "avx512f" in line and "cpu MHz" in line and "333" in line


def test_flop_counts_of_known_configurations():
    # b: lstm 2x256, V = E = 65: 2*4*256*(65+256) + 2*4*256*(256+256) + 2*256*65 per character forward
    assert B.flops_per_char("lstm", 2, 256, 65, 65) == 657_408 + 1_048_576 + 33_280
    assert 3 * B.flops_per_char("lstm", 2, 256, 65, 65) == pytest.approx(5.2e6, rel=0.01)  # ~5.2 MFLOP trained
    seq = B.BenchConfig(cell="lstm", layers=2, hidden=8, embed=5, labels=3, task="classify")
    # both directions: layer 0 reads E, layer 1 both directions' outputs (2H)
    assert seq_flops_per_token(seq) == 2 * 2 * 4 * 8 * (5 + 8) + 2 * 2 * 4 * 8 * (16 + 8)
    tag = B.BenchConfig(cell="gru", layers=1, hidden=8, embed=5, labels=3, task="tag")
    assert seq_flops_per_token(tag) == 2 * 2 * 3 * 8 * (5 + 8) + 2 * 16 * 3


def test_comparison_table_shows_ratios_gflops_and_shares():
    from rich.console import Console

    from charlm.bench.compare import ratios
    from charlm.cli.bench_view import comparison_table, side

    ours = {"train": {"chars_per_s": 3000.0, "gflops_achieved": 150.0, "fraction_of_peak": 0.45},
            "sample": {"chars_per_s": 800.0}, "peak_rss_mb": 100.0}
    theirs = {"train": {"chars_per_s": 1500.0, "gflops_achieved": 75.0, "fraction_of_peak": 0.225},
              "sample": {"chars_per_s": 100.0}, "sample_mkldnn_off": {"chars_per_s": 200.0}, "peak_rss_mb": 400.0}
    ours["ratio"] = ratios(ours, theirs)
    assert ours["ratio"] == {"train": 2.0, "sample": 4.0, "peak_rss": 0.25}
    console = Console(width=120, record=True)
    console.print(comparison_table([("b", B.STANDARD["b"], ours, side(theirs) | {"sample": 200.0})], B.TARGETS))
    text = " ".join(console.export_text().split())   # the caption wraps at the table's width
    assert "2.00x" in text and "4.00x" in text and "0.25x" in text
    assert "150.0 (45%)" in text and "75.0 (22%)" in text and "3,000" in text


def test_without_torch_one_line_says_how_to_get_it():
    result = CliRunner().invoke(main, ["bench", "-c", "a", "--compare", "torch", "--torch-python", "/bin/false"])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.output
    assert "pip install torch" in lines[0] and result.stdout == ""


def test_seq_batches_are_the_same_for_both_sides_and_within_bounds():
    cfg = B.BenchConfig(**TINY_SEQ, task="tag")
    a, b = list(seq_batches(cfg, 3)), list(seq_batches(cfg, 3))
    for (ids, lengths, labels), (ids2, lengths2, labels2) in zip(a, b):
        assert np.array_equal(ids, ids2) and np.array_equal(lengths, lengths2) and np.array_equal(labels, labels2)
        assert lengths.min() >= cfg.seq_len // 4 and lengths.max() <= cfg.seq_len and ids.shape[0] == lengths.max()
        assert labels.shape == ids.shape and labels.max() < cfg.labels and ids.max() < cfg.vocab


@pytest.mark.parametrize("task", ["classify", "tag"])
def test_the_torch_twin_is_charlms_model_on_identical_weights(task):
    torch = pytest.importorskip("torch")
    from charlm.bench import torch_side
    from charlm.bench.seq_speed import model_config
    from charlm.seqtask.model import SeqModel

    cfg = B.BenchConfig(**TINY_SEQ | {"layers": 2}, task=task)
    ours = SeqModel(model_config(cfg), np.float64).init_weights(np.random.default_rng(0))
    twin = torch_side.SequenceModel(cfg).double()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()}, strict=True)
    ids, lengths, _ = next(seq_batches(cfg, 1))
    logits, _ = ours.forward(ids, lengths)
    with torch.no_grad():
        theirs = twin(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()
    if task == "tag":  # PyTorch's padded steps are the head's bias; charlm's are 0
        theirs = theirs * (np.arange(ids.shape[0])[:, None] < lengths[None, :])[:, :, None]
    np.testing.assert_allclose(logits, theirs, rtol=1e-9, atol=1e-9)


def test_the_language_model_twin_has_charlms_parameters():
    torch = pytest.importorskip("torch")
    from charlm.bench import torch_side
    from charlm.lm.model import Model

    cfg = B.BenchConfig(cell="gru", layers=2, hidden=6, vocab=9, embed=5)
    ours = Model(cfg.configs()[0], np.float64).init_weights(np.random.default_rng(0))
    twin = torch_side.LanguageModel(cfg).double()
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}, strict=True)
    x = np.random.default_rng(1).integers(0, 9, (4, 3))
    logits, _, _ = ours.forward(x, ours.init_state(3))
    with torch.no_grad():
        theirs, _ = twin(torch.from_numpy(x), torch.zeros(2, 3, 6, dtype=torch.float64))
    np.testing.assert_allclose(logits, theirs.numpy().reshape(-1, 9), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("task", ["classify", "tag"])
def test_bench_task_runs_on_tiny_shapes_beside_torch(task):
    pytest.importorskip("torch")
    args = ["bench", "--task", task, "--compare", "torch"] + [
        f"--{k.replace('_', '-')}={v}" for k, v in TINY_SEQ.items()]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(ln) for ln in result.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1 and lines[0]["task"] == task and lines[0]["config"]["directions"] == 2
    res = lines[0]
    assert res["train"]["chars_per_s"] > 0 and res["torch"]["train_chars_per_s"] > 0
    assert res["ratio"]["train"] == pytest.approx(res["train"]["chars_per_s"] / res["torch"]["train_chars_per_s"],
                                                  rel=1e-3, abs=5e-4)
    assert "FMA limit" in result.stderr and "GFLOP/s" in result.stderr


def test_task_and_config_must_agree():
    result = CliRunner().invoke(main, ["bench", "--task", "classify", "-c", "b"])
    assert result.exit_code == 2 and "another task" in result.stderr


class _Event:
    def __init__(self, start, name="k", args=()):
        fn = type("F", (), {"__module__": "charlm.kernels.x", "__qualname__": name})
        self.is_start, self.data = start, {"dispatcher": type("D", (), {"py_func": fn})(), "args": args}


def test_compile_times_separate_nested_compilations():
    clock = iter([0.0, 1.0, 4.0, 10.0]).__next__  # outer starts at 0, inner runs 1..4, outer ends at 10
    times = CompileTimes(clock=clock, cpu=lambda: 0.0)
    times.on_start(_Event(True, "outer", ("array(float32, 2d, C)",)))
    times.on_start(_Event(True, "inner"))
    times.on_end(_Event(False))
    times.on_end(_Event(False))
    inner, outer = times.records
    assert (inner["wall_s"], inner["self_s"], inner["depth"]) == (3.0, 3.0, 1)
    assert (outer["wall_s"], outer["self_s"], outer["depth"]) == (10.0, 7.0, 0)
    total = summarise(times.records)
    assert total["compile_wall_s"] == 10.0 and total["compiles"] == 2
    assert [k["kernel"] for k in total["kernels"]] == ["charlm.kernels.x.outer", "charlm.kernels.x.inner"]
    assert total["kernels"][0]["args"] == "array(float32, 2d, C)"


def test_the_first_run_caption_gives_the_started_processes_cpu_and_memory():
    from rich.console import Console

    from charlm.cli.bench_view import first_run_table

    res = {"args": ["train", "names.txt"], "kernels": [], "wall_s": 8.4, "cpu_s": 15.0, "helpers_cpu_s": 6.6,
           "peak_rss_mb": 343.0, "helpers_peak_rss_mb": 221.0, "compiles": 46, "compile_wall_s": 5.0,
           "compile_cpu_s": 5.1, "split": {"compile_s": 7.9}}
    console = Console(width=400, record=True)
    console.print(first_run_table(res))
    text = " ".join(console.export_text().split())   # the caption wraps at the table's width
    assert "15.0 s CPU (user+sys; processes it started: 6.6 s)" in text
    assert "peak RSS 343 MB (processes it started: 221 MB)" in text
