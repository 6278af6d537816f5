"""``charlm train``: options generated from ModelConfig/TrainConfig's settings; the loop is the Trainer's."""
from __future__ import annotations

import click
from rich.text import Text

from ..config import ModelConfig, TrainConfig
from .common import err, runs_root, shell_command, show_path
from .options import given, option_names, setting_options
from .run_options import emit_summary, ranks_job, training_run_options
from .stop_signals import StopSignals

OPTION_NAMES = option_names(ModelConfig, TrainConfig)   # field -> --option (for --config keys)


@click.command("train")
@click.argument("corpus", nargs=-1, type=click.Path(dir_okay=True))
@setting_options(ModelConfig, TrainConfig)
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="where the run goes: a new or empty directory [default: runs/<corpus>-<time>]")
@click.option("--overwrite", is_flag=True,
              help="let --run-dir replace an earlier run there (its checkpoints and metrics; other files stay)")
@click.option("--resume", "resume", metavar="RUN", help="continue a run from its last checkpoint (budgets may grow)")
@click.option("--init-from", "init_from", metavar="RUN_OR_CHECKPOINT",
              help="fine-tune: start from this model's weights (its settings; vocabulary grown for new "
                   "characters/words, their rows initialised as a fresh model's) with a fresh optimiser")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE.toml",
              help="settings from a TOML file (same names as the options; options override it)")
@training_run_options
def train(corpus, run_dir, overwrite, resume, init_from, config_file, ranks, as_json, **options):
    """Train a language model on CORPUS (text files) and save it under runs/.

    With no CORPUS, trains for 5 minutes on the Python standard library's own
    source (about 1.5 MB of code and docstrings that every Python install has).
    Ctrl-C, SIGTERM or SIGHUP stops after the current step, saves the run and
    prints how to resume (exit status 130, 143, 129). CORPUS and --val-file must
    be regular files (not pipes such as /dev/stdin: the text is read twice).

    \b
    Examples:
      charlm train                                   # the default corpus, ~5 minutes
      charlm train shakespeare.txt --hidden 512 --time 10m
      charlm train names.txt --eos line --layers 1 --sample-every 200
      charlm train --resume runs/shakespeare-20250101-120000 --time 20m
      charlm train sonnets.txt --init-from runs/shakespeare-20250101-120000 --time 5m
    """
    from ..config import make_configs, resume_overrides
    from ..lm import start as lm_start
    from ..runs import find as run_find
    from .config_keys import read_config_file

    job = ranks_job(ranks)  # --ranks N: this command runs again under mpiexec, as this process's child
    if job is not None:
        return job

    if resume and run_dir:
        raise click.UsageError("--resume RUN continues RUN in its own directory; --run-dir cannot move it "
                               "(copy the run directory first, then resume the copy)")
    if resume and init_from:
        raise click.UsageError("--resume continues a run; --init-from starts a new one from a model: choose one")
    if resume and overwrite:
        raise click.UsageError("--overwrite is for a new run in --run-dir; --resume continues a run")
    tables = {"model": set(option_names(ModelConfig)), "train": set(option_names(TrainConfig))}
    values = read_config_file(config_file, OPTION_NAMES, tables) if config_file else {}
    values.update(given(options))  # the command line overrides the file
    console = err()
    with StopSignals() as signals:
        if resume:
            run = run_find.resolve_run(resume, runs_root())
            overrides = resume_overrides(values)
            trainer = lm_start.resume_training(run, overrides, corpus)
            console.print(Text(f"resuming {show_path(trainer.run_dir)} at step {trainer.pos.step:,}"),
                          soft_wrap=True)
        else:
            model_config, train_config = make_configs(values)
            if init_from:
                from ..lm.finetune import describe, start_from
                from .safe_text import printable

                trainer = start_from(run_find.resolve_run(init_from, runs_root()), corpus, model_config,
                                     train_config, given=frozenset(values), run_dir=run_dir, root=runs_root(),
                                     overwrite=overwrite)
                console.print(Text(f"starting from {printable(describe(trainer.task.init_from))}"), soft_wrap=True)
                return _run(trainer, console, signals, as_json)
            if not corpus:
                console.print("no corpus given: training on the Python standard library's own source "
                              "(built once, then cached)", style="dim", highlight=False, soft_wrap=True)
            trainer = lm_start.start_training(corpus, model_config, train_config, given=frozenset(values),
                                              run_dir=run_dir, root=runs_root(), overwrite=overwrite)
        return _run(trainer, console, signals, as_json)


def _run(trainer, console, signals, as_json=False) -> int:
    from ..training.budget import EvalCadence
    from .render import budget_text, corpus_line, fmt_time, model_line
    from .train_view import TrainView, summary_table

    run = show_path(trainer.run_dir)
    t = trainer.tcfg
    budget = budget_text(t, fmt_time)
    console.print(Text.assemble(("charlm train", "bold"), f" → {run}"), soft_wrap=True)
    console.print(f"  model   {model_line(trainer.mcfg, trainer.model.num_parameters)}", markup=False,
                  highlight=False)
    if trainer.auto_choice:  # the width (and regularisation) the budget buys: any flag given would have won
        flags = "--hidden/--dropout" + ("/--weight-decay" if "weight_decay" in trainer.auto_choice["values"] else "")
        console.print(f"  chosen  {trainer.auto_choice['reason']} (probe {trainer.auto_choice['probe_seconds']:.1f}s; "
                      f"{flags} override)", markup=False, highlight=False, soft_wrap=True)
    console.print(Text(f"  corpus  {', '.join(show_path(p) for p in trainer.corpus.sources)}: "
                       f"{corpus_line(trainer.corpus.stats())}"), soft_wrap=True)
    console.print(f"  budget  {budget} · evaluate {EvalCadence(t.eval_every).describe()} · "
                  f"batch {t.batch_size}×{t.seq_len}", highlight=False)
    view = TrainView(console, trainer, live=console.is_terminal)
    signals.training(trainer, view)
    with view:
        for event in signals.watch(trainer.events()):
            view.update(event)
    console.print(summary_table(view, run, trainer.model.num_parameters), soft_wrap=True)
    done = view.done
    if as_json:
        emit_summary(done)
    if done.reason == "stopped":
        console.print(Text.assemble(("stopped.", "yellow"), " continue with: ",
                                    (shell_command("charlm", "train", "--resume", run), "bold")), soft_wrap=True)
        return signals.exit_code
    if done.reason == "diverged":
        from ..errors import CharlmError

        raise CharlmError(f"training diverged: {done.message}")
    return 0
