"""Sampling controls (kernels/sampling_rule.constrain): banned ids, minimum length, repetition
penalty, no repeated n-gram and stop strings; the compiled and NumPy loops agree under them, and
what a model was never trained to produce (<unk>; <eos> without --eos) is never drawn."""
import importlib
import json

import numpy as np
import pytest
from cli_helpers import invoke

from charlm.data.tokenizer import Tokenizer
from charlm.kernels import generate_numpy
from charlm.kernels.sampling_rule import constrain, no_controls
from charlm.lm.checkpoint import load_checkpoint
from charlm.lm.sample import SampleOptions, Sampler, StopStrings
from tiny_models import make_model

G = importlib.import_module("charlm.kernels.generate")
CHAR = Tokenizer("char", ["<eos>", "<unk>"] + list("abcdefgh"))
pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py


def _controls(rng, V):
    banned = rng.random(V) < 0.2
    return (banned, int(rng.integers(0, 8)), float(rng.choice([1.0, 1.3, 0.7])), int(rng.integers(0, 4)))


def test_constrain_compiled_and_plain_agree_and_mean_what_they_say():
    rng = np.random.default_rng(1)
    V = 12
    for _ in range(200):
        logits = rng.standard_normal(V).astype(rng.choice([np.float32, np.float64]))
        history = rng.integers(0, 4, 20)   # few ids: many repeated n-grams
        n = int(rng.integers(0, 21))
        controls = _controls(rng, V)
        a, b = np.empty(V), np.empty(V)
        G.limit(logits, a, history, n, 0, controls)
        constrain(logits, b, history, n, 0, controls)
        np.testing.assert_array_equal(a, b)
        banned, min_length, penalty, no_repeat = controls
        assert np.all(b[banned] == -np.inf)
        if n < min_length:
            assert b[0] == -np.inf
        k = no_repeat - 1
        if no_repeat and n >= k:
            grams = {tuple(history[i:i + no_repeat]) for i in range(n - k)}
            for t in range(V):
                if (*history[n - k:n], t) in grams:
                    assert b[t] == -np.inf


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_loops_agree_token_for_token_under_controls(cell):
    model = make_model(cell, layers=2, V=10, E=4, H=16, dtype=np.float32, seed=3)
    sampler = Sampler(model, CHAR)
    weights = sampler._weights()
    rng = np.random.default_rng(4)
    for trial in range(6):
        controls = _controls(rng, 10)
        uniforms = rng.random(120)
        outs = []
        for loop in (G.generate, generate_numpy.generate):
            state, out = np.zeros((2, model.config.states, 16), np.float32), np.full(120, -1, np.int64)
            n1 = loop(*weights, state, 0, uniforms[:50], 1.0, 0, 1.0, 0, True, out, 0, controls)
            n2 = 0 if n1 < 50 else loop(*weights, state, int(out[49]), uniforms[50:], 1.0, 0, 1.0, 0, True, out,
                                        50, controls)
            outs.append(out[:n1 + n2].tolist())
        assert outs[0] == outs[1]
        assert not set(np.flatnonzero(controls[0])) & set(outs[0])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_loop_without_controls_draws_what_the_controlled_path_draws(cell):
    """No control set: the compiled loop skips ``constrain`` and draws from the logits themselves;
    controls that are set but change nothing (an N-gram longer than the sample) take the other path
    and must draw the very same ids, at every temperature and cut."""
    from charlm.kernels.sampling_rule import constrains

    model = make_model(cell, layers=2, V=10, E=4, H=16, dtype=np.float32, seed=5)
    weights = Sampler(model, CHAR)._weights()
    idle = (np.zeros(10, np.bool_), 0, 1.0, 10 ** 6)
    assert not constrains(no_controls(10)) and constrains(idle)
    rng = np.random.default_rng(6)
    for temperature, top_k, top_p in ((1.0, 0, 1.0), (0.0, 0, 1.0), (0.7, 4, 0.9), (1.5, 0, 0.5)):
        uniforms = rng.random(300)
        outs = []
        for controls in (no_controls(10), idle):
            state, out = np.zeros((2, model.config.states, 16), np.float32), np.full(300, -1, np.int64)
            n = G.generate(*weights, state, 0, uniforms, temperature, top_k, top_p, 0, False, out, 0, controls)
            outs.append((n, out.tolist(), state.tolist()))
        assert outs[0] == outs[1]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_ngram_repeats_in_any_sample(n):
    """Property: whatever the seed and temperature, no N tokens in a row occur twice in a sample
    (served by both loops: the samples are longer than NUMPY_TOKENS)."""
    tok = Tokenizer("char", ["<eos>", "<unk>"] + [chr(0x61 + i) for i in range(20)])
    sampler = Sampler(make_model("gru", layers=1, V=len(tok), E=4, H=8, seed=n), tok, ends=False)
    for seed in range(4):
        options = SampleOptions(seed=seed, temperature=[0.0, 0.5, 1.0, 2.0][seed], no_repeat_ngram=n,
                                max_length=300)
        ids = tok.encode("".join(sampler.stream("", options)))
        grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
        assert len(grams) == len(set(grams))


