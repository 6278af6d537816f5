"""How ``charlm seq2seq`` looks: the run's header, the evaluation lines of training, the score
report and predictions. Sources and outputs come from files: all of them go through ``printable``."""
from __future__ import annotations

from .common import show_path
from .safe_text import printable
from .seqtask_view import TrainProgress, _p, budget_line, encoder_text


def header_lines(trainer) -> list[str]:
    c, levels = trainer.mcfg, trainer.levels
    dev = (f"dev {len(trainer.dev_groups):,} sources" if trainer.dev is not None
           else "no dev split: scores are on the training data")
    return [f"  model   {levels['source']} → {levels['target']}, embed {c.embed} → {encoder_text(c)} encoder → "
            f"{'final vector' if c.attention == 'none' else c.attention + ' attention'} → decoder {c.hidden} · {trainer.model.size:,} parameters",
            f"  data    {_p(show_path(trainer.data_spec.get('train', '?')))}: {len(trainer.train):,} pairs, "
            f"vocabularies {c.src_vocab:,} → {c.tgt_vocab:,} · {dev}", budget_line(trainer.tcfg)]


class Seq2SeqProgress(TrainProgress):
    def scores_text(self, s: dict) -> str:
        return f"WER {s['wer']:.4f}  PER {s['per']:.4f}"


def report_lines(result: dict, checkpoint: str) -> list[str]:
    return [f"{_p(show_path(result['file']))} scored by {_p(checkpoint)} ({result['decoding']})",
            f"  WER  {result['wer']:.4f}  ({result['errors']:,} of {result['sources']:,} sources wrong)",
            f"  PER  {result['per']:.4f}  ({result['edits']:,} edits over {result['reference_tokens']:,} "
            "reference tokens)"]


def prediction_lines(items: list[dict]) -> list[str]:
    """The source, a tab, the prediction; with a beam, each hypothesis after it with its log-probability
    and, when a length penalty ranked them, the score it was ranked by (the order's reason)."""
    lines = []
    for item in items:
        lines.append(f"{printable(item['source'])}\t{printable(item['prediction'])}")
        for h in item.get("hypotheses", ()):
            score = f"  {h['score']:9.4f}" if h["score"] != h["log_prob"] else ""
            lines.append(f"\t{h['log_prob']:9.4f}{score}  {printable(h['prediction'])}")
    return lines
