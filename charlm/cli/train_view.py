"""The training view: a live rich display on a terminal, plain log lines anywhere else.

``TrainView.update(event)`` takes the Trainer's events as they come. On a terminal a
``rich.live.Live`` redraws the stats, a budget bar, the learning curve (rebuilt at each
evaluation) and the latest sample four times a second; elsewhere (CI, a pipe, a file) each
evaluation and a step every ``LOG_SECONDS`` of training is one plain line.
"""
from __future__ import annotations

import math
from pathlib import Path

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..training.events import CheckpointEvent, DoneEvent, EvalEvent, SampleEvent, StepEvent, WarningEvent
from .common import shell_command
from .render import fmt_count, fmt_num, fmt_time, kv_table, loss_plot, split_text
from .safe_text import printable, printable_text

PLOT_HEIGHT = 14
MAX_TRAIN_POINTS = 300
LOG_SECONDS = 10.0       # without a terminal: one step line this often   # step losses are averaged into at most this many points for the plot


class TrainView:
    def __init__(self, console, trainer, *, live: bool):
        self.console, self.trainer, self.live = console, trainer, live
        self.char = trainer.corpus.tokenizer.level == "char"
        self.unit = "chars/s" if self.char else "tokens/s"
        # without held-out text the Trainer judges by the training loss: never call that "val"
        self.val = "val" if trainer.corpus.val.size > 1 else "avg train"
        self.last_line = -math.inf       # elapsed seconds at the last plain step line
        self.step: StepEvent | None = None
        self.eval: EvalEvent | None = None
        self.best: EvalEvent | None = None
        self.done: DoneEvent | None = None
        self.sample: SampleEvent | None = None
        self.rate = None                  # smoothed tokens per second
        self.losses: list[tuple[int, float]] = []
        self.evals: list[tuple[int, float]] = []
        self.plot = Text("")
        self.notice = ""
        self._live: Live | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self):
        if self.live:
            self._live = Live(self, console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.__exit__(*exc)
        return False

    def note(self, message: str) -> None:
        """A one-line notice (e.g. 'stopping after this step')."""
        self.notice = message
        if not self.live:
            self.console.print(Text(message, style="yellow"), soft_wrap=True)

    # -- events -----------------------------------------------------------------------------------

    def update(self, event) -> None:
        if isinstance(event, StepEvent):
            self.step = event
            self.rate = event.tokens_per_s if self.rate is None else 0.9 * self.rate + 0.1 * event.tokens_per_s
            self.losses.append((event.step, event.loss))
            if not self.live and (event.elapsed - self.last_line >= LOG_SECONDS or event.step == 1):
                self.last_line = event.elapsed
                self.console.print(self._step_line(), soft_wrap=True, highlight=False)
        elif isinstance(event, EvalEvent):
            self.eval = event
            if event.improved:
                self.best = event
            self.evals.append((event.step, event.value))
            if self.live:
                self.plot = loss_plot(self._train_points(), self.evals, self.console.width - 2, PLOT_HEIGHT)
            else:
                self.console.print(self._eval_line(), soft_wrap=True, highlight=False)
        elif isinstance(event, SampleEvent):
            self.sample = event
            if not self.live:
                self.console.print(f"sample at step {event.step}:", highlight=False)
                self.console.print(Text("  " + printable_text(event.text).replace("\n", "\n  ")), soft_wrap=True)
        elif isinstance(event, WarningEvent):
            self.console.print(Text.assemble(("warning: ", "yellow"), printable(event.message)), soft_wrap=True)
        elif isinstance(event, DoneEvent):
            self.done = event
        elif isinstance(event, CheckpointEvent):
            pass

    def _validating(self) -> bool:
        """The Trainer says when it evaluates (its cadence is its own: steps, time or auto)."""
        return bool(getattr(self.trainer, "evaluating", False)) and self.done is None

    def _train_points(self):
        from ..lm.describe import bucket_means

        return bucket_means(self.losses, MAX_TRAIN_POINTS)

    # -- plain lines ----------------------------------------------------------------------------

    def _progress(self):
        s = self.step
        return self.trainer.progress(s.step, s.epoch, s.elapsed) if s else 0.0

    def _eta(self) -> float | None:
        f, s = self._progress(), self.step
        return s.elapsed * (1 - f) / f if s and f > 0 else None

    def _step_line(self) -> str:
        s = self.step
        return (f"step {s.step:,} | epoch {s.epoch:.2f} | loss {s.loss:.3f} | grad {s.grad_norm:.2f} | "
                f"lr {s.lr:.2e} | {fmt_count(self.rate)} {self.unit} | {fmt_time(s.elapsed)} "
                f"(eta {fmt_time(self._eta())})")

    def _eval_line(self) -> str:
        e = self.eval
        bpc = f" | bpc {e.scores['val_bpc']:.3f}" if e.scores.get("val_bpc") is not None else ""
        mark = " | new best" if e.improved else f" | best {e.best_value:.4f}"
        return (f"eval step {e.step:,} | train {e.train_loss:.4f} | {self.val} {e.value:.4f}{bpc} | "
                f"ppl {fmt_num(e.scores['val_ppl'])}{mark}")

    # -- live display ---------------------------------------------------------------------------

    def __rich__(self):
        s, e = self.step, self.eval
        if s is None:
            return Text("compiling kernels and taking the first step…", style="dim")
        val = "–" if e is None else f"{e.value:.4f}"
        best = "–" if e is None else f"{e.best_value:.4f}"
        stats = _grid([
            ("step", f"{s.step:,}", "train loss", f"{s.loss:.4f}", f"{self.val} loss", val, f"best {self.val}", best),
            ("epoch", f"{s.epoch:.2f}", "perplexity", "–" if e is None else fmt_num(e.scores["val_ppl"]),
             "bits/char", "–" if e is None or e.scores.get("val_bpc") is None else fmt_num(e.scores["val_bpc"]),
             self.unit, fmt_count(self.rate)),
            ("elapsed", fmt_time(s.elapsed), "eta", fmt_time(self._eta()),
             "grad norm", f"{s.grad_norm:.3f}", "lr", f"{s.lr:.2e}"),
        ])
        bar = Table.grid(padding=(0, 1))
        bar.add_column()
        bar.add_column(no_wrap=True)
        bar.add_row(ProgressBar(total=1.0, completed=self._progress(), width=self.console.width - 10),
                    f"{self._progress():4.0%}")
        parts = [stats, bar, self.plot]
        if e is not None and e.time_split is not None:
            parts.append(Text("time    " + split_line(e.time_split, e.elapsed), style="dim"))
        if self.sample is not None:
            text = self.sample.text.strip("\n")
            lines = text.split("\n")[:6]
            parts.append(Panel(Text(printable_text("\n".join(lines))), title=f"sample at step {self.sample.step:,}",
                               title_align="left", border_style="dim"))
        if self._validating():
            parts.append(Text("measuring the validation loss…" if self.val == "val" else "evaluating…",
                              style="dim"))
        if self.notice:
            parts.append(Text(self.notice, style="yellow"))
        return Group(*parts)


def _grid(rows) -> Text:
    """Label/value pairs in aligned columns, as one Text: the live view redraws four times a
    second on the training thread's time, and a rich Table costs many times as much to lay out."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = Text(no_wrap=True, overflow="ellipsis")
    for r, row in enumerate(rows):
        for i in range(0, len(row), 2):
            text.append(row[i].ljust(widths[i]), style="cyan")
            text.append(" " + row[i + 1].rjust(widths[i + 1]) + ("   " if i + 2 < len(row) else ""))
        if r + 1 < len(rows):
            text.append("\n")
    return text


def split_line(split, elapsed: float) -> str:
    """How the run's time split (a training.events.TimeSplit), as ``charlm info`` shows it."""
    return split_text(split.to_dict() | {"elapsed": elapsed}) or "–"


def summary_table(view: TrainView, run: str, parameters: int) -> Table:
    """The table printed when training ends (``run``: the run directory as the user should type it)."""
    from ..runs.find import LAST_FILE, MODEL_FILE

    d, b = view.done, view.best
    rows = [
        ("finished", d.message),
        ("steps", f"{d.step:,}"),
        ("time", fmt_time(d.elapsed)),
        ("time split", None if d.time_split is None else split_line(d.time_split, d.elapsed)),
        ("parameters", f"{parameters:,}"),
    ]
    if b is None and math.isfinite(d.best_value):  # resumed, and no better than before
        rows += [(f"best {view.val} loss", f"{d.best_value:.4f} nats per token (before this resume)")]
    if b is not None:
        rows += [(f"best {view.val} loss", f"{b.value:.4f} nats per token (step {b.step:,})"),
                 ("best perplexity", fmt_num(b.scores["val_ppl"])),
                 ("best bits/char", None if b.scores.get("val_bpc") is None else fmt_num(b.scores["val_bpc"]))]
    saved = {name: (view.trainer.run_dir / name).exists() for name in (MODEL_FILE, LAST_FILE)}
    rows += [("best model", str(Path(run) / MODEL_FILE) if saved[MODEL_FILE] else None),
             ("resume from", str(Path(run) / LAST_FILE) if saved[LAST_FILE] else None),
             ("sample it", Text(shell_command("charlm", "sample", run), style="bold green") if saved[MODEL_FILE] else None)]
    return kv_table(rows, title="training summary")
