"""How classifier and tagger commands look: the training progress, the evaluation report with its
per-class table and confusion matrix, and predictions. Labels, tokens and texts come from files,
so every one of them goes through ``printable`` before it reaches the terminal."""
from __future__ import annotations

import time

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..training.budget import EvalCadence
from .common import shell_command, show_path
from .render import budget_text
from .safe_text import printable

CONFUSION_MAX_LABELS = 20   # a larger confusion matrix is left to --json


def _p(text) -> str:
    return escape(printable(text))


def header_lines(trainer) -> list[str]:
    c, t = trainer.mcfg, trainer.tcfg
    spec = trainer.data_spec
    kind = encoder_text(c)
    kind = f"{c.members} × ({kind}{', own n-gram hashes' if c.member_salts and (c.ngrams or c.wide_ngrams) else ''})" \
        if c.members > 1 else kind
    embed = f"embed {c.embed}" + (f" + hashed 2..{c.ngrams}-grams ({c.buckets:,} buckets)" if c.ngrams else "")
    head = f"{c.pooling} pooling → " if c.task == "classify" else ""
    wide = f" (+ a linear model of hashed 1..{c.wide_ngrams}-grams, {c.wide_buckets:,} buckets)" if c.wide_ngrams else ""
    wide += f", pooled with class {c.class_lm}-gram LMs" if c.class_lm else ""
    dev = (f"dev {len(trainer.dev):,} examples" if trainer.dev is not None
           else "no dev split: scores are on the training data")
    return [f"  model   {c.level}-level, {embed} → {kind} → {head}{c.num_labels} labels{wide} · "
            f"{trainer.model.size:,} parameters",
            f"  data    {_p(show_path(spec.get('train', '?')))}: {len(trainer.train):,} examples, "
            f"vocabulary {c.vocab_size:,} · {dev}",
            budget_line(t)] + ([chosen_line(spec["chosen"])] if isinstance(spec.get("chosen"), dict) else [])


def chosen_line(chosen: dict) -> str:
    """The recipe chosen for the budget (seqtask/recipe.py's Choice, as stored): what, why, and
    which settings were given (and kept)."""
    from ..seqtask.config import SeqModelConfig, SeqTrainConfig
    from .options import option_names

    flags = option_names(SeqModelConfig, SeqTrainConfig)
    given = [flags.get(name, name) for name in chosen.get("given", [])]
    kept = f"given {', '.join(given)}; " if given else ""
    return (f"  chosen  {_p(chosen.get('reason', '?'))} (probe {float(chosen.get('probe_seconds', 0)):.1f}s; "
            f"{kept}any flag overrides)")


def encoder_text(c) -> str:
    return f"{'bidirectional ' if c.bidirectional else ''}{c.cell.upper()} {c.layers}×{c.hidden}"


def budget_line(t) -> str:
    """The header's line of budget, cadence, batch and learning rates (a SeqTrainConfig)."""
    return (f"  budget  {budget_text(t, lambda s: f'{s:g} s')} · evaluate {EvalCadence(t.eval_every).describe()} · "
            f"batch {t.batch_size} · lr {t.lr:g} → {t.min_lr:g} ({t.schedule})")


class TrainProgress:
    """A progress bar over the budget on a terminal; plain lines at each evaluation elsewhere."""

    def __init__(self, console, live: bool):
        self.console, self.live = console, live
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 TimeElapsedColumn(), console=console, disable=not live, transient=True)
        self.task = self.progress.add_task("", total=1.0)
        self.last_eval, self.done, self.best_path, self.notes = None, None, None, []

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def note(self, text: str) -> None:
        self.console.print(f"[yellow]{escape(text)}[/]")

    def scores_text(self, s: dict) -> str:
        """An evaluation's scores besides the loss."""
        return (f"accuracy {s['accuracy']:.4f}  macro-F1 {s['macro_f1']:.4f}"
                + (f"  sequences {s['sequence_accuracy']:.4f}" if "sequence_accuracy" in s else ""))

    def update(self, event) -> None:
        from ..training.events import CheckpointEvent, DoneEvent, EvalEvent, StepEvent, WarningEvent

        if isinstance(event, StepEvent):
            self.progress.update(self.task, completed=event.progress,
                                 description=f"step {event.step:,} · epoch {event.epoch:.2f} · loss {event.loss:.4f} · "
                                             f"lr {event.lr:.2e}")
        elif isinstance(event, EvalEvent):
            self.last_eval = event
            s = event.scores
            where = "dev" if event.held_out else "train"
            mark = " [green]best[/]" if event.improved else ""
            self.console.print(f"step {event.step:>7,}  epoch {event.epoch:6.2f}  train loss {event.train_loss:.4f}  "
                               f"{where} loss {s['loss']:.4f}  {self.scores_text(s)}"
                               f"  {fmt_time(event.elapsed)}{mark}", highlight=False, soft_wrap=True)
        elif isinstance(event, CheckpointEvent) and event.best:
            self.best_path = event.path
        elif isinstance(event, WarningEvent):
            self.console.print(f"[yellow]warning:[/] {_p(event.message)}", highlight=False, soft_wrap=True)
        elif isinstance(event, DoneEvent):
            self.done = event


