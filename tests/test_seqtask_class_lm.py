"""Class language models (--class-lm) and their pooling with the classifier: interpolated
Kneser-Ney against a plain dictionary-counting reference (every next-token distribution sums to
one), storage, the pooling weights' fit, checkpoints and bad settings."""
import json
import math
import random
from collections import Counter

import numpy as np
import pytest
from test_classify import FAST_TRAIN, toy_examples

from charlm.errors import CheckpointError, ConfigError
from charlm.seqtask import data, fusion, store
from charlm.seqtask.class_lm import DISCOUNT, ClassLM
from charlm.seqtask.config import SeqModelConfig, SeqTrainConfig
from charlm.seqtask.predict import Predictor
from charlm.seqtask.train import SeqTrainer
from charlm.training.events import EvalEvent

V, N, C = 5, 3, 3


class ReferenceKN:
    """Interpolated Kneser-Ney of one label's texts, by counting tuples in dictionaries: the
    highest order's counts, every lower order's continuation counts, one discount, a uniform
    distribution over the V tokens and the end marker below the unigrams."""

    def __init__(self, texts, order, vocab_size):
        self.order, self.V = order, vocab_size
        counts = [None] * (order + 1)
        counts[order] = Counter(g for t in texts for g in self._grams(t))
        for n in range(order - 1, 0, -1):
            counts[n] = Counter(g[1:] for g in counts[n + 1])
        self.counts = counts
        self.totals = [Counter() for _ in range(order + 1)]
        self.types = [Counter() for _ in range(order + 1)]
        for n in range(1, order + 1):
            for g, k in counts[n].items():
                self.totals[n][g[:-1]] += k
                self.types[n][g[:-1]] += 1

    def _framed(self, text):
        return [self.V] * (self.order - 1) + [int(t) for t in text] + [self.V + 1]

    def _grams(self, text):
        f = self._framed(text)
        return [tuple(f[i - self.order + 1:i + 1]) for i in range(self.order - 1, len(f))]

    def p(self, history, token):
        p = 1.0 / (self.V + 1)
        for n in range(1, self.order + 1):
            context = tuple(history[len(history) - (n - 1):]) if n > 1 else ()
            total = self.totals[n][context]
            if total:
                p = (max(self.counts[n][context + (token,)] - DISCOUNT, 0) + DISCOUNT * self.types[n][context] * p) / total
        return p

    def log_likelihood(self, text):
        return sum(math.log(self.p(g[:-1], g[-1])) for g in self._grams(text))


def random_texts(seed, count, longest=7):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, V, rng.integers(1, longest + 1)) for _ in range(count)], rng.integers(0, C, count)


@pytest.mark.parametrize("order", [1, 3, 5])
def test_log_likelihoods_match_the_counting_reference_and_every_distribution_sums_to_one(order):
    texts, labels = random_texts(0, 80)
    lm = ClassLM.fit(texts, labels, order, V, C)
    references = [ReferenceKN([t for t, lab in zip(texts, labels) if lab == c], order, V) for c in range(C)]
    queries = random_texts(1, 25, longest=9)[0] + texts[:5]
    expected = [[references[c].log_likelihood(q) for c in range(C)] for q in queries]
    np.testing.assert_allclose(lm.log_likelihoods(queries), expected, rtol=1e-12, atol=1e-12)
    for ref in references:   # histories seen and unseen: the next token (or the end) is certain to be something
        for history in ([V] * (order - 1), [V] * (order - 1) + [2, 3], [4, 4, 4, 1][-max(order - 1, 0):] if order > 1 else []):
            assert sum(ref.p(history, x) for x in [*range(V), V + 1]) == pytest.approx(1.0, abs=1e-12)


