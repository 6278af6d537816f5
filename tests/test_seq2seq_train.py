"""The encoder-decoder learns a transduction: reversing strings of 3-7 letters from a 6-letter alphabet,
by a short training loop with Adam, decoded greedily; and greedy decoding is a beam of one."""
import math

import numpy as np
import pytest

from charlm.optim import Adam, clip_grad_norm
from charlm.seq2seq.model import Seq2SeqConfig, Seq2SeqModel

LETTERS, BOS, EOS = 6, 6, 7


def reversal_batch(rng, B):
    """src (7, B) right-padded with junk, lengths, tgt_in = BOS + reversed, tgt_out = reversed + EOS."""
    lengths = rng.integers(3, 8, B)
    src = rng.integers(0, LETTERS, (7, B))
    tgt_in = np.full((8, B), -1)
    tgt_out = np.full((8, B), -1)
    for b, L in enumerate(lengths):
        tgt_in[0, b] = BOS
        tgt_in[1:L + 1, b] = src[:L, b][::-1]
        tgt_out[:L, b] = src[:L, b][::-1]
        tgt_out[L, b] = EOS
        src[L:, b] = 99       # never read
    return src, lengths, tgt_in, tgt_out, lengths + 1


def train(cell, kind, steps=400, seed=0):
    config = Seq2SeqConfig(src_vocab=LETTERS, tgt_vocab=LETTERS + 2, cell=cell, embed=16, hidden=32,
                           attention=kind)
    model = Seq2SeqModel(config, np.float32).init_weights(np.random.default_rng(seed))
    opt = Adam(model.size, np.float32)
    rng = np.random.default_rng(seed + 1)
    for i in range(steps):
        src, sl, ti, to, tl = reversal_batch(rng, 32)
        model.loss_and_grad(src, sl, ti, to, tl, rng)
        clip_grad_norm(model.grad_flat, 5.0)
        # a cosine decay, as charlm's training has: at a constant 0.01 the last steps' noise decided
        # whether a run ended at 0.86 or 1.0 exact (differently rounded products were enough)
        opt.step(model.flat, model.grad_flat, 0.005 * (1 + math.cos(math.pi * i / steps)))
    return model


@pytest.mark.parametrize("cell, kind", [("lstm", "general"), ("gru", "additive")])
def test_learns_to_reverse_strings(cell, kind):
    model = train(cell, kind)
    src, sl, _, to, _ = reversal_batch(np.random.default_rng(99), 200)
    decoded = model.greedy(src, sl, BOS, EOS, 10)
    exact = np.mean([out == list(to[:L, b]) for b, (out, L) in enumerate(zip(decoded, sl))])
    assert exact >= 0.95, exact


def test_greedy_is_a_beam_of_one():
    beam = pytest.importorskip("charlm.decoding.beam")
    model = train("lstm", "general", steps=30)
    src, sl, _, _, _ = reversal_batch(np.random.default_rng(7), 12)
    decoded = model.greedy(src, sl, BOS, EOS, 10)
    states = model.encode(src, sl)
    for b in range(len(sl)):
        best = beam.beam_search(model, model.select(states, [b]), BOS, EOS, beam.BeamOptions(beam=1, max_length=10))[0]
        assert list(best.tokens[:-1] if best.finished else best.tokens) == decoded[b]
