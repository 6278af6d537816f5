"""Space restoration on held-out lines: charlm's restore-spaces taggers beside wordninja and
wordsegment, by boundary F1 and the share of lines restored exactly.

Text is normalised to lower-case letters and single spaces only (accents stripped, apostrophes
dropped inside words, every other character a space); held out are lines of at least 30 letters,
drawn at random (a fixed seed) and never trained on.

  python benchmarks/restore_spaces.py prepare CORPUS OUT_DIR [--heldout 2000] [--seed 0]
      OUT_DIR/train.txt: the normalised corpus without the held-out lines (blank lines kept
      between paragraphs); OUT_DIR/train-paragraphs.txt: the same with each paragraph on one
      line (sequences that run across line breaks); OUT_DIR/heldout.txt: the held-out lines.
  python benchmarks/restore_spaces.py score HELDOUT [--run RUN ...] [--segmenters]
      boundary precision, recall, F1 and exact lines of each charlm run given and, with
      --segmenters, of wordninja and wordsegment (installed separately: pip install wordninja
      wordsegment; they are not dependencies of charlm).

Boundary F1 counts the positions between letters where a space goes: a restored line's boundaries
against the original's, summed over all lines.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import unicodedata
from pathlib import Path

MIN_LETTERS = 30


def normalise(line: str) -> str:
    """Lower-case letters and single spaces only."""
    text = unicodedata.normalize("NFKD", line.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"['\u2019]", "", text)
    return " ".join(re.sub(r"[^a-z]+", " ", text).split())


def prepare(corpus: Path, out: Path, heldout: int, seed: int) -> None:
    lines = [normalise(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    candidates = [i for i, line in enumerate(lines) if len(line.replace(" ", "")) >= MIN_LETTERS]
    if len(candidates) < heldout:
        sys.exit(f"{corpus}: only {len(candidates)} lines of {MIN_LETTERS}+ letters")
    held = set(random.Random(seed).sample(candidates, heldout))
    train = [line for i, line in enumerate(lines) if i not in held]
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    paragraphs, current = [], []
    for line in train + [""]:
        if line:
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    (out / "train-paragraphs.txt").write_text("\n".join(paragraphs) + "\n", encoding="utf-8")
    (out / "heldout.txt").write_text("\n".join(lines[i] for i in sorted(held)) + "\n", encoding="utf-8")
    print(f"{len(train):,} training lines ({len(paragraphs):,} paragraphs), {heldout:,} held out -> {out}")


def boundaries(words: list[str]) -> set[int]:
    """Letter counts after which a space goes."""
    cuts, at = set(), 0
    for word in words[:-1]:
        at += len(word)
        cuts.add(at)
    return cuts


def scores(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    tp = fp = fn = exact = 0
    for g, p in zip(gold, predicted):
        gb, pb = boundaries(g), boundaries(p)
        tp, fp, fn = tp + len(gb & pb), fp + len(pb - gb), fn + len(gb - pb)
        exact += g == p
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"precision": precision, "recall": recall, "f1": f1, "exact_lines": exact / max(len(gold), 1)}


def charlm_segmenter(run: str):
    from charlm.seqtask.data import spaces_to_text
    from charlm.seqtask.predict import Predictor

    predictor = Predictor.load(run)

    def segment(texts: list[str]) -> list[list[str]]:
        tagged = predictor.tag([list(t) for t in texts])
        return [spaces_to_text(list(t), item["tags"]).split() for t, item in zip(texts, tagged)]
    return segment


def word_segmenters() -> dict:
    import wordninja
    import wordsegment

    wordsegment.load()
    return {"wordninja": lambda texts: [wordninja.split(t) for t in texts],
            "wordsegment": lambda texts: [wordsegment.segment(t) for t in texts]}


def score(heldout: Path, runs: list[str], segmenters: bool) -> None:
    gold = [line.split() for line in heldout.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = ["".join(words) for words in gold]
    systems = {f"charlm {run}": charlm_segmenter(run) for run in runs}
    systems |= word_segmenters() if segmenters else {}
    print(f"{len(gold):,} held-out lines of {heldout}")
    print("| system | boundary precision | recall | F1 | exact lines |")
    print("| --- | ---: | ---: | ---: | ---: |")
    results = {}
    for name, segment in systems.items():
        s = results[name] = scores(gold, segment(texts))
        print(f"| {name} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['exact_lines']:.1%} |",
              flush=True)
    print(json.dumps(results))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="normalise a corpus and hold lines out")
    p.add_argument("corpus", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--heldout", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    s = commands.add_parser("score", help="score segmenters on the held-out lines")
    s.add_argument("heldout", type=Path)
    s.add_argument("--run", action="append", default=[], help="a charlm restore-spaces run (repeatable)")
    s.add_argument("--segmenters", action="store_true", help="score wordninja and wordsegment too")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.corpus, args.out, args.heldout, args.seed)
    else:
        score(args.heldout, args.run, args.segmenters)


if __name__ == "__main__":
    main()
