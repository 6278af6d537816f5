"""The Jordan network's model-level path: parameters, forward and backward over a chunk.

Jordan (1986) fed the network's previous *output* back into its hidden units, where Elman (1990)
feeds back the previous hidden state. For a language model the output is the next-token
distribution p_{t-1} = softmax(decoder(h_{t-1})), so charlm's Jordan cell computes

    h_t = tanh(W_ih x_t + b_ih + W_yh p_{t-1} + b_yh)           (every layer gets p_{t-1})

Why the softmax output and not a separate per-layer projection y = W_hy h fed back through W_yh:
that would be an Elman network with a factored (low-rank) recurrent matrix, identical in what it
can compute; the point of Jordan's design is that the only memory is what the output carries.
W_yh p is a probability-weighted sum of columns of W_yh, i.e. an embedding of the predicted
next token, so the network remembers its own guess (a "soft" copy of the token it expects), and
anything else it must remember has to be smuggled through the shape of that distribution. The
memory demo (charlm.inspect.memory) shows what that costs.

Since the decoder sits inside the recurrence, this cannot reuse the generic per-layer loop of
``Model.forward``: ``Model`` dispatches here, and kernels/jordan.py runs the whole stack and the
decoder step by step. Parameters (no PyTorch twin exists, so the names are ours, shaped like
``nn.RNN``'s): ``rnn.weight_ih_l{k}`` (H, I), ``rnn.weight_yh_l{k}`` (H, V),
``rnn.bias_ih_l{k}`` (H,), ``rnn.bias_yh_l{k}`` (H,), plus the usual encoder/decoder.

The carried state (L, 1, B, H) holds each layer's last hidden state; only the top one matters
(p_0 of the next chunk is recomputed from it, so chunked evaluation equals one long run).
"""
from __future__ import annotations

import math

import numpy as np


def init_layer(model, layer: int, rng: np.random.Generator) -> None:
    """U(±1/√H) for W_ih and biases as for nn.RNN; W_yh ~ U(±√(E/H)) so that a one-hot output
    moves the pre-activations about as much as one input embedding does through W_ih_l0."""
    c, p = model.config, model.params
    bound = 1.0 / math.sqrt(c.hidden)
    w_ih = p[f"rnn.weight_ih_l{layer}"]
    w_ih[...] = rng.uniform(-bound, bound, w_ih.shape)
    w_yh = p[f"rnn.weight_yh_l{layer}"]
    w_yh[...] = rng.uniform(-1.0, 1.0, w_yh.shape) * math.sqrt(c.embed / c.hidden)
    p[f"rnn.bias_ih_l{layer}"][...] = rng.uniform(-bound, bound, c.hidden)
    p[f"rnn.bias_yh_l{layer}"][...] = rng.uniform(-bound, bound, c.hidden)


def stacked_weights(model):
    """(W_ih (L-1, H, H), b_ih (L-1, H), W_yh (L, H, V), b_yh (L, H)) as contiguous copies."""
    c, p, dt = model.config, model.params, model.dtype
    L, H, V = c.layers, c.hidden, c.vocab_size

    def stack(names, shape):
        return np.ascontiguousarray(np.stack([p[n] for n in names])) if names else np.zeros(shape, dt)

    return (stack([f"rnn.weight_ih_l{k}" for k in range(1, L)], (0, H, H)),
            stack([f"rnn.bias_ih_l{k}" for k in range(1, L)], (0, H)),
            stack([f"rnn.weight_yh_l{k}" for k in range(L)], (0, H, V)),
            stack([f"rnn.bias_yh_l{k}" for k in range(L)], (0, H)))


def forward(model, x, state, train, rng):
    """``Model.forward`` for Jordan: (logits (T*B, V), new_state (L, 1, B, H), cache).

    The cache is (x, emb, layers, extra) like the other cells', with layers[l] = (None, hs_l, None)
    and hs_l (T+1, B, H), so inspection code reads hidden states the same way for every cell."""
    from .kernels import get_cell

    c, p, dt = model.config, model.params, model.dtype
    T, B = x.shape
    L, H = c.layers, c.hidden
    drop = c.dropout if train else 0.0
    xp0, emb = model._layer0_input(x)
    if drop > 0:
        masks = (rng.random((L, T, B, H)) >= drop).astype(dt) / dt.type(1 - drop)
    else:
        masks = np.zeros((0, 0, 0, 0), dt)
    W_ih, b_ih, W_yh, b_yh = stacked_weights(model)
    W_dec = np.ascontiguousarray(p["decoder.weight"])
    hs, logits, probs = get_cell("jordan").forward(
        np.ascontiguousarray(xp0, dtype=dt), W_ih, b_ih, W_yh, b_yh, W_dec,
        np.ascontiguousarray(p["decoder.bias"]), np.ascontiguousarray(state[:, 0]), masks)
    new_state = np.ascontiguousarray(hs[:, T][:, None])                # (L, 1, B, H)
    layers = [(None, hs[l], None) for l in range(L)]
    return logits.reshape(T * B, -1), new_state, (x, emb, layers, (hs, probs, masks, W_ih, W_yh, W_dec))


def backward(model, dlogits, cache) -> None:
    """``Model.backward`` for Jordan: gradients into ``grad_flat`` (zeroed first)."""
    from .kernels import get_cell, jordan_weight_grads

    c, g = model.config, model.grads
    x, emb, _, (hs, probs, masks, W_ih, W_yh, W_dec) = cache
    T, B = x.shape
    L, H = c.layers, c.hidden
    dsT = np.zeros((L, B, H), model.dtype)
    da, dz, _ = get_cell("jordan").backward(
        np.ascontiguousarray(dlogits).reshape(T, B, -1), dsT, W_ih, W_yh, W_dec, hs, probs, masks)
    dW_ih, db_ih, dW_yh, db_yh, dW_dec, db_dec = jordan_weight_grads(da, dz, hs, probs, masks)
    model.grad_flat[...] = 0
    for l in range(L):
        g[f"rnn.weight_yh_l{l}"][...] = dW_yh[l]
        g[f"rnn.bias_yh_l{l}"][...] = db_yh[l]
        if l > 0:
            g[f"rnn.weight_ih_l{l}"][...] = dW_ih[l - 1]
            g[f"rnn.bias_ih_l{l}"][...] = db_ih[l - 1]
    g["decoder.weight"][...] += dW_dec                                  # tied: adds to the encoder's
    g["decoder.bias"][...] = db_dec
    dxp0 = np.ascontiguousarray(da[:, :, 0]).reshape(T * B, H)
    g["rnn.bias_ih_l0"][...] = dxp0.sum(axis=0)
    model._layer0_backward(x, emb, dxp0, model.params["rnn.weight_ih_l0"])
