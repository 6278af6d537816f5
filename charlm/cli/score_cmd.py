"""``charlm score``: each line's log-probability, token count, perplexity and unknown tokens."""
from __future__ import annotations

import json

import click

from .common import emit


@click.command("score")
@click.argument("args", nargs=-1, required=True, metavar="[RUN] FILE|-")
@click.option("--json", "as_json", is_flag=True, help="one JSON object a line instead of tab-separated columns")
def score(args, as_json):
    """Score each line of FILE (or standard input, -) as one sequence.

    One output line per input line, in order, as they are read: the line's
    total natural-log probability, the tokens predicted (the line's tokens and
    its closing <eos>), the perplexity and the out-of-vocabulary count,
    tab-separated. Each line is scored alone, from the model's zero state after
    <eos>, as `charlm eval` scores a text holding just that line. A line that is
    not valid UTF-8 gets one line naming it instead, and the exit status is 1.

    \b
    Examples:
      charlm score runs/names-20250101-120000 candidates.txt
      cat names.txt | charlm score - --json | jq .perplexity
      charlm score lines.txt | sort -t$'\\t' -k3 -g | head   # the least surprising lines
    """
    from ..data.text_files import iter_lines
    from ..errors import CorpusError
    from ..lm.checkpoint import load_checkpoint
    from ..lm.score import LineScorer
    from .common import run_to_use

    if len(args) > 2:
        raise click.UsageError("give at most a run and one file (or - for standard input)")
    run, path = (args[0], args[1]) if len(args) == 2 else (None, args[0])
    scorer = LineScorer(load_checkpoint(run_to_use(run)))
    bad = 0
    for s in scorer.scores(iter_lines(path)):
        bad += s.error is not None
        if as_json:
            emit(json.dumps(s.to_dict()))
        elif s.error:
            emit(f"error\t{s.error}")
        else:
            ppl = "-" if s.perplexity is None else f"{s.perplexity:.6g}"   # no token predicted: none
            emit(f"{s.log_prob:.6f}\t{s.tokens}\t{ppl}\t{s.oov}")
    if bad:
        raise CorpusError(f"{bad} line(s) were not valid UTF-8 and were not scored (marked in the output)")