def test_chunks_posteriors_and_an_empty_label():
    texts, labels = random_texts(2, 60)
    labels[labels == 2] = 1   # label 2 has no training text: uniform below every order
    lm = ClassLM.fit(texts, labels, 4, V, C)
    queries = random_texts(3, 40)[0]
    whole = lm.log_likelihoods(queries)
    np.testing.assert_allclose(whole[:, 2], [(len(q) + 1) * math.log(1 / (V + 1)) for q in queries])
    import charlm.seqtask.class_lm as module

    small, module.CHUNK = module.CHUNK, 7   # a chunk of a text or two at a time: the same numbers
    try:
        np.testing.assert_array_equal(lm.log_likelihoods(queries), whole)
    finally:
        module.CHUNK = small
    prior = np.log(np.bincount(labels, minlength=C).clip(1) / len(labels))
    joint = whole + prior
    expected = joint - np.log(np.exp(joint).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(lm.log_posteriors(queries), expected, rtol=1e-12)


def test_the_tables_round_trip_and_malformed_ones_are_refused():
    texts, labels = random_texts(4, 50)
    lm = ClassLM.fit(texts, labels, 3, V, C)
    arrays = lm.arrays()
    assert set(arrays) == {"class_lm.label_counts"} | {f"class_lm.{n}.{t}" for n in (1, 2, 3)
                                                       for t in ("grams", "counts", "contexts", "totals", "types")}
    again = ClassLM.from_arrays(arrays, 3, V, C)
    np.testing.assert_array_equal(again.log_likelihoods(texts), lm.log_likelihoods(texts))
    for change in ({"class_lm.2.grams": arrays["class_lm.2.grams"][::-1]},            # not sorted
                   {"class_lm.1.counts": arrays["class_lm.1.counts"][:-1]},            # shapes disagree
                   {"class_lm.3.totals": arrays["class_lm.3.totals"] * 0},             # a context followed by nothing
                   {"class_lm.1.types": arrays["class_lm.1.types"].astype(np.float64)},
                   {"class_lm.label_counts": arrays["class_lm.label_counts"][:2]}):
        with pytest.raises(ValueError):
            ClassLM.from_arrays(arrays | change, 3, V, C)
    with pytest.raises(ValueError, match="order 4"):
        ClassLM.from_arrays(arrays, 4, V, C)


def test_the_fit_finds_the_weights_that_minimise_the_log_loss():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 4, 3000)
    truth = np.eye(4)[gold]

    def log_probs(signal, noise):
        z = signal * truth + rng.normal(0, noise, truth.shape)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    classifier, lms = log_probs(1.5, 1.0), log_probs(4.0, 3.0)   # the second overconfident, informative
    w = fusion.fit(classifier, lms, gold)
    assert 0 < w.classifier and 0 < w.lms

    def loss(a, b):
        return -fusion.pool(classifier, lms, fusion.Weights(a, b))[np.arange(len(gold)), gold].mean()
    best = loss(w.classifier, w.lms)
    assert best < loss(1.0, 0.0)
    for da, db in ((0.02, 0), (-0.02, 0), (0, 0.02), (0, -0.02)):   # a minimum: no neighbour is lower
        assert best <= loss(w.classifier + da, w.lms + db) + 1e-12
    uniform = np.log(np.full(truth.shape, 0.25))   # says nothing: its weight stays 0
    assert fusion.fit(classifier, uniform, gold).lms == 0.0
    assert fusion.fit(classifier[:0], lms[:0], gold[:0]) == fusion.Weights()
    assert fusion.Weights.from_dict(w.as_dict()) == w
    for bad in (None, {"classifier": 1.0}, {"classifier": -1, "lms": 0}, {"classifier": True, "lms": 0},
                {"classifier": float("nan"), "lms": 0}):
        with pytest.raises(ValueError):
            fusion.Weights.from_dict(bad)


def suffix_examples(n, seed):
    """Label = the word's ending (-ka, -ko, -ki), the stems shared and a tenth of the labels
    shuffled: the n-gram models read the ending the way it is written."""
    r = random.Random(seed)
    out = []
    for _ in range(n):
        label = r.choice(["ka", "ko", "ki"])
        stem = "".join(r.choice("bdgmnprst") + r.choice("aeiou") for _ in range(r.randint(1, 3)))
        out.append(data.Example(stem + label, label if r.random() > 0.1 else r.choice(["ka", "ko", "ki"])))
    return out


