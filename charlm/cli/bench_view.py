"""``charlm bench``'s tables: charlm beside PyTorch with ratios, GFLOP/s and the share of the FMA limit;
the first run's compile profile."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text

MEASURES = [("train", "train chars/s"), ("gflops", "train GFLOP/s"), ("sample", "sample chars/s"),
            ("peak_rss", "peak RSS MB"), ("isa", "instruction set")]


def side(result: dict | None) -> dict:
    """One side's figures by measure (None where not measured); ``isa``: what charlm's kernels were
    compiled for, or PyTorch's CPU capability."""
    from ..bench.isa import describe

    result = result or {}
    train, sample = result.get("train") or {}, result.get("sample") or {}
    isa = describe(result["compiled_for"]) if "compiled_for" in result else \
        (result.get("env") or {}).get("cpu_capability")
    return {"train": train.get("chars_per_s"), "gflops": train.get("gflops_achieved"),
            "share": train.get("fraction_of_peak"), "sample": sample.get("chars_per_s"),
            "peak_rss": result.get("peak_rss_mb"), "isa": isa}


def comparison_table(rows, targets: dict) -> Table:
    """One section per configuration, one row per measure: charlm, PyTorch, their ratio and the
    target (``targets[name][measure]``) where there is one. rows: (name, cfg, charlm result, the
    torch figures by measure or None)."""
    compare = any(t is not None for *_, t in rows)
    table = Table(title="charlm bench" + (" vs PyTorch, same machine, interleaved" if compare else ""),
                  title_justify="left")
    for title, justify in [("config", "left"), ("measure", "left"), ("charlm", "right")] + (
            [("PyTorch", "right"), ("ratio", "right"), ("target", "right")] if compare else []):
        table.add_column(title, justify=justify)
    for name, cfg, result, theirs in rows:
        ours, ratio = side(result), result.get("ratio", {})
        measures = [(k, t) for k, t in MEASURES if ours[k] is not None or (theirs or {}).get(k) is not None]
        label = [f"{name}: {cfg.label().split(' B')[0]}", f"B{cfg.batch} T{cfg.seq_len} V{cfg.vocab}"]
        for i, (key, title) in enumerate(measures):
            cells = [label[i] if i < len(label) else "", title, _cell(key, ours)]
            if compare:
                goal = targets.get(name, {}).get(key)
                r = ratio.get(key)
                met = r is not None and goal is not None and (r <= goal if key == "peak_rss" else r >= goal)
                cells += [_cell(key, theirs or {}), f"{r:.2f}x" if r is not None else "" if key == "isa" else "-",
                          "" if goal is None else (("<= " if key == "peak_rss" else ">= ") + f"{goal:g}x"
                                                   + (" [green]ok[/]" if met else " [red]no[/]"))]
            table.add_row(*cells, end_section=i == len(measures) - 1)
    return table


def _cell(key, figures) -> str:
    value = figures.get(key)
    if value is None:
        return "-"
    if key == "isa":
        return Text(str(value))  # another process's words: never read as markup
    if key == "gflops":
        share = figures.get("share")
        return f"{value:,.1f}" + (f" ({share:.0%})" if share is not None else "")
    return f"{value:,.0f}"


def first_run_table(res: dict, top: int = 12) -> Table:
    """The first run's totals and its most expensive compilations (self time, nested ones apart)."""
    split = res.get("split") or {}
    table = Table(title=Text(f"first run: charlm {' '.join(res['args'][:1])} ... --steps 1 on an empty Numba cache"),
                  title_justify="left")
    table.add_column("kernel (self time: without the kernels it compiled inside)", overflow="fold")
    table.add_column("signature", overflow="fold", max_width=60)
    table.add_column("wall s", justify="right")
    table.add_column("CPU s", justify="right")
    for k in res["kernels"][:top]:
        table.add_row(Text(k["kernel"].removeprefix("charlm.")), Text(k["args"]), f"{k['self_s']:.2f}",
                      f"{k['self_cpu_s']:.2f}")
    rest = res["kernels"][top:]
    if rest:
        table.add_row(f"{len(rest)} more", "", f"{sum(k['self_s'] for k in rest):.2f}",
                      f"{sum(k['self_cpu_s'] for k in rest):.2f}", end_section=True)
    table.caption = (f"total {res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} s CPU (user+sys; processes it started: "
                     f"{res.get('helpers_cpu_s', 0):.1f} s), peak RSS {res['peak_rss_mb']:,.0f} MB (processes it "
                     f"started: {res['helpers_peak_rss_mb']:,.0f} MB); "
                     f"{res['compiles']} compilations in the run's process, {res['compile_wall_s']:.1f} s wall / "
                     f"{res['compile_cpu_s']:.1f} s CPU; warm-up before the first step {split.get('compile_s', 0):.1f} s")
    table.caption_justify = "left"
    return table
