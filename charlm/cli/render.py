"""Rich renderables built from the library's results: the training view, tables, plots, heat maps.

Nothing here computes a model quantity; it formats what the library returns. Learning curves
are drawn by plotext (a maintained terminal plotting library with no dependencies that renders
braille/ASCII plots to a string), wrapped in ``rich.text.Text.from_ansi``.
"""
from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .safe_text import printable, printable_text

SPECIAL_GLYPHS = {"<eos>": "⏎\n", "<unk>": "�"}        # in the surprisal heat map
VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}   # whitespace in vocabulary listings


# -- numbers ----------------------------------------------------------------------------------


def fmt_time(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = int(round(seconds))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_num(x, digits=3) -> str:
    """``x`` with ``digits`` decimals; scientific notation from a million up (a perplexity can be
    10^300, which fixed-point would print as a 300-digit integer)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}e}" if abs(x) >= 1e6 else f"{x:.{digits}f}"


def fmt_count(n) -> str:
    """12345 -> 12.3k, 1234567 -> 1.23M."""
    if n is None:
        return "–"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}" if isinstance(n, float) else str(n)


def fmt_bytes(n: int) -> str:
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def model_line(config, parameters: int) -> str:
    tied = ", tied" if config.tie_weights else ""
    drop = f", dropout {config.dropout:g}" if config.dropout else ""
    return (f"{config.cell.upper()} {config.layers}×{config.hidden}, embed {config.embed}{tied}{drop} · "
            f"{parameters:,} parameters")


def corpus_line(stats: dict) -> str:
    unit = "chars" if stats["level"] == "char" else "tokens"
    val = f"{fmt_count(stats['val_tokens'])} validation" if stats["val_tokens"] else "no validation text"
    eos = f"<eos> per {stats['eos']}" if stats["eos"] != "none" else "no <eos>"
    return f"{fmt_count(stats['train_tokens'])} training {unit}, {val} · vocabulary {stats['vocab_size']} · {eos}"


# -- plots ------------------------------------------------------------------------------------


def loss_plot(train_points, val_points, width: int, height: int) -> Text:
    """Training loss (x=step) as a braille line and validation loss as dots, from plotext."""
    if not train_points and not val_points:
        return Text("(the learning curve appears after the first steps)", style="dim")
    import plotext as plt

    fig = plt.figure
    fig.clear()
    fig.theme("simple")
    fig.plot_size(max(width, 30), max(height, 8))
    ys = []
    for points, label, marker in ((train_points, "train", "braille"), (val_points, "val", "dot")):
        if points:
            signal = fig.signal([p[0] for p in points], [p[1] for p in points], marker=marker)
            signal.lines()
            signal.label(label)
            fig.draw(signal)
            ys += [p[1] for p in points]
    xs = [p[0] for p in train_points + val_points]
    fig.legend(x=max(xs), y=max(ys), ha="right", va="top", relative=True)
    fig.label("step", axis=0)
    fig.title("loss, nats per token")
    return Text.from_ansi(fig.build().string())


# -- tables -----------------------------------------------------------------------------------


class Lines(Group):
    """Lines that must never be wrapped or cropped (paths, commands): print with soft_wrap=True."""


def kv_table(rows, title=None) -> Lines:
    """(name, value) pairs, one per line, names aligned; values that are None are left out.
    Plain lines rather than a table, so that a path or a command is never cut at the terminal's
    width (print with ``soft_wrap=True``; the terminal wraps it, and a copy gets it whole)."""
    rows = [(name, value) for name, value in rows if value is not None]
    width = max((len(name) for name, _ in rows), default=0)
    lines = [Text(title, style="bold")] if title else []
    for name, value in rows:
        line = Text(name.ljust(width + 2), style="cyan")
        line.append_text(value if isinstance(value, Text) else Text(printable(value)))  # no markup
        lines.append(line)
    return Lines(*lines)


def eval_table(result: dict, checkpoint: str, files) -> list:
    char = result.get("level", "char") == "char"
    title = Text(f"{', '.join(files)} · scored by {checkpoint}")
    table = Table(show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    unit = "character" if char else "word"
    table.add_row("loss", fmt_num(result["loss_nats"], 4), f"nats per {unit}: mean −ln p(next {unit})")
    table.add_row("bits per char", fmt_num(result["bits_per_char"], 4),
                  "loss / ln 2: bits to encode each character" if char else
                  "total bits / characters of the text: compares with character models")
    table.add_row("perplexity", fmt_num(result["perplexity"]),
                  f"exp(loss): as unsure as a fair choice among this many {unit}s")
    table.add_row("tokens", f"{result['tokens']:,}", "predictions scored")
    table.add_row("out of vocabulary", f"{result['oov']:,}", "tokens the model has never seen (scored as <unk>)")
    if result.get("dynamic_loss_nats") is not None:
        table.add_section()
        table.add_row("dynamic loss", fmt_num(result["dynamic_loss_nats"], 4),
                      "another protocol: the model trains on each window after scoring it")
        table.add_row("dynamic bits/char", fmt_num(result["dynamic_bits_per_char"], 4),
                      "the same per character (not comparable with static figures)")
    return [Lines(title), table]


def surprisal_text(tokens, bits, level: str, total: int) -> Group:
    """``tokens`` (the start of a text of ``total`` tokens), each on a background from green
    (expected) to red (surprising) by its surprisal in ``bits``."""
    text = Text()
    for i, (tok, b) in enumerate(zip(tokens, bits)):
        if level == "word" and i and not text.plain.endswith("\n"):
            text.append(" ")
        text.append(SPECIAL_GLYPHS.get(tok) or printable_text(tok), style=_heat(b))
    if total > len(tokens):
        text.append(f" … ({total - len(tokens):,} more tokens)", style="dim")
    legend = Text("surprisal in bits, −log₂ p(token):")
    for b in (0, 1, 2, 4, 6, 8, 10):
        legend.append(" ")
        legend.append(f" {b} ", style=_heat(b))
    return Group(legend, Text(""), text)


def _heat(bits: float) -> str:
    """Background colour for a surprisal: green below 1 bit, yellow near 4, red from 10."""
    t = min(max(bits, 0.0) / 10.0, 1.0)
    if t < 0.4:
        r, g = int(40 + 200 * t / 0.4), 160
    else:
        r, g = 240, int(160 * (1 - (t - 0.4) / 0.6))
    return f"black on #{r:02x}{g:02x}30"


def split_text(split: dict | None) -> str | None:
    """'training 94% · evaluation 3% · checkpoints 1% · other 2%' from seconds ``train_s``,
    ``eval_s``, ``checkpoint_s``, ``compile_s`` (shown apart: not part of the budget) and the
    ``elapsed`` total."""
    if not split or not split["elapsed"]:
        return None
    total = split["elapsed"]
    parts = [("training", split["train_s"]), ("evaluation", split["eval_s"]), ("checkpoints", split["checkpoint_s"])]
    parts.append(("other", max(total - sum(v for _, v in parts), 0.0)))
    return " · ".join(f"{name} {v / total:.0%}" for name, v in parts) + (
        f" (+ {fmt_time(split['compile_s'])} loading kernels)" if split["compile_s"] >= 1 else "")


def info_view(info: dict, width: int) -> list:
    """``charlm info``: configuration, vocabulary, training history, files (print with ``show``)."""
    from ..config import ModelConfig, from_dict
    from ..lm.finetune import describe as describe_init

    mcfg = from_dict(ModelConfig, info["model_config"])
    best, tcfg, vocab = info["best"] or {}, dict(info["train_config"]), info["vocab"]
    judged = "validation" if info.get("validation", True) else "training loss (no validation text)"
    head = kv_table([
        ("run", info["run"]),
        ("model", model_line(mcfg, info["parameters"])),
        ("trained", f"{info['step'] or 0:,} steps in {fmt_time(info['elapsed'])}"),
        (f"best {judged}", None if not best else
         f"loss {fmt_num(best['val_loss'], 4)} nats · perplexity {fmt_num(best['val_ppl'])}"
         + (f" · {fmt_num(best['val_bpc'])} bits/char" if best.get("val_bpc") is not None else "")
         + f" (step {best['step']:,})"),
        ("time split", split_text(info.get("time_split"))),
        ("corpus", ", ".join(info["sources"]) or None),
        ("started from", describe_init(info.get("init_from"))),
        ("vocabulary", f"{vocab['size']} {vocab['level']} tokens"
                       + (f" (split on {vocab['split']})" if vocab.get("split") else "")
                       + f", <eos> per {vocab['eos']}: "
                       + " ".join(VISIBLE.get(t, t) for t in vocab["first_tokens"])
                       + (" …" if vocab["size"] > len(vocab["first_tokens"]) + 2 else "")),
    ])
    if tcfg.get("val_file"):          # a separate validation file replaces the fraction
        tcfg.pop("val_fraction", None)
    else:
        tcfg.pop("val_file", None)
    config = Table(title="configuration", title_justify="left", title_style="bold", box=None,
                   show_header=False, padding=(0, 2, 0, 0))
    items = [(k, v) for k, v in info["model_config"].items() if k != "vocab_size"] + list(tcfg.items())
    for _ in range(3):
        config.add_column(style="cyan", no_wrap=True)
        config.add_column()
    for i in range(0, len(items), 3):
        row = items[i:i + 3]
        config.add_row(*[Text(printable(x)) for kv in row for x in kv])
    files = Table(title="files", title_justify="left", title_style="bold", box=None, show_header=False,
                  padding=(0, 2, 0, 0))
    files.add_column()
    files.add_column(justify="right")
    for f in info["files"]:
        files.add_row(Text(printable(f["name"])), fmt_bytes(f["bytes"]))
    history = info["history"]
    plot = loss_plot([(r["step"], r["loss"]) for r in history["step"] if math.isfinite(r["loss"])],
                     [(r["step"], r["val_loss"]) for r in history["eval"]
                      if r.get("val_loss") is not None and math.isfinite(r["val_loss"])],
                     width - 2, 16)
    return [head, Text(""), config, Text(""), plot, Text(""), files]


def show(console, parts) -> None:
    """Print renderables in order; ``Lines`` (paths, commands) are never wrapped or cropped, and
    a table is never drawn narrower than its cells' longest words (on a narrow terminal, or with
    ``COLUMNS=10``, rich would otherwise shrink the columns until the numbers vanish: wider
    lines wrap in the terminal but keep every figure)."""
    from rich.measure import Measurement

    for part in parts:
        if not isinstance(part, Table):
            console.print(part, soft_wrap=isinstance(part, Lines))
            continue
        narrow = console.width  # print() never draws wider than the console: widen it for the table
        console.width = max(narrow, Measurement.get(console, console.options.update_width(10_000), part).minimum)
        try:
            console.print(part)
        finally:
            console.width = narrow


def budget_text(t, seconds) -> str:
    """The budget of training configuration ``t`` in words (``seconds(s)`` shows a duration);
    none given is the default time, and says so; a weight average over the budget's tail is named."""
    from ..training.budget import DEFAULT_TIME_BUDGET

    given = ", ".join(b for b in (t.steps and f"{t.steps:,} steps", t.epochs and f"{t.epochs:g} epochs",
                                  t.time_budget and f"{seconds(t.time_budget)} of training") if b)
    text = given or f"{seconds(DEFAULT_TIME_BUDGET)} of training (the default)"
    average = getattr(t, "average", 0.0)
    # evaluations and the best model then score the mean, not the weights the step reached
    return text + (f", evaluations score the weights' mean over its last {average:.0%}" if average else "")
