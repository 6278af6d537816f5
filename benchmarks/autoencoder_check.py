"""What an autoencoder's codes are worth: exact reconstruction of unseen words, and their language read off by a linear model.

    python benchmarks/autoencoder_check.py wordlang-train.tsv wordlang-dev.tsv --steps 3000 [--classify-epochs 3]

The files hold ``word<TAB>language`` lines. The autoencoder (``charlm seq2seq train --autoencode``)
sees only the training words, for a fixed number of steps. Then:

(a) the share of the dev words ``charlm seq2seq predict`` rebuilds exactly from their codes;
(b) a softmax regression (NumPy, full-batch Adam with L2 on standardised features) fitted to the
    ``charlm seq2seq encode`` vectors of the training words and their languages, its dev
    accuracy, beside that of a ``charlm classify train`` classifier trained on the same split
    (``--classify-epochs 0`` skips it).

Prints one JSON object; ``--work DIR`` keeps the runs and files (a temporary folder otherwise).
Every setting after ``--`` goes to the autoencoder's ``charlm seq2seq train`` as it is.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits


def read_tsv(path) -> tuple[list[str], list[str]]:
    words, labels = [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            word, label = line.split("\t", 1)
            words.append(word.strip())
            labels.append(label.strip())
    return words, labels


def charlm(*args) -> str:
    """``charlm ARGS`` in a child process (this interpreter); its standard output."""
    done = subprocess.run([sys.executable, "-m", "charlm", *map(str, args)], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"charlm {' '.join(map(str, args))} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def softmax_regression(x, y, classes: int, *, l2=1e-4, iterations=400, lr=0.05, seed=0):
    """(W (F+1, C)) of a multinomial logistic regression by full-batch Adam: mean cross-entropy
    plus ``l2`` times the squared weights (bias excluded)."""
    rng = np.random.default_rng(seed)
    xb = np.hstack([x, np.ones((len(x), 1))])
    W = rng.normal(0, 0.01, (xb.shape[1], classes))
    m, v = np.zeros_like(W), np.zeros_like(W)
    onehot = np.eye(classes)[y]
    for t in range(1, iterations + 1):
        z = xb @ W
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = xb.T @ (p - onehot) / len(x)
        g[:-1] += 2 * l2 * W[:-1]
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        W -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return W


def predict(W, x) -> np.ndarray:
    return (np.hstack([x, np.ones((len(x), 1))]) @ W).argmax(axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("train", help="word<TAB>language training file")
    ap.add_argument("dev", help="word<TAB>language dev file")
    ap.add_argument("--steps", type=int, default=3000, help="autoencoder training steps")
    ap.add_argument("--classify-epochs", type=float, default=3, help="epochs of the charlm classifier (0: skip)")
    ap.add_argument("--work", help="folder for the runs and files (default: a temporary one)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)   # after --: the autoencoder's own settings
    a = ap.parse_args(argv[:cut])
    a.extra = argv[cut + 1:]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        train_words, train_langs = read_tsv(a.train)
        dev_words, dev_langs = read_tsv(a.dev)
        for name, words in (("train-words.txt", train_words), ("dev-words.txt", dev_words)):
            (work / name).write_text("".join(w + "\n" for w in words), encoding="utf-8")
        ae = work / "autoencoder"
        summary = json.loads(charlm("seq2seq", "train", "--autoencode", work / "train-words.txt", "--dev",
                                    work / "dev-words.txt", "--steps", a.steps, "--eval-every", a.steps, "--run-dir", ae,
                                    "--json", *a.extra))
        outputs = [json.loads(line) for line in charlm("seq2seq", "predict", ae, "-f", work / "dev-words.txt",
                                                       "--json").splitlines()]
        exact = float(np.mean([o["prediction"] == w for o, w in zip(outputs, dev_words)]))
        vectors = {}
        for split in ("train", "dev"):
            charlm("seq2seq", "encode", ae, "-f", work / f"{split}-words.txt", "--out", work / f"{split}.npy")
            vectors[split] = np.load(work / f"{split}.npy").astype(np.float64)
        languages = sorted(set(train_langs))
        index = {lang: i for i, lang in enumerate(languages)}
        y_train = np.array([index[lang] for lang in train_langs])
        y_dev = np.array([index.get(lang, -1) for lang in dev_langs])
        mean, std = vectors["train"].mean(axis=0), vectors["train"].std(axis=0) + 1e-6
        with threadpool_limits(1):   # NumPy's products on one thread: no spinning pool on a busy machine
            W = softmax_regression((vectors["train"] - mean) / std, y_train, len(languages))
        report = {"autoencoder": {"steps": summary["steps"], "seconds": summary["seconds"],
                                  "best": summary["best"], "settings": a.extra},
                  "dev_words": len(dev_words), "dev_exact_reconstruction": round(exact, 4),
                  "code_width": int(vectors["train"].shape[1]),
                  "logistic_regression": {
                      "train_accuracy": round(float(np.mean(predict(W, (vectors["train"] - mean) / std) == y_train)), 4),
                      "dev_accuracy": round(float(np.mean(predict(W, (vectors["dev"] - mean) / std) == y_dev)), 4)}}
        if a.classify_epochs:
            done = json.loads(charlm("classify", "train", a.train, "--dev", a.dev, "--epochs", a.classify_epochs,
                                     "--run-dir", work / "classifier", "--json"))
            report["classifier"] = {"epochs": a.classify_epochs, "steps": done["steps"],
                                    "dev_accuracy": done["best"]["scores"]["accuracy"] if done["best"] else None}
        print(json.dumps(report))


if __name__ == "__main__":
    main()
