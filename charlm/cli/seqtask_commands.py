"""What the sequence-task commands share (classify, tag, seq2seq): the training options and runner,
the run of an evaluation, and the texts a prediction reads."""
from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.text import Text

from ..seqtask.config import CLASSIFY_ONLY, SeqModelConfig, SeqTrainConfig
from .common import emit, err, out, run_to_use, runs_root, shell_command, show_path
from .options import setting_options
from .run_options import emit_summary, ranks_job, training_run_options
from .sweep_cmd import run_sweep_command, sweep_options


def training_options(task: str):
    """The options of ``charlm <task> train``: the settings, then where the data and the run are."""
    settings = setting_options(SeqModelConfig, SeqTrainConfig, exclude=() if task == "classify" else CLASSIFY_ONLY)

    return lambda func: training_run_options(run_options(settings(func)))


def dev_options(func, examples: str = "examples"):
    """--dev and --dev-fraction: where a training command's (or a sweep's) dev data is."""
    func = click.option("--dev", "dev_file", type=click.Path(dir_okay=False),
                        help="labelled dev file (else --dev-fraction of the training data is held out)")(func)
    return click.option("--dev-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1,
                        show_default=True,
                        help=f"share of the training {examples} held out for dev when there is no --dev")(func)


def run_options(func, examples: str = "examples"):
    """--dev, --dev-fraction, --run-dir and --resume: where a training command's dev data and run are."""
    func = dev_options(func, examples)
    func = click.option("--run-dir", type=click.Path(file_okay=False),
                        help="where the run goes [default: runs/<file>-<time>]")(func)
    return click.option("--resume", metavar="RUN", help="continue a stopped run (the budget may grow)")(func)




def sweep_command(task: str, data_option, doc: str):
    """``charlm <task> sweep``: TRAIN_FILE with ``data_option`` (its format), the dev options and
    the sweep's; the trials start as ``charlm <task> train`` runs (seqtask.runs.SeqTrials)."""
    def command(train_file, dev_file, dev_fraction, **options):
        from ..seqtask.runs import SeqTrials

        data = {name: options.pop(name) for name in ("header", "fmt") if name in options}
        kind = SeqTrials(task, train_file, dev_file=dev_file, dev_fraction=dev_fraction, **data)
        return run_sweep_command(kind, **options)
    command.__doc__ = doc
    decorate = (click.argument("train_file", type=click.Path(dir_okay=False)), data_option, dev_options, sweep_options)
    for decorator in reversed(decorate):
        command = decorator(command)
    return click.command("sweep")(command)




class SeqRuns:
    """How classify and tag start, resume and show a run (``run_training``'s ``kind``)."""

    def start(self, task: str, values: dict, describe, run_dir):
        from ..seqtask import runs
        from ..seqtask.config import make_seq_configs

        model_config, train_config = make_seq_configs(task, values)
        spec = describe(train_config.seed)
        return runs.start(spec, model_config, train_config, runs_root(), run_dir,
                          given=runs.recipe_given(values, spec))

    def resume(self, run, values: dict):
        from ..seqtask import runs
        from ..seqtask.config import seq_resume_overrides

        return runs.resume(run, seq_resume_overrides(values))

    def header_lines(self, trainer) -> list[str]:
        from .seqtask_view import header_lines

        return header_lines(trainer)

    def progress(self, console):
        from .seqtask_view import TrainProgress

        return TrainProgress(console, live=console.is_terminal)


def run_training(task: str, train_file, describe, values: dict, run_dir, resume, ranks=None, as_json=False,
                 kind=SeqRuns()) -> int:
    """Start a run on ``train_file`` (its data described by ``describe(seed)``, settings ``values``:
    field name -> value given) or resume one, show its progress, summarise it; shared by classify,
    tag and seq2seq (``kind``: how the task's runs start, resume and look). ``ranks``: re-run this
    command under mpiexec; ``as_json``: the run's summary on stdout.
    A stop signal while training finishes the step and saves (see stop_signals.py)."""
    from ..runs.find import resolve_run
    from .seqtask_view import summary_lines
    from .stop_signals import StopSignals

    if not resume and train_file is None:
        raise click.UsageError("give the training file (or --resume RUN)")
    job = ranks_job(ranks)  # --ranks N: this command runs again under mpiexec, as this process's child
    if job is not None:
        return job
    console = err()
    with StopSignals() as signals:
        if resume:
            run = resolve_run(resume, runs_root(), task)
            refuse_changed_data(run, task)
            trainer = kind.resume(run, values)
            console.print(f"resuming [bold]{escape(show_path(trainer.run_dir))}[/] at step {trainer.pos.step:,}",
                          highlight=False)
        else:
            trainer = kind.start(task, values, describe, run_dir)
        run = show_path(trainer.run_dir)
        console.print(f"[bold]charlm {task} train[/] → {escape(run)}", highlight=False)
        for line in kind.header_lines(trainer):
            console.print(line, highlight=False, soft_wrap=True)
        view = kind.progress(console)
        with view:
            signals.training(trainer, view)
            for event in signals.watch(trainer.events()):
                view.update(event)
    for line in summary_lines(view, run, task):
        console.print(line, highlight=False)
    if as_json:
        emit_summary(view.done)
    if view.done.reason == "stopped":
        console.print(f"[yellow]stopped.[/] continue with: [bold]{escape(shell_command('charlm', task, 'train', '--resume', run))}[/]",
                      highlight=False)
        return signals.exit_code
    if view.done.reason == "diverged":
        from ..errors import CharlmError

        raise CharlmError(f"training diverged: {view.done.message}")
    return 0


