"""Rich renderables for ``charlm inspect``: lag-curve plots, spectra, the memory table, neuron text.

Formatting only: every number comes from ``charlm.inspect``. Plots are plotext strings wrapped in
``rich.text.Text.from_ansi``, as in render.py.
"""
from __future__ import annotations

import math

import numpy as np
from rich.table import Table
from rich.text import Text


def _figure(width: int, height: int):
    import plotext as plt

    fig = plt.figure
    fig.clear()
    fig.theme("simple")
    fig.plot_size(max(width, 40), max(height, 10))
    return fig


def _room_for_legend(fig, x_lo: float, x_hi: float, labels, width: int) -> float:
    """Widen the x axis so that the legend box (top right) sits beside the data, not on it.
    Returns the new right end."""
    box = max(len(s) for s in labels) + 8                     # marker, padding and border
    frac = min(box / max(width - 8, 1), 0.5)
    x_max = x_hi + (x_hi - x_lo) * frac / (1 - frac)
    fig.ruler("x").lim(x_lo, x_max)
    return x_max


def lag_plot(curves, width: int, height: int = 20) -> Text:
    """Mean ‖∂L_t/∂h_{t−k}‖ against the lag k on a log scale: one line per model and layer.
    (log10 of the values on a linear axis, labelled in powers of ten: plotext's own log axis
    loses the lines when its ticks are set.)"""
    n = sum(len(c.norms) for c in curves)
    cells = [c.cell for c in curves]
    short = len(set(cells)) == len(cells)                  # one curve per cell: name them by cell
    fig = _figure(width, max(height, 2 * n + 10))         # room for the legend box
    ys = []
    for c in curves:
        for layer, norms in enumerate(c.norms):
            y = np.log10(np.maximum(norms, 1e-300))
            ys += y.tolist()
    hi = math.ceil(max(ys))
    lo = max(math.floor(min(ys)), hi - 15)                 # 15 decades: lower values sit on the floor
    labels = []
    for c in curves:
        for layer, norms in enumerate(c.norms):
            y = np.maximum(np.log10(np.maximum(norms, 1e-300)), lo)
            signal = fig.signal(c.lags.tolist(), y.tolist(), marker="braille")
            signal.lines()
            labels.append((c.cell if short else c.label) + (f" L{layer + 1}" if len(c.norms) > 1 else ""))
            signal.label(labels[-1])
            fig.draw(signal)
    last = max(int(c.lags[-1]) for c in curves)
    x_max = _room_for_legend(fig, 0, last, labels, width)
    step = next(n for n in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 10 ** 9) if n * 6 >= last)
    fig.ruler("x").ticks(*zip(*[(k, str(k)) for k in range(0, last + 1, step)]))
    step = max(1, math.ceil((hi - lo) / 6))
    powers = list(range(lo, hi + 1, step))
    ruler = fig.ruler("y")
    ruler.lim(lo, hi)
    ruler.ticks(powers, [f"1e{p}" for p in powers])
    fig.legend(x=x_max, y=hi, ha="right", va="top", relative=True)
    fig.label("lag k (steps back from the loss)", axis=0)
    fig.title("gradient flow: mean ‖∂L_t/∂h_(t−k)‖ (log scale)")
    return Text.from_ansi(fig.build().string())


def _sci(x: float) -> str:
    """1.3e-4 style: short enough for a table of many columns."""
    if x == 0 or not math.isfinite(x):
        return str(x)
    e = math.floor(math.log10(abs(x)))
    return f"{x:.2f}" if -2 <= e <= 1 else f"{x / 10 ** e:.1f}e{e}"


def lag_table(curves) -> Table:
    table = Table(title="mean ‖∂L_t/∂h_(t−k)‖ at lag k; × per step: geometric fit over k ≥ 1",
                  title_justify="left", header_style="bold")
    table.add_column("model", no_wrap=True)
    table.add_column("L", justify="right")
    last = max(int(c.lags[-1]) for c in curves)
    lags = sorted({k for k in (0, 5, 10, 25, 50, 100, last) if k <= last})
    for k in lags:
        table.add_column(f"k={k}", justify="right", no_wrap=True, min_width=6)
    table.add_column("× per step", justify="right", no_wrap=True)
    for c in curves:
        rate = c.rate()
        for layer in range(len(c.norms)):
            cells = [_sci(c.norms[layer, k]) if k <= c.lags[-1] else "" for k in lags]
            table.add_row(c.label, str(layer + 1), *cells,
                          Text(f"{rate[layer]:.3f}", style="red" if rate[layer] > 1 else ""))
    return table