def fmt_time(seconds: float) -> str:
    return time.strftime("%M:%S", time.gmtime(seconds)) if seconds < 3600 else f"{seconds / 3600:.1f} h"


def summary_lines(view, run: str, task: str) -> list[str]:
    done = view.done
    lines = [f"finished     {done.message}", f"steps        {done.step:,} in {fmt_time(done.elapsed)}",
             f"best         {done.metric.upper() if done.metric == 'wer' else done.metric} {done.best_value:.4f}"]
    if view.best_path:
        lines.append(f"best model   {escape(show_path(view.best_path))}")
    lines.append(f"evaluate it  {escape(shell_command('charlm', task, 'eval', run))} FILE")
    return lines


def report_heading(result: dict, checkpoint: str) -> str:
    return f"[bold]{_p(show_path(result.get('file', '')))}[/] scored by {_p(checkpoint)}"


def report_tables(result: dict):
    """The evaluation: a summary table, per-class precision/recall/F1, and the confusion matrix."""
    summary = Table(title="summary", title_justify="left")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    rows = [("accuracy" if result["task"] == "classify" else "token accuracy", f"{result['accuracy']:.4f}"),
            ("macro-F1", f"{result['macro_f1']:.4f}"), ("loss (nats)", f"{result['loss']:.4f}"),
            ("examples", f"{result['examples']:,}")]
    if "sequence_accuracy" in result:
        rows += [("sequence accuracy", f"{result['sequence_accuracy']:.4f}"), ("tokens", f"{result['tokens']:,}")]
    if "pooled" in result:
        p = result["pooled"]
        rows.append(("pooled with", f"class {p['class_lm']}-gram LMs ×{p['lms']:.3f}, classifier ×{p['classifier']:.3f}"))
    for row in rows:
        summary.add_row(*row)
    per_class = Table(title="per label", title_justify="left")
    for name in ("label", "precision", "recall", "F1", "support"):
        per_class.add_column(name, justify="left" if name == "label" else "right")
    for c in result["per_class"]:
        per_class.add_row(_p(c["label"]), f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}",
                          f"{c['support']:,}")
    tables = [summary, per_class]
    labels = result["labels"]
    if len(labels) <= CONFUSION_MAX_LABELS:
        confusion = Table(title="confusion: rows true, columns predicted", title_justify="left")
        confusion.add_column("")
        short = [_p(label[:4]) for label in labels]
        for s in short:
            confusion.add_column(s, justify="right")
        for label, row in zip(labels, result["confusion"]):
            confusion.add_row(_p(label), *[(f"[bold]{n}[/]" if i == j else (str(n) if n else "·"))
                                           for j, n in enumerate(row) for i in [labels.index(label)]])
        tables.append(confusion)
    return tables


def prediction_lines(predictions: list[dict]) -> list[str]:
    """Plain lines for stdout: the text, a tab, then each label with its probability."""
    lines = []
    for p in predictions:
        ranked = "  ".join(f"{printable(x['label'])} {x['probability']:.3f}" for x in p["labels"])
        lines.append(f"{printable(p['text'])}\t{ranked}")
    return lines


def tag_lines(tagged: list[dict]) -> list[str]:
    return [" ".join(f"{printable(t)}/{printable(g)}" for t, g in zip(item["tokens"], item["tags"])) for item in tagged]
