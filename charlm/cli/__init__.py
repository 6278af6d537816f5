"""The ``charlm`` command line: click commands that parse, make one library call, and render.

Each command lives in its own module and imports the library inside its function, so
``charlm --help`` never loads NumPy-heavy modules or Numba. To add a command, write
``<name>_cmd.py`` and register it below with one ``main.add_command`` line.
"""
import click

from .. import __version__
from .bench_cmd import bench
from .classify_cmd import classify
from .common import CharlmGroup
from .eval_cmd import eval_
from .info_cmd import info
from .inspect_cmd import inspect_
from .quality_cmd import bench_quality
from .sample_cmd import sample
from .score_cmd import score
from .seq2seq_cmd import seq2seq
from .sweep_cmd import sweep
from .tag_cmd import tag
from .train_cmd import train


@click.group("charlm", cls=CharlmGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="charlm")
def main():
    """charlm: train, sample and evaluate character- and word-level recurrent
    language models (RNN, GRU, LSTM) on a CPU, from the terminal.

    \b
    Example:
      charlm train corpus.txt --time 10m      # train; the run goes to runs/
      charlm sample -t 0.8                    # text from the latest run
      charlm eval held_out.txt                # perplexity on new text
      charlm info                             # what the latest run is

    Run 'charlm COMMAND -h' for a command's options.
    """


main.add_command(train)
main.add_command(sample)
main.add_command(eval_)
main.add_command(score)
main.add_command(info)
main.add_command(inspect_)
main.add_command(bench)
main.add_command(bench_quality)
main.add_command(classify)
main.add_command(tag)
main.add_command(seq2seq)
main.add_command(sweep)