def test_min_length_and_repetition_penalty():
    sampler = Sampler(make_model("lstm", layers=1, V=len(CHAR), E=4, H=6, seed=2), CHAR)
    sampler.model.params["decoder.bias"][0] += 4.0   # <eos> likely everywhere
    lengths = [len("".join(sampler.stream("", SampleOptions(seed=s, min_length=30)))) for s in range(10)]
    assert min(lengths) >= 30
    plain = "".join(sampler.stream("", SampleOptions(seed=1, temperature=0, min_length=200, max_length=200)))
    varied = "".join(sampler.stream("", SampleOptions(seed=1, temperature=0, min_length=200, max_length=200,
                                                      repetition_penalty=5.0)))
    assert len(set(varied)) >= len(set(plain))


def test_stop_strings_cut_before_the_stop_even_across_pieces():
    stops = StopStrings(["XYZ", "Q"])
    shown = []
    for piece in ["abcX", "Y", "Zdef"]:
        text, stopped = stops.feed(piece)
        shown.append(text)
        if stopped:
            break
    assert "".join(shown) == "abc" and stopped
    stops = StopStrings(["XYZ"])
    assert stops.feed("abXY")[0] + stops.flush() == "abXY"
    sampler = Sampler(make_model("gru", layers=1, V=len(CHAR), E=4, H=6, seed=5), CHAR, ends=False)
    full = "".join(sampler.stream("", SampleOptions(seed=3, max_length=300)))
    stop = full[150:153]
    cut = "".join(sampler.stream("", SampleOptions(seed=3, max_length=300, stop=(stop,))))
    assert cut == full[:full.index(stop)]


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("words")
    words = [f"w{i}" for i in range(60)]
    rng = np.random.default_rng(0)
    text = "\n".join(" ".join(rng.choice(words, 8)) + " rare" + str(i) for i in range(400)) + "\n"
    (tmp / "words.txt").write_text(text)
    r = invoke("train", tmp / "words.txt", "--level", "word", "--min-count", "2", "--eos", "none", "--steps", "20",
               "--hidden", "16", "--layers", "1", "--seq-len", "16", "--batch-size", "8", "--run-dir", tmp / "run")
    assert r.exit_code == 0, r.output
    return tmp / "run"


def test_a_min_count_word_model_never_samples_unk_and_a_no_eos_model_runs_to_max_length(word_run):
    checkpoint = load_checkpoint(word_run)
    assert checkpoint.metadata["eos"] == "none"
    sampler = Sampler.from_checkpoint(checkpoint)
    assert sampler.banned_ids() == [0, 1]
    tok = checkpoint.tokenizer
    total = 0
    for seed in range(5):   # 10,000 tokens at a temperature that flattens the distribution
        text = "".join(sampler.stream("", SampleOptions(seed=seed, temperature=3.0, max_length=2000)))
        ids = tok.encode(text)
        assert len(ids) == 2000 and tok.unk_id not in ids and "<unk>" not in text
        total += len(ids)
    assert total == 10_000
    r = invoke("sample", word_run, "--max-length", "300", "--seed", "1", "--json")
    assert r.exit_code == 0 and len(tok.encode(json.loads(r.stdout)["samples"][0])) == 300
