"""Beam search (decoding/beam.py) and ``charlm sample --beam``: a beam of 1 is the greedy sample, a
wide enough beam is exhaustive search, every score is the model's own log-probability recomputed by
another pass, ``<unk>`` never comes out, and the command's output and errors.

Models are random-weight (2 layers, hidden 6, a vocabulary of <eos>, <unk> and three tokens) or one
tiny run trained in a few seconds.
"""
import itertools
import json

import numpy as np
import pytest
from cli_helpers import invoke, one_red_line

from charlm.data.builtin_corpora import pseudo_names
from charlm.data.tokenizer import Tokenizer
from charlm.decoding.beam import DEFAULT_LENGTH_PENALTY, BeamOptions, beam_search, normalised
from charlm.lm.beam_adapter import Continuation, beam_continuations
from charlm.lm.checkpoint import load_checkpoint
from charlm.lm.sample import SampleOptions, Sampler
from tiny_models import make_model

CHAR = Tokenizer("char", ["<eos>", "<unk>", "a", "b", "c"])
WORD = Tokenizer("word", ["<eos>", "<unk>", "red", "fox", "dog"], "whitespace")
pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py
PRIMES = {"char": ["", "b", "cab"], "word": ["", "fox", "red dog red"]}


def random_sampler(cell="lstm", tok=CHAR, seed=0, eos_bias=0.0, unk_bias=-30.0):
    """A random-weight model; the decoder biases of <eos> and <unk> moved (an untrained <unk> would
    otherwise be as likely as any token, and the greedy sample it is compared with may pick it)."""
    model = make_model(cell, layers=2, V=len(tok), E=4, H=6, dtype=np.float64, seed=seed)
    model.params["decoder.bias"][tok.eos_id] += eos_bias
    model.params["decoder.bias"][tok.unk_id] += unk_bias
    return Sampler(model, tok)


def recomputed_log_probs(sampler, prime, continuations) -> np.ndarray:
    """Summed natural-log probabilities of each continuation of ``prime`` (id sequences), from the
    model's batched training forward pass over <eos> + prime + continuation, not the generation loop
    the search runs on."""
    eos, prime_ids = sampler.tokenizer.eos_id, [int(i) for i in sampler.tokenizer.encode(prime)]
    seqs = [[eos] + prime_ids + list(c) for c in continuations]
    T, B = max(len(s) for s in seqs) - 1, len(seqs)
    x = np.zeros((T, B), np.int64)   # padding after a sequence's end is never read back
    for b, seq in enumerate(seqs):
        x[:len(seq) - 1, b] = seq[:-1]
    state = np.repeat(sampler.start_state[:, :, None, :], B, axis=2)
    logits, _, _ = sampler.model.forward(x, state)
    logits = logits.reshape(T, B, -1).astype(np.float64)
    lp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    n = len(prime_ids)
    return np.array([sum(lp[n + i, b, t] for i, t in enumerate(c)) for b, c in enumerate(continuations)])


# -- the search itself, on a model that is a table ---------------------------------------------


class Bigram:
    """A BeamModel whose next token depends on the last one only; its states are a list of the
    steps each hypothesis has taken (the search never looks inside them)."""

    def __init__(self, table):
        with np.errstate(divide="ignore"):   # probability 0: log-probability -inf, never expanded
            self.log_table = np.log(np.asarray(table))
        self.widths = []

    def step(self, tokens, states):
        self.widths.append(len(tokens))
        return self.log_table[tokens], [s + 1 for s in states]

    def select(self, states, rows):
        return [states[r] for r in rows]


#          eos  unk  a     b     c      (rows: the last token; <eos> starts)
TABLE = [[0.0, 0.0, 0.55, 0.45, 0.0],
         [1.0, 0.0, 0.0, 0.0, 0.0],
         [0.3, 0.0, 0.0, 0.35, 0.35],
         [0.9, 0.0, 0.0, 0.0, 0.1],
         [1.0, 0.0, 0.0, 0.0, 0.0]]


def test_search_keeps_finished_hypotheses_aside_and_stops_when_the_beam_is_full():
    """Greedy takes "a" (0.55) and ends with p = 0.55 * 0.35 * 0.9; a beam of 2 also keeps "b" and
    finds "b<eos>" (0.45 * 0.9), which finishes at step 2 and leaves one slot for "a b <eos>"."""
    (greedy,) = beam_search(Bigram(TABLE), [0], 0, 0, BeamOptions(beam=1, length_penalty=0))
    assert greedy.tokens == (2, 3, 0) and greedy.finished
    assert greedy.log_prob == pytest.approx(np.log(0.55 * 0.35 * 0.9))
    model = Bigram(TABLE)
    found = beam_search(model, [0], 0, 0, BeamOptions(beam=2, length_penalty=0), banned=[1])
    assert [h.tokens for h in found] == [(3, 0), (2, 3, 0)]   # a-b beats a-c on the tie: lower id
    assert [h.log_prob for h in found] == pytest.approx(np.log([0.45 * 0.9, 0.55 * 0.35 * 0.9]))
    assert model.widths == [1, 2, 1]   # the finished hypothesis stopped taking a slot's step