def spectra_table(reports) -> Table:
    table = Table(title="largest singular values of the recurrent matrices (σ > 1 can blow gradients up, "
                        "σ < 1 shrinks them)", title_justify="left", header_style="bold")
    for name, justify in (("model", "left"), ("L", "right"), ("σ₁ per gate block", "left"),
                          ("whole: σ₁ σ₂ σ₃", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    for r in reports:
        layers = sorted({s.layer for s in r.spectra})
        for layer in layers:
            blocks = [s for s in r.spectra if s.layer == layer]
            per = Text()
            for s in blocks:
                if s.block != "all":
                    per.append(f"{s.block} ", style="dim")
                    per.append(f"{s.values[0]:.3g}  ", style="red" if s.values[0] > 1.05 else "")
            whole = next((s for s in blocks if s.block == "all"), blocks[0] if len(blocks) == 1 else None)
            table.add_row(r.curves.label, str(layer + 1), per,
                          " ".join(f"{v:.3g}" for v in whole.values[:3]) if whole is not None else "")
    return table


def memory_table(result) -> Table:
    table = Table(title=f"accuracy on the closer, d characters after its opener (chance {result.chance:.0%})",
                  title_justify="left", header_style="bold")
    table.add_column("cell")
    table.add_column("params", justify="right")
    for d in result.distances:
        table.add_column(f"d={d}", justify="right")
    table.add_column("train s", justify="right")
    for row, secs in zip(result.table(), result.seconds.sum(axis=1)):
        cells = [Text(f"{a:.0%}", style="green" if a > 0.9 else ("red" if a < result.chance + 0.15 else "yellow"))
                 for a in row[2:]]
        table.add_row(row[0], f"{row[1]:,}", *cells, f"{secs:.0f}")
    return table


def memory_plot(result, width: int, height: int = 16) -> Text:
    fig = _figure(width, height)
    x = np.log2(result.distances).tolist()
    for cell, acc in zip(result.cells, result.accuracy):
        signal = fig.signal(x, (100 * acc).tolist(), marker="braille")
        signal.lines()
        signal.label(cell)
        fig.draw(signal)
    x_max = _room_for_legend(fig, x[0], x[-1], result.cells, width)
    fig.ruler("x").ticks(x, [str(d) for d in result.distances])
    fig.ruler("y").lim(0, 105)
    fig.ruler("y").ticks([0, 25, 50, 75, 100], ["0", "25", "50", "75", "100"])
    fig.legend(x=x_max, y=105, ha="right", va="top", relative=True)
    fig.label("distance d (log scale)", axis=0)
    fig.title("accuracy % on the dependent character")
    return Text.from_ansi(fig.build().string())


def neuron_table(report) -> Table:
    from ..inspect.neurons import PROPERTIES

    table = Table(title=f"units that track text properties ({'cell state c' if report.kind == 'c' else 'hidden state h'})",
                  title_justify="left", header_style="bold")
    for name, justify in (("property", "left"), ("unit", "left"), ("r", "right"), ("meaning", "left")):
        table.add_column(name, justify=justify, style="dim" if name == "meaning" else None)
    shown = set()
    for m in report.matches:
        first = m.property not in shown
        shown.add(m.property)
        table.add_row(m.property if first else "", f"L{m.layer + 1}:{m.unit}", f"{m.r:+.2f}",
                      PROPERTIES[m.property] if first else "")
    return table


def _rgb(t: float) -> str:
    """Background for t in [-1, 1]: blue (negative) through white to red (positive)."""
    if t >= 0:
        rgb = (255, int(255 * (1 - t)), int(255 * (1 - t)))
    else:
        rgb = (int(255 * (1 + t)), int(255 * (1 + t)), 255)
    return f"black on #{rgb[0]:02x}{rgb[1]:02x}{rgb[2]:02x}"


BARS = "▁▂▃▄▅▆▇█"


def neuron_text(tokens, values, title: str, bars: bool = False) -> Text:
    """Each token on a background from blue (low) through white to red (high), over the unit's
    own range in ``values`` (1st to 99th percentile: a cell state need not be centred on 0). With
    ``bars`` (for output without colours) every line of text is followed by a line of ▁…█, one
    per character, on the same scale."""
    lo, hi = (float(q) for q in np.percentile(values, [1, 99]))   # the unit's range here, robustly
    mid, half = (lo + hi) / 2, (hi - lo) / 2 or 1.0
    text = Text(title + "\n", style="bold")
    line, levels = Text(), []
    for tok, v in zip(tokens, values):
        t = max(-1.0, min(1.0, (float(v) - mid) / half))
        parts = tok.split("\n")
        for k, part in enumerate(parts):
            if k > 0:                                       # a newline: end the line (uncoloured)
                line.append(" ", style=_rgb(t))
                levels.append(t)
                text.append_text(line)
                text.append("\n")
                if bars:
                    text.append("".join(BARS[round((x + 1) / 2 * 7)] for x in levels) + "\n", style="dim")
                line, levels = Text(), []
            if part:
                line.append(part, style=_rgb(t))
                levels += [t] * len(part)
    text.append_text(line)
    if bars and levels:
        text.append("\n" + "".join(BARS[round((x + 1) / 2 * 7)] for x in levels), style="dim")
    legend = Text("\nactivation: ")
    for v in (-1, -0.5, 0, 0.5, 1):
        legend.append(f" {mid + v * half:+.2f} ", style=_rgb(v))
    if bars:
        legend.append(f"   bars: {BARS[0]} ≤ {lo:+.2f} … {BARS[-1]} ≥ {hi:+.2f}")
    text.append_text(legend)
    return text
