"""Does a labelled language model generate text of the label asked for? A rerunnable check, not a test.

Trains a labelled character model on TRAIN (text<TAB>label lines: ``charlm train --labelled``) for a
fixed number of steps, samples N texts per label (``charlm sample --label L``), and has a classifier
trained on the same file (``charlm classify train TRAIN --dev DEV``, a fixed number of epochs) label
them. Reports the share of generated texts classified as the label they were generated for, beside
the classifier's accuracy on the real DEV texts, with ten generated texts per label. The budgets are
counts of steps and epochs, so the figures do not depend on the machine's speed.

    python benchmarks/label_check.py TRAIN DEV --out DIR [--condition input|state|both] [--steps N]

Every command it runs is printed first; the report goes to DIR/report.md and DIR/report.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def charlm(*args) -> str:
    """Run ``charlm ARGS`` (this interpreter's charlm) and return its standard output."""
    command = [sys.executable, "-m", "charlm", *map(str, args)]
    print("$ charlm " + " ".join(map(str, args)), file=sys.stderr, flush=True)
    return subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout


def labels_of(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return sorted({line.rstrip("\n").rsplit("\t", 1)[1].strip() for line in f if "\t" in line})


def train_models(a, out: Path, conditions) -> dict:
    """The classifier's run and one language-model run per design (reused when already there)."""
    runs = {"classifier": out / "classifier"}
    if not (runs["classifier"] / "model.safetensors").exists():
        charlm("classify", "train", a.train, "--dev", a.dev, "--epochs", a.classify_epochs, "--seed", a.seed,
               "--run-dir", runs["classifier"], "--json")
    for condition in conditions:
        run = runs[condition] = out / f"lm-{condition}"
        if not (run / "model.safetensors").exists():
            charlm("train", a.train, "--labelled", "--val-file", a.dev, "--condition", condition,
                   "--steps", a.steps, "--cell", a.cell, "--hidden", a.hidden, "--embed", a.embed,
                   "--layers", a.layers, "--batch-size", a.batch_size, "--lr", a.lr, "--seed", a.seed,
                   "--eval-every", max(a.steps // 5, 1), "--run-dir", run, "--json")
    return runs


def generate(run: Path, labels, a, out: Path) -> dict[str, list[str]]:
    """``a.samples`` texts per label, seeded, written as text<TAB>label to out/generated.tsv."""
    texts = {}
    for k, label in enumerate(labels):
        found = json.loads(charlm("sample", run, "--label", label, "--num-samples", a.samples,
                                  "--seed", a.seed + 1000 * k, "-t", a.temperature, "-n", 40, "--json"))
        texts[label] = [t.replace("\t", " ") for t in found["samples"]]
    with open(out / "generated.tsv", "w", encoding="utf-8") as f:
        f.writelines(f"{t}\t{label}\n" for label, ts in texts.items() for t in ts if t.strip())
    return texts


def check(a) -> dict:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    conditions = ["input", "state"] if a.condition == "both" else [a.condition]
    runs = train_models(a, out, conditions)
    labels = labels_of(Path(a.train))
    real = json.loads(charlm("classify", "eval", runs["classifier"], a.dev, "--json"))
    report = {"train": str(a.train), "dev": str(a.dev), "lm_steps": a.steps, "classify_epochs": a.classify_epochs,
              "samples_per_label": a.samples, "temperature": a.temperature,
              "classifier_dev_accuracy": real["accuracy"], "designs": {}}
    for condition in conditions:
        folder = out / condition
        folder.mkdir(exist_ok=True)
        texts = generate(runs[condition], labels, a, folder)
        judged = json.loads(charlm("classify", "eval", runs["classifier"], folder / "generated.tsv", "--json"))
        lm = json.loads(charlm("info", runs[condition], "--json"))
        empty = sum(not t.strip() for ts in texts.values() for t in ts)
        total = sum(len(ts) for ts in texts.values())   # an empty sample counts as a miss
        report["designs"][condition] = {
            "generated_classified_as_asked": judged["accuracy"] * judged["examples"] / total, "empty_samples": empty,
            "lm_best_val_loss": (lm.get("best") or {}).get("val_loss"),
            "per_label_recall": {row["label"]: row["recall"] for row in judged["per_class"]},
            "examples": {label: ts[:10] for label, ts in texts.items()}}
    return report


def markdown(report: dict) -> str:
    lines = [f"# Labelled generation check ({report['train']})", "",
             (f"language model: {report['lm_steps']} steps; classifier: {report['classify_epochs']} epochs; "
              f"{report['samples_per_label']} samples per label at temperature {report['temperature']}"), "",
             f"classifier accuracy on the real dev texts: {report['classifier_dev_accuracy']:.4f}", ""]
    for condition, d in report["designs"].items():
        lines += [f"## label as {condition}", "",
                  (f"generated texts classified as the label asked for: {d['generated_classified_as_asked']:.4f} "
                   f"(best validation loss {d['lm_best_val_loss']}, empty samples {d['empty_samples']})"), "",
                  "| label | recall | ten samples |", "|---|---|---|"]
        for label, texts in d["examples"].items():
            recall = d["per_label_recall"].get(label)
            lines.append(f"| {label} | {'' if recall is None else f'{recall:.3f}'} | {' '.join(texts)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("train", help="text<TAB>label training lines")
    p.add_argument("dev", help="text<TAB>label held-out lines (the language model's validation too)")
    p.add_argument("--out", required=True, help="folder for the runs, the samples and the report")
    p.add_argument("--condition", choices=("input", "state", "both"), default="both")
    p.add_argument("--steps", type=int, default=3000, help="language-model training steps")
    p.add_argument("--classify-epochs", type=int, default=5)
    p.add_argument("--samples", type=int, default=200, help="generated texts per label")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--cell", default="lstm")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--embed", type=int, default=32)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    report = check(a)
    out = Path(a.out)
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    text = markdown(report)
    (out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