def test_max_length_returns_open_hypotheses_and_the_length_penalty_reranks():
    cut = beam_search(Bigram(TABLE), [0], 0, 0, BeamOptions(beam=2, max_length=1, length_penalty=0))
    assert [(h.tokens, h.finished) for h in cut] == [((2,), False), ((3,), False)]
    # alpha = 1: per-token log-probability; "a b <eos>" (3 tokens) no longer loses for its length
    found = beam_search(Bigram(TABLE), [0], 0, 0, BeamOptions(beam=2, length_penalty=1.0))
    assert [h.score for h in found] == pytest.approx([h.log_prob / len(h.tokens) for h in found])
    assert found[0].score >= found[1].score


@pytest.mark.parametrize("bad", [dict(beam=0), dict(beam=2.5), dict(max_length=0), dict(length_penalty=-0.1),
                                 dict(length_penalty=float("nan")), dict(length_penalty=True)])
def test_options_are_checked(bad):
    from charlm.errors import ConfigError

    with pytest.raises(ConfigError, match=next(iter(bad))):
        BeamOptions(**bad).validate()


# -- on language models ------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "jordan"])
@pytest.mark.parametrize("tok", [CHAR, WORD], ids=["char", "word"])
def test_a_beam_of_one_is_the_greedy_sample(cell, tok):
    """Token for token, past the NumPy loop's first tokens into the compiled loop's (<eos> made rare
    so the samples run long), with and without a prime."""
    sampler = random_sampler(cell, tok, seed=1, eos_bias=-3.0)
    for prime in PRIMES[tok.level]:
        greedy = "".join(sampler.stream(prime, SampleOptions(temperature=0, max_length=300)))
        (best,) = beam_continuations(sampler, prime, BeamOptions(beam=1, max_length=300))
        assert best.text == greedy
        ids = [int(i) for i in tok.encode(greedy[len(prime):])]
        assert best.ids == (ids if len(ids) == 300 else ids + [tok.eos_id])


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("prime", ["", "ca"])
def test_a_wide_beam_is_exhaustive_search(alpha, prime):
    """Every sequence up to 4 tokens over {a, b, c} ended by <eos>, and every 4-token one without:
    a beam as wide as their number returns them all, ranked as scoring each one on its own ranks
    them, with the model's log-probabilities recomputed by another pass."""
    sampler = random_sampler("gru", CHAR, seed=3)
    T, letters = 4, (2, 3, 4)
    outputs = [seq + (0,) for n in range(T) for seq in itertools.product(letters, repeat=n)]
    outputs += list(itertools.product(letters, repeat=T))
    log_probs = recomputed_log_probs(sampler, prime, outputs)
    want = sorted(zip(outputs, log_probs), key=lambda o: -normalised(o[1], len(o[0]), alpha))
    got = beam_continuations(sampler, prime, BeamOptions(beam=len(outputs), max_length=T, length_penalty=alpha))
    assert [tuple(c.ids) for c in got] == [o for o, _ in want]
    np.testing.assert_allclose([c.log_prob for c in got], [lp for _, lp in want], rtol=1e-9)
    np.testing.assert_allclose([c.score for c in got], [normalised(c.log_prob, len(c.ids), alpha) for c in got])


@pytest.mark.parametrize("tok", [CHAR, WORD], ids=["char", "word"])
def test_unk_is_never_generated(tok):
    """<unk> is the likeliest token everywhere here: neither greedy sampling nor the beam emits it."""
    sampler = random_sampler("lstm", tok, seed=2, unk_bias=6.0)
    assert "<unk>" not in "".join(sampler.stream("", SampleOptions(temperature=0, max_length=20)))
    for width in (1, 4):
        for c in beam_continuations(sampler, "", BeamOptions(beam=width, max_length=20)):
            assert tok.unk_id not in c.ids and "<unk>" not in c.tokens and "<unk>" not in c.text