def test_a_pooled_run_scores_stores_and_reloads_its_weights(tmp_path):
    config = SeqModelConfig(hidden=8, embed=4, dropout=0.0, class_lm=3)
    trainer = SeqTrainer(suffix_examples(300, 0), suffix_examples(90, 1), config,
                         SeqTrainConfig(epochs=2, **FAST_TRAIN), tmp_path / "run")
    evals = [e for e in trainer.events() if isinstance(e, EvalEvent)]
    ck = store.load(tmp_path / "run")
    assert ck.config.class_lm == 3 and isinstance(ck.class_lms, ClassLM)
    assert not any(k.startswith("class_lm.") for k in ck.tensors)   # the weights alone load into torch modules
    stored = json.loads(json.dumps(ck.metadata["fusion"]))
    assert fusion.Weights.from_dict(stored) == ck.fusion and ck.fusion.lms > 0
    best = max(evals, key=lambda e: e.scores["accuracy"])
    predictor = Predictor.load(tmp_path / "run")
    dev = tmp_path / "dev.tsv"
    dev.write_text("".join(f"{e.tokens}\t{e.label}\n" for e in suffix_examples(90, 1)))
    result = predictor.evaluate(dev, header="no")
    assert result["accuracy"] == pytest.approx(best.scores["accuracy"])
    assert result["loss"] == pytest.approx(best.scores["loss"], rel=1e-5)
    assert result["pooled"] == {"class_lm": 3, **ck.fusion.as_dict()}
    (top,) = predictor.classify(["bapiko"], top_k=3)
    assert sum(x["probability"] for x in top["labels"]) == pytest.approx(1.0)
    last = store.load(tmp_path / "run" / "last.safetensors")
    assert last.class_lms is not None and last.fusion == ck.fusion   # last holds the last evaluation's fit


def test_without_a_dev_split_the_classifier_is_left_alone(tmp_path):
    config = SeqModelConfig(hidden=8, embed=4, dropout=0.0, class_lm=2)
    trainer = SeqTrainer(toy_examples(100), None, config, SeqTrainConfig(epochs=1, **FAST_TRAIN), tmp_path / "run")
    list(trainer.events())
    assert store.load(tmp_path / "run").fusion == fusion.Weights()


def test_tampered_tables_and_integer_weights_are_refused(tmp_path):
    from test_fuzz import craft, split

    config = SeqModelConfig(hidden=8, embed=4, dropout=0.0, class_lm=2)
    trainer = SeqTrainer(toy_examples(60), toy_examples(20, 1), config, SeqTrainConfig(epochs=1, **FAST_TRAIN),
                         tmp_path / "run")
    list(trainer.events())
    header, body = split((tmp_path / "run" / "model.safetensors").read_bytes())
    bad = tmp_path / "bad.safetensors"

    def refused(h, words):
        bad.write_bytes(craft(h, body))
        with pytest.raises(CheckpointError) as e:
            store.load(bad)
        assert all(w in str(e.value) for w in words), str(e.value)
    h = json.loads(json.dumps(header))
    h["class_lm.2.keys"] = h.pop("class_lm.2.grams")   # a table renamed
    refused(h, ["class language model"])
    h = json.loads(json.dumps(header))
    h["head.bias"]["dtype"] = "I64"   # integers only in the class_lm tables
    refused(h, ["head.bias", "I64"])
    h = json.loads(json.dumps(header))
    h["__metadata__"]["charlm.fusion"] = json.dumps({"classifier": -1, "lms": 0})
    refused(h, ["fusion"])


@pytest.mark.parametrize("bad, message", [
    (dict(class_lm=9), "class_lm must be from 0"), (dict(class_lm=-1), "class_lm"),
    (dict(class_lm=3, task="tag"), "classifiers only")])
def test_bad_settings_are_one_clear_error(bad, message):
    with pytest.raises(ConfigError, match=message):
        SeqModelConfig(vocab_size=V, num_labels=3, **bad).validate()


def test_word_level_texts_get_word_models(tmp_path):
    """At the word level the models count word n-grams; an unseen word is <unk>, below every order."""
    r = random.Random(0)
    topics = {"food": "bread soup apple cheese eat cook", "sea": "boat wave fish sail tide shore"}

    def sentences(n):
        return [data.Example(" ".join(r.choice(topics[label].split()) for _ in range(r.randint(2, 6))), label)
                for label in (r.choice(sorted(topics)) for _ in range(n))]
    config = SeqModelConfig(level="word", hidden=8, embed=4, dropout=0.0, class_lm=2)
    trainer = SeqTrainer(sentences(120), sentences(40), config, SeqTrainConfig(epochs=2, **FAST_TRAIN), tmp_path / "run")
    list(trainer.events())
    predictor = Predictor.load(tmp_path / "run")
    (sea, food) = predictor.classify(["boat fish zebra", "soup cheese"], top_k=1)
    assert sea["labels"][0]["label"] == "sea" and food["labels"][0]["label"] == "food"
    assert predictor.checkpoint.class_lms.vocab_size == predictor.checkpoint.config.vocab_size
