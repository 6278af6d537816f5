"""The stack of a cell whose recurrence runs through the decoder (a row with ``feeds_output``, the
Jordan network): the row's kernel module runs the whole recurrence and decoder
(``stack_forward`` / ``stack_backward`` / ``stack_state_grads``); what is common to every model
stays here: layer 0's input projection from the embedding, dropout masks, the carried state and
the gradients of encoder.weight and layer 0's input weights.
"""
from __future__ import annotations

import math

import numpy as np

from ..stream_random import stream_uniform


class OutputFedStack:
    """Forward, backward and gradient inspection of a Model whose cell ``feeds_output``."""

    def __init__(self, model):
        self.model = model
        self.cell = model.config.row

    def init_recurrent(self, w_yh, rng: np.random.Generator) -> None:
        """Output-to-hidden weights ~ U(±√(E/H)), so that a one-hot output moves the pre-activations
        about as much as one input embedding does through W_ih_l0."""
        c = self.model.config
        w_yh[...] = rng.uniform(-1.0, 1.0, w_yh.shape) * math.sqrt(c.embed / c.hidden)

    def forward(self, x, state, train, rng, ws, labels=None):
        """(logits (T*B, V), new_state (L, S, B, H), cache). The cache is (x, emb, layers, stack
        cache) like LayerStack's, with layers[l] = (None, hs_l, ()), so that inspection reads
        hidden states the same way for every cell. (No labels: ModelConfig refuses them here.)"""
        m = self.model
        c, dt = m.config, m.dtype
        T, B = x.shape
        L, H = c.layers, c.hidden
        drop = c.dropout if train else 0.0
        xp0, emb = _layer0_input(m.params, x, c.vocab_size)
        if drop > 0:
            masks = (stream_uniform(rng, (L, T, B, H), 2) >= drop).astype(dt) / dt.type(1 - drop)
        else:
            masks = np.zeros((0, 0, 0, 0), dt)
        logits, hs, kcache = self.cell.kernels.stack_forward(m.params, xp0.astype(dt, copy=False),
                                                             np.ascontiguousarray(state[:, 0]), masks)
        new_state = np.ascontiguousarray(hs[:, T][:, None])             # (L, 1, B, H)
        layers = [(None, hs[l], ()) for l in range(L)]
        return logits, new_state, (x, emb, layers, kcache)

    def backward(self, dlogits, cache, ws, db_dec) -> None:
        """Gradients into the model's ``grads`` (all of them written); ``db_dec`` is not used: the
        decoder bias also receives the gradient of p_0, which the loss does not see."""
        m = self.model
        x, emb, _, kcache = cache
        m.grad_flat[...] = 0
        dxp0 = self.cell.kernels.stack_backward(m.grads, dlogits, kcache)
        m.grads["rnn.bias_ih_l0"][...] = dxp0.sum(axis=0)
        _layer0_backward(m.params, m.grads, x, emb, dxp0)

    def state_grads(self, dlogits, cache) -> np.ndarray:
        """(L, T, B, H) float64 total dL/dh^l_s for every layer and step (no dropout)."""
        return self.cell.kernels.stack_state_grads(dlogits, cache[3])

    def recurrent_matrices(self) -> list[tuple[int, str, np.ndarray]]:
        """(layer, "yh·dec", W_yh @ W_dec): h_{t-1} -> output -> h_t (H×H), leaving out the softmax
        Jacobian between them (diag(p) − ppᵀ, whose norm is below 1)."""
        p = self.model.params
        return [(layer, "yh·dec", p[f"rnn.weight_yh_l{layer}"].astype(np.float64) @ p["decoder.weight"])
                for layer in range(self.model.config.layers)]


def _layer0_input(params, x, vocab_size):
    """xp for layer 0, (T, B, GH) including b_ih0: a gather from the folded table E @ W_ih0ᵀ + b_ih0
    when V <= T*B, else the gathered embeddings projected (then also returned, for backward)."""
    E, W, b = params["encoder.weight"], params["rnn.weight_ih_l0"], params["rnn.bias_ih_l0"]
    T, B = x.shape
    if vocab_size <= T * B:
        table = E @ W.T + b                                    # (V, GH)
        return table[x], None
    emb = E[x.reshape(-1)]                                     # (T*B, E)
    return (emb @ W.T + b).reshape(T, B, -1), emb


def _layer0_backward(params, grads, x, emb, dxp0):
    """Gradients of encoder.weight (added) and W_ih0 (set) from dxp of layer 0 (T*B, GH)."""
    from ..kernels.embedding import scatter_add_rows

    E, W_ih = params["encoder.weight"], params["rnn.weight_ih_l0"]
    ids = np.ascontiguousarray(x.reshape(-1))
    if emb is None:  # folded-table path: scatter rows by token, then two small GEMMs
        dtable = np.zeros((E.shape[0], dxp0.shape[1]), dtype=dxp0.dtype)
        scatter_add_rows(dtable, ids, dxp0)
        np.dot(dtable.T, E, out=grads["rnn.weight_ih_l0"])
        grads["encoder.weight"][...] += dtable @ W_ih
    else:
        np.dot(dxp0.T, emb, out=grads["rnn.weight_ih_l0"])
        scatter_add_rows(grads["encoder.weight"], ids, dxp0 @ W_ih)
