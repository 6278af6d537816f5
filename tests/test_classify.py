"""Sequence classification end to end: data, training to 100 % on a separable task, metrics,
checkpoints that load into PyTorch with the same logits, exact resume, and the CLI."""
import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from charlm.cli import main
from charlm.errors import CorpusError
from charlm.seqtask import data, store
from charlm.seqtask.config import SeqModelConfig, SeqTrainConfig
from charlm.seqtask.metrics import classification_report
from charlm.seqtask.predict import Predictor
from charlm.seqtask.train import SeqTrainer
from charlm.training.events import DoneEvent


def toy_examples(n, seed=0):
    """Label = which alphabet the word is drawn from: separable, lengths 1..8."""
    r = random.Random(seed)
    out = []
    for _ in range(n):
        label = r.choice(["vowel", "cons"])
        alphabet = "aeiou" if label == "vowel" else "bcdfg"
        out.append(data.Example("".join(r.choice(alphabet) for _ in range(r.randint(1, 8))), label))
    return out


def write_tsv(path, examples, header=True):
    path.write_text(("text\tlabel\n" if header else "") + "".join(f"{e.tokens}\t{e.label}\n" for e in examples))
    return path


FAST = dict(hidden=12, embed=6, dropout=0.0)
FAST_TRAIN = dict(lr=0.02, warmup_steps=0, batch_size=16, seed=3)


def train_toy(tmp_path, epochs=6, **model):
    config = SeqModelConfig(**(FAST | model))
    trainer = SeqTrainer(toy_examples(200), toy_examples(60, 1), config,
                         SeqTrainConfig(epochs=epochs, **FAST_TRAIN), tmp_path / "run")
    events = list(trainer.events())
    return trainer, events


def test_separable_task_learned_to_100_percent(tmp_path):
    trainer, events = train_toy(tmp_path)
    assert isinstance(events[-1], DoneEvent) and events[-1].reason == "epochs"
    assert events[-1].best_value == 1.0
    result = Predictor.load(tmp_path / "run").classify(["aeiou", "bcd"], top_k=2)
    assert [r["labels"][0]["label"] for r in result] == ["vowel", "cons"]
    assert abs(sum(x["probability"] for x in result[0]["labels"]) - 1.0) < 1e-6


@pytest.mark.parametrize("pooling", ["final", "mean"])
def test_checkpoint_loads_into_pytorch_with_the_same_logits(tmp_path, pooling):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    train_toy(tmp_path, epochs=1, layers=2, pooling=pooling)
    ck = store.load(tmp_path / "run" / store.MODEL_FILE)
    c = ck.config
    module = torch.nn.ModuleDict({
        "embedding": torch.nn.Embedding(c.vocab_size, c.embed),
        "rnn": torch.nn.LSTM(c.embed, c.hidden, num_layers=c.layers, bidirectional=True),
        "head": torch.nn.Linear(2 * c.hidden, c.num_labels)})
    module.load_state_dict({k: torch.from_numpy(v) for k, v in ck.tensors.items()}, strict=True)
    texts = ["aeiouaa", "bcd", "a", "gfdb"]
    ids = [ck.tokenizer.encode(t, dtype=np.int64) for t in texts]
    lengths = torch.tensor([len(i) for i in ids])
    padded = torch.zeros((int(lengths.max()), len(ids)), dtype=torch.long)
    for b, i in enumerate(ids):
        padded[:len(i), b] = torch.from_numpy(i)
    with torch.no_grad():
        packed = pack_padded_sequence(module["embedding"](padded), lengths, enforce_sorted=False)
        out, (h_n, _) = module["rnn"](packed)
        out, _ = pad_packed_sequence(out)
        pooled = torch.cat([h_n[-2], h_n[-1]], 1) if pooling == "final" else out.sum(0) / lengths[:, None]
        logits_t = module["head"](pooled).numpy()
    model = ck.build_model(np.float64)
    logits, _ = model.forward(np.stack([np.pad(i, (0, int(lengths.max()) - len(i))) for i in ids], 1), lengths.numpy())
    np.testing.assert_allclose(logits, logits_t, rtol=1e-5, atol=1e-5)


def test_resume_is_exact(tmp_path):
    straight, _ = train_toy(tmp_path / "a", epochs=2, dropout=0.3)
    config = SeqModelConfig(**(FAST | {"dropout": 0.3}))
    first = SeqTrainer(toy_examples(200), toy_examples(60, 1), config,
                       SeqTrainConfig(epochs=2, **FAST_TRAIN), tmp_path / "b" / "run")
    for event in first.events():
        if getattr(event, "step", 0) == 7:
            first.request_stop()
    resumed = SeqTrainer.resume(tmp_path / "b" / "run", toy_examples(200), toy_examples(60, 1))
    assert resumed.pos.step == 7
    list(resumed.events())
    np.testing.assert_array_equal(resumed.model.flat, straight.model.flat)