# -- the command -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def names_run(tmp_path_factory):
    """A tiny names model (one name a line, <eos> at each line end), trained for a few seconds."""
    tmp = tmp_path_factory.mktemp("beam")
    corpus = tmp / "names.txt"
    corpus.write_text(pseudo_names(600, seed=1), encoding="utf-8")
    result = invoke("train", corpus, "--hidden", 32, "--embed", 8, "--layers", 1, "--seq-len", 16,
                    "--batch-size", 8, "--eos", "line", "--lr", "0.01", "--steps", 80, "--eval-every", 40,
                    "--run-dir", tmp / "names")
    assert result.exit_code == 0, result.output
    return tmp / "names"


def test_beam_text_lines_best_first(names_run):
    result = invoke("sample", names_run, "--beam", 3, "-n", 20, "--prime", "ma", "--length-penalty", 0.6)
    assert result.exit_code == 0, result.output
    assert "beam search" in result.stderr and "length penalty 0.6" in result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(rows) == 3 and all(len(r) == 3 and r[2].startswith("ma") for r in rows)
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    plain = invoke("sample", names_run, "--beam", 3, "-n", 20).stdout.splitlines()   # no penalty by default:
    assert [len(line.split("\t")) for line in plain] == [2, 2, 2]                      # no score column


def test_beam_of_one_on_the_command_line_is_temperature_zero(names_run):
    for prime in ("", "k"):
        beam = invoke("sample", names_run, "--beam", 1, "-n", 30, "--prime", prime).stdout
        greedy = invoke("sample", names_run, "-t", 0, "-n", 30, "--prime", prime).stdout
        assert beam.rstrip("\n").split("\t")[-1] == greedy.rstrip("\n")


def test_beam_json_schema_and_scores_are_the_models(names_run):
    result = invoke("sample", names_run, "--beam", 4, "-n", 15, "--prime", "b", "--json", "--length-penalty", 1)
    data = json.loads(result.stdout)
    assert data["beam"] == 4 and data["length_penalty"] == 1.0 and data["max_length"] == 15 and data["prime"] == "b"
    hyps = data["hypotheses"]
    assert len(hyps) == 4 and all(set(h) == {"text", "log_prob", "score", "tokens"} for h in hyps)
    assert all(h["text"] == "b" + "".join(t for t in h["tokens"] if t != "<eos>") for h in hyps)
    assert all(h["tokens"][-1] == "<eos>" or len(h["tokens"]) == 15 for h in hyps)
    sampler = Sampler.from_checkpoint(load_checkpoint(names_run))
    ids = [[sampler.tokenizer.tokens.index(t) for t in h["tokens"]] for h in hyps]
    want = recomputed_log_probs(sampler, "b", ids)   # float32 model: two summation orders
    np.testing.assert_allclose([h["log_prob"] for h in hyps], want, rtol=1e-4, atol=1e-4)
    assert [h["score"] for h in hyps] == pytest.approx([h["log_prob"] / len(h["tokens"]) for h in hyps])


def test_beam_text_is_escaped_onto_one_line(names_run, monkeypatch):
    import charlm.lm.beam_adapter as adapter

    forged = Continuation("x\x1b[2J\ny", ["x"], [2], -1.0, -1.0)
    monkeypatch.setattr(adapter, "beam_continuations", lambda *a, **k: [forged])
    out = invoke("sample", names_run, "--beam", 1).stdout
    assert out == "-1.0000\tx\\x1b[2J\\x0ay\n"


def test_help_states_the_default_length_penalty():
    text = " ".join(invoke("sample", "-h").stdout.split())
    assert f"likeliest) [default: {DEFAULT_LENGTH_PENALTY:g}]" in text   # the help's default is the library's


@pytest.mark.parametrize("args, code, message", [
    (["--beam", "0"], 2, "--beam"),
    (["--beam", "two"], 2, "--beam"),
    (["--beam", "2", "-t", "0.5"], 2, "--beam cannot be combined with --temperature"),
    (["--beam", "2", "--top-k", "3", "--top-p", "0.9"], 2, "--top-k, --top-p"),
    (["--beam", "2", "--num-samples", "2"], 2, "--num-samples"),
    (["--beam", "2", "--seed", "1"], 2, "--seed"),
    (["--length-penalty", "1"], 2, "add --beam K"),
    (["--beam", "2", "--length-penalty", "-1"], 1, "length_penalty must be a number >= 0"),
    (["--beam", "2", "--length-penalty", "inf"], 1, "length_penalty must be a number >= 0"),
    (["--beam", "2", "-n", "0"], 1, "max_length must be an integer >= 1"),
    (["--beam", "2", "--prime", "Q€"], 1, "--prime"),
])
def test_beam_errors_are_one_line(names_run, args, code, message):
    assert message in one_red_line(invoke("sample", names_run, *args), code=code)