DATA_OPTIONS = {"train_file": ("train", "TRAIN_FILE"), "dev_file": ("dev", "--dev"), "dev_fraction": ("dev_fraction", "--dev-fraction"),
                "header": ("header", "--header"), "fmt": ("format", "--format")}


def refuse_changed_data(run, task: str) -> None:
    """A resume continues a run of ``task`` on the data it started with: the data options given on
    the command line (the current click context's) must name what the run recorded."""
    import os
    from pathlib import Path

    from ..errors import ConfigError
    from ..runs.find import LAST_FILE, TASK_NAMES, task_of

    run = Path(run)
    recorded = task_of(run)
    if recorded is not None and recorded != task:
        raise ConfigError(f"{run} is a {TASK_NAMES.get(recorded, recorded)} run: `charlm {task} train --resume` "
                          f"continues {task} runs only")
    ctx = click.get_current_context()
    given = {name: value for name, value in ctx.params.items() if name in DATA_OPTIONS and value is not None
             and ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)}
    if not given:
        return
    from ..seqtask import store

    last = run if run.suffix == ".safetensors" else run / LAST_FILE
    spec = store.load(last).metadata.get("data") if last.is_file() else None
    spec = spec if isinstance(spec, dict) else {}
    for name, value in given.items():
        key, option = DATA_OPTIONS[name]
        mine = os.path.abspath(value) if name.endswith("_file") else value
        if spec.get(key) != mine:
            had = "none" if spec.get(key) is None else spec.get(key)
            raise ConfigError(f"cannot change the data when resuming ({option} {value}; the run has {had}): "
                              "start a new run instead")


def split_run_and_file(args, task: str):
    """[RUN] FILE: a first argument that names a run (or no file) is the run."""
    import os

    from ..runs.find import is_run_like, resolve_run

    root = runs_root()
    if len(args) > 2:
        raise click.UsageError("give at most a RUN and one FILE")
    first_is_run = len(args) == 2 or (len(args) == 1 and is_run_like(args[0], root) and not os.path.isfile(args[0]))
    run, rest = (args[0], args[1:]) if first_is_run else (None, args)
    return resolve_run(run, root, task), rest


def evaluate_command(task: str, args, header: str, as_json: bool) -> None:
    from ..seqtask.predict import Predictor
    from ..seqtask.recipe import stored_choice
    from .seqtask_view import chosen_line, report_heading, report_tables

    run, rest = split_run_and_file(args, task)
    if not rest:
        raise click.UsageError("give the labelled file to evaluate")
    predictor = Predictor.load(run)
    chosen = stored_choice(predictor.checkpoint.metadata)
    result = predictor.evaluate(rest[0], header=header) | {"checkpoint": str(predictor.checkpoint.path)}
    if chosen:
        result["chosen"] = chosen
    if as_json:
        emit(json.dumps(result))
        return
    console = out()
    console.print(report_heading(result, show_path(predictor.checkpoint.path)), highlight=False, soft_wrap=True)
    if chosen:
        console.print(chosen_line(chosen), highlight=False, soft_wrap=True)
    for table in report_tables(result):
        console.print(table)




def predictor_and_texts(args, file, task: str):
    """The predictor of [RUN] (default: the latest ``task`` run) and the texts to label: the
    other arguments, then the lines of ``file``."""
    from ..seqtask.predict import Predictor, read_lines

    run, texts = run_and_texts(args, task)
    texts += read_lines(file) if file else []
    if not texts:
        raise click.UsageError(f"give texts to {task}, or --file FILE")
    predictor = Predictor.load(run)
    name_the_model(predictor.checkpoint.path)
    return predictor, texts


def run_and_texts(args, task: str):
    """[RUN] [TEXT...]: the run the first argument names (else the latest ``task`` run) and the
    texts after it. A path into a folder of runs that names none of them is refused as a
    mistyped run, not read as text."""
    from ..runs.find import is_run_like, mistyped_run

    named = bool(args) and (is_run_like(args[0], runs_root()) or mistyped_run(args[0]))
    run = run_to_use(args[0] if named else None, task, name_latest=False)   # (name_the_model follows)
    return run, list(args[1:] if named else args)


def name_the_model(path) -> None:
    """Which model answered, on standard error (the answers go to standard output)."""
    err().print(Text(f"model {show_path(path)}"), style="dim", highlight=False, soft_wrap=True)


def emit_results(items, as_json: bool, lines) -> None:
    """One JSON object per item, or the text ``lines(items)`` renders."""
    if as_json:
        for item in items:
            emit(json.dumps(item, ensure_ascii=False))
        return
    for line in lines(items):
        emit(line)