def test_classification_report_by_hand():
    gold = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    r = classification_report(gold, pred, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(0.6)
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    a, b, c = r["per_class"]
    assert (a["precision"], a["recall"]) == (0.5, 0.5)
    assert (b["precision"], b["recall"]) == pytest.approx((2 / 3, 1.0))
    assert r["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_tsv_header_detection_and_errors(tmp_path):
    path = write_tsv(tmp_path / "a.tsv", toy_examples(5))
    assert len(data.read_tsv(path)) == 5
    assert len(data.read_tsv(write_tsv(tmp_path / "b.tsv", toy_examples(5), header=False))) == 5
    (tmp_path / "c.tsv").write_text("abc\tx\nno tab here\n")
    with pytest.raises(CorpusError, match=r"c.tsv:2: expected text<TAB>label"):
        data.read_tsv(tmp_path / "c.tsv")
    (tmp_path / "d.tsv").write_text("abc\t \n")
    with pytest.raises(CorpusError, match="empty label"):
        data.read_tsv(tmp_path / "d.tsv")


def run_cli(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_cli_train_eval_predict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    write_tsv(tmp_path / "train.tsv", toy_examples(200))
    write_tsv(tmp_path / "dev.tsv", toy_examples(60, 1))
    r = run_cli("classify", "train", "train.tsv", "--dev", "dev.tsv", "--epochs", "6", "--hidden", "12",
                "--embed", "6", "--lr", "0.02", "--warmup-steps", "0", "--batch-size", "16", "--dropout", "0")
    assert r.exit_code == 0, r.output
    assert "best model" in r.output
    r = run_cli("classify", "eval", "dev.tsv", "--json")
    result = json.loads(r.stdout)
    assert result["accuracy"] == 1.0 and result["labels"] == ["cons", "vowel"]
    assert result["confusion"] == [[s["support"], 0] if s["label"] == "cons" else [0, s["support"]]
                                   for s in result["per_class"]]
    r = run_cli("classify", "eval", "dev.tsv")
    assert "macro-F1" in r.stdout and "confusion" in r.stdout
    (tmp_path / "words.txt").write_text("aei\n\nbcd\n")
    r = run_cli("classify", "predict", "-f", "words.txt", "uo\x1b[2J", "--json", "-k", "1")
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["labels"][0]["label"] for x in lines] == ["vowel", "vowel", "cons"]
    r = run_cli("classify", "predict", "uo\x1b[2J")
    assert "\x1b" not in r.stdout and "\\x1b" in r.stdout


def test_cli_train_names_the_wide_path_in_its_model_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    write_tsv(tmp_path / "train.tsv", toy_examples(40))
    r = run_cli("classify", "train", "train.tsv", "--epochs", "1", "--hidden", "4", "--embed", "4",
                "--wide-ngrams", "3", "--wide-buckets", "64")
    assert r.exit_code == 0, r.output
    assert "a linear model of hashed 1..3-grams, 64 buckets" in r.output


@pytest.mark.parametrize("args, message", [
    (["classify", "train", "missing.tsv"], "missing.tsv: no such file"),
    (["classify", "train", "bad.tsv"], "bad.tsv:1: expected text<TAB>label"),
    (["classify", "train"], "give the training file"),
    (["classify", "eval", "train.tsv"], "no classify runs"),
    (["classify", "predict", "x"], "no classify runs"),
    (["classify", "train", "train.tsv", "--cell", "jordan"], "Invalid value for '--cell'"),
    (["classify", "train", "--resume", "nowhere"], "nowhere: no such run"),
    (["classify", "predict", "junk.safetensors", "x"], "not a safetensors file"),
    (["classify", "train", "train.tsv", "--dev-fraction", "0.5", "--hidden", "0"], "Invalid value for '--hidden'"),
    (["classify", "train", "train.tsv", "--ngrams", "1"], "ngrams must be 0 (none) or from 2 to 8, got 1"),
    (["classify", "train", "train.tsv", "--ngrams", "3", "--buckets", "0"], "Invalid value for '--buckets'"),
    (["classify", "train", "train.tsv", "--threads", "-1"], "Invalid value for '--threads'"),
    (["classify", "train", "train.tsv", "--wide-ngrams", "9"], "wide_ngrams must be from 0 (none) to 8, got 9"),
    (["classify", "train", "train.tsv", "--wide-dropout", "1"], "Invalid value for '--wide-dropout'"),
    (["classify", "train", "train.tsv", "--members", "2", "--member-salts"], "member_salts salts the members' n-gram hashes: give ngrams or wide_ngrams too"),
    (["classify", "train", "train.tsv", "--buckets", "64"], "buckets is for the n-gram embeddings, which ngrams turns on"),
    (["classify", "train", "train.tsv", "--ngrams", "0", "--buckets", "64"], "give ngrams too"),
    (["classify", "train", "train.tsv", "--wide-buckets", "64"], "wide_buckets is for the wide path"),
    (["classify", "train", "train.tsv", "--wide-dropout", "0.3"], "wide_dropout is for the wide path"),
])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    write_tsv(tmp_path / "train.tsv", toy_examples(20))
    (tmp_path / "bad.tsv").write_text("no tab\n")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0
    assert message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_a_language_model_checkpoint_is_named_as_such(tmp_path):
    from safetensors.numpy import save_file

    save_file({"encoder.weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "lm.safetensors"),
              metadata={"charlm.format": "1", "charlm.config": "{}"})
    with pytest.raises(Exception, match="not a classifier or tagger checkpoint \\(a language model\\)"):
        store.load(tmp_path / "lm.safetensors")


def test_eval_refuses_unknown_labels_and_the_wrong_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_toy(tmp_path, epochs=1)
    (tmp_path / "other.tsv").write_text("abc\tvowel\nxyz\tklingon\n")
    r = CliRunner().invoke(main, ["classify", "eval", str(tmp_path / "run"), "other.tsv"])
    assert r.exit_code == 1 and "label 'klingon' was not in the training data" in r.stderr
    r = CliRunner().invoke(main, ["tag", "predict", str(tmp_path / "run"), "abc"])
    assert r.exit_code == 1 and "is a classifier, not a tagger" in r.stderr
