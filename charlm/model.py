"""The language model: embedding -> L recurrent layers -> linear decoder -> softmax.

Parameters carry PyTorch's names, shapes and gate order (``encoder.weight``,
``rnn.weight_ih_l0``, ..., ``decoder.weight``), so a saved model loads into
``nn.Embedding`` + ``nn.LSTM/GRU/RNN`` + ``nn.Linear`` with ``load_state_dict(strict=True)``.
All parameters are views into one flat buffer and all gradients into another, so the
optimiser and clipping work on a single array.

Dimensions: T steps, B streams, V vocabulary, E embedding, H hidden, G gates, S states, L layers.
State is an array (L, S, B, H): S = 2 (h, c) for LSTM, 1 (h) for GRU and RNN.

One training step, per the kernel recipe in DESIGN.md:
  1. layer 0's input projection is a row gather from table = E @ W_ih0ᵀ + b_ih0 (V, GH);
  2. each layer: one GEMM for the input projection of all T*B positions, then the kernel runs
     the recurrence (one GEMM per step plus a fused pointwise pass);
  3. decoder: one GEMM, then a fused log-softmax / NLL / gradient kernel;
  4. backward mirrors it; weight gradients are one GEMM each.
"""
from __future__ import annotations

import math

import numpy as np

from .config import ModelConfig


def parameter_shapes(config: ModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes in PyTorch's state_dict order (decoder.weight omitted when tied)."""
    V, E, H, G = config.vocab_size, config.embed, config.hidden, config.gates
    shapes = [("encoder.weight", (V, E))]
    for layer in range(config.layers):
        inp = E if layer == 0 else H
        shapes += [(f"rnn.weight_ih_l{layer}", (G * H, inp)), (f"rnn.weight_hh_l{layer}", (G * H, H)),
                   (f"rnn.bias_ih_l{layer}", (G * H,)), (f"rnn.bias_hh_l{layer}", (G * H,))]
    if not config.tie_weights:
        shapes.append(("decoder.weight", (V, H)))
    shapes.append(("decoder.bias", (V,)))
    return shapes


def _views(flat: np.ndarray, shapes) -> dict[str, np.ndarray]:
    views, offset = {}, 0
    for name, shape in shapes:
        size = math.prod(shape)
        views[name] = flat[offset:offset + size].reshape(shape)
        offset += size
    return views


class Model:
    """Parameters, forward and backward over a chunk of T steps. Never prints, never reads files."""

    def __init__(self, config: ModelConfig, dtype=np.float32):
        from . import kernels  # Numba is loaded only when a model is actually built

        self.config = config.validate()
        self.dtype = np.dtype(dtype)
        self.cell = kernels.get_cell(config.cell)
        self.shapes = parameter_shapes(config)
        self.size = sum(math.prod(s) for _, s in self.shapes)
        self.flat = np.zeros(self.size, dtype=self.dtype)
        self.grad_flat = np.zeros(self.size, dtype=self.dtype)
        self.params = _views(self.flat, self.shapes)
        self.grads = _views(self.grad_flat, self.shapes)
        if config.tie_weights:  # one array under two names, as PyTorch's tied modules do
            self.params["decoder.weight"] = self.params["encoder.weight"]
            self.grads["decoder.weight"] = self.grads["encoder.weight"]

    # -- parameters -------------------------------------------------------------------------

    def init_weights(self, rng: np.random.Generator) -> "Model":
        """Initialise in place.

        PyTorch's defaults (U(±1/√H) everywhere in the RNN, N(0,1) embedding) plus two
        changes that are known to help recurrent LMs: orthogonal W_hh blocks, so that the
        recurrence neither shrinks nor blows up gradients at the start (Saxe et al. 2014;
        Le et al. 2015), and LSTM forget-gate bias 1 so early training remembers
        (Jozefowicz et al. 2015). The decoder uses U(±1/√H) like ``nn.Linear``.
        """
        c, p = self.config, self.params
        H, G = c.hidden, c.gates
        bound = 1.0 / math.sqrt(H)
        p["encoder.weight"][...] = rng.standard_normal(p["encoder.weight"].shape)
        if c.tie_weights:  # a shared matrix must suit the decoder too: keep logits O(1)
            p["encoder.weight"][...] = rng.uniform(-bound, bound, p["encoder.weight"].shape)
        for layer in range(c.layers):
            w_ih, w_hh = p[f"rnn.weight_ih_l{layer}"], p[f"rnn.weight_hh_l{layer}"]
            w_ih[...] = rng.uniform(-bound, bound, w_ih.shape)
            for g in range(G):
                w_hh[g * H:(g + 1) * H] = _orthogonal(H, rng)
            p[f"rnn.bias_ih_l{layer}"][...] = rng.uniform(-bound, bound, G * H)
            p[f"rnn.bias_hh_l{layer}"][...] = rng.uniform(-bound, bound, G * H)
            if c.cell == "lstm":  # forget gate is block 1 (i, f, g, o); the two biases add
                p[f"rnn.bias_ih_l{layer}"][H:2 * H] = 0.5
                p[f"rnn.bias_hh_l{layer}"][H:2 * H] = 0.5
        if not c.tie_weights:
            p["decoder.weight"][...] = rng.uniform(-bound, bound, p["decoder.weight"].shape)
        p["decoder.bias"][...] = 0.0
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """PyTorch-named arrays (both names present when tied, as PyTorch saves them)."""
        return {name: self.params[name] for name, _ in self.shapes} | (
            {"decoder.weight": self.params["encoder.weight"]} if self.config.tie_weights else {})

    def load_state_dict(self, tensors: dict[str, np.ndarray]) -> None:
        """Copy arrays in; names and shapes must match exactly (checked by the caller first)."""
        for name, _ in self.shapes:
            self.params[name][...] = tensors[name]

    @property
    def num_parameters(self) -> int:
        return self.size

    def init_state(self, batch: int) -> np.ndarray:
        c = self.config
        return np.zeros((c.layers, c.states, batch, c.hidden), dtype=self.dtype)

    # -- forward / backward -----------------------------------------------------------------

    def _layer0_input(self, x):
        """xp for layer 0, (T, B, GH): a gather from the folded table when V is small."""
        p = self.params
        E, W, b = p["encoder.weight"], p["rnn.weight_ih_l0"], p["rnn.bias_ih_l0"]
        T, B = x.shape
        if self.config.vocab_size <= T * B:
            table = E @ W.T + b                                    # (V, GH)
            return table[x], None
        emb = E[x.reshape(-1)]                                     # (T*B, E)
        return (emb @ W.T + b).reshape(T, B, -1), emb

    def forward(self, x, state, *, train=False, rng=None):
        """Run the network over a chunk.

        x      (T, B) int token ids
        state  (L, S, B, H) initial state (not modified)
        Returns (logits (T*B, V), new_state (L, S, B, H), cache for backward).
        """
        c, p = self.config, self.params
        T, B = x.shape
        drop = c.dropout if train else 0.0
        new_state = np.empty_like(state)
        layers = []
        xp, emb = self._layer0_input(x)
        inp, hs = None, None
        for layer in range(c.layers):
            if layer > 0:  # input is the previous layer's outputs, (T*B, H), after dropout
                inp = _dropout(hs[1:].reshape(T * B, -1), drop, rng)
                xp = (inp[0] @ p[f"rnn.weight_ih_l{layer}"].T + p[f"rnn.bias_ih_l{layer}"]).reshape(T, B, -1)
            hs, s_T, cell_cache = self.cell.forward(
                np.ascontiguousarray(xp), p[f"rnn.weight_hh_l{layer}"], p[f"rnn.bias_hh_l{layer}"],
                np.ascontiguousarray(state[layer]))
            new_state[layer] = s_T
            layers.append((inp, hs, cell_cache))
        top = _dropout(hs[1:].reshape(T * B, -1), drop, rng)
        logits = top[0] @ p["decoder.weight"].T + p["decoder.bias"]
        return logits, new_state, (x, emb, layers, top)

    def backward(self, dlogits, cache) -> None:
        """Accumulate gradients into ``grad_flat`` (zeroed first) from dL/dlogits (T*B, V)."""
        c, p, g = self.config, self.params, self.grads
        x, emb, layers, (top, top_mask) = cache
        T, B = x.shape
        self.grad_flat[...] = 0
        g["decoder.weight"][...] += dlogits.T @ top                 # tied: adds to the encoder's
        g["decoder.bias"][...] = dlogits.sum(axis=0)
        dh = dlogits @ p["decoder.weight"]                           # (T*B, H)
        if top_mask is not None:
            dh *= top_mask
        zero_dsT = np.zeros((c.states, B, c.hidden), dtype=self.dtype)
        for layer in reversed(range(c.layers)):
            inp, hs, cell_cache = layers[layer]
            dxp, dW_hh, db_hh, _ = self.cell.backward(
                dh.reshape(T, B, -1), zero_dsT, p[f"rnn.weight_hh_l{layer}"], hs, cell_cache)
            g[f"rnn.weight_hh_l{layer}"][...] = dW_hh
            g[f"rnn.bias_hh_l{layer}"][...] = db_hh
            dxp2 = dxp.reshape(T * B, -1)
            g[f"rnn.bias_ih_l{layer}"][...] = dxp2.sum(axis=0)
            W_ih = p[f"rnn.weight_ih_l{layer}"]
            if layer > 0:
                x_in, mask = inp
                np.dot(dxp2.T, x_in, out=g[f"rnn.weight_ih_l{layer}"])
                dh = dxp2 @ W_ih
                if mask is not None:
                    dh *= mask
            else:
                self._layer0_backward(x, emb, dxp2, W_ih)

    def _layer0_backward(self, x, emb, dxp2, W_ih):
        from .kernels.embedding import scatter_add_rows

        g, E = self.grads, self.params["encoder.weight"]
        ids = np.ascontiguousarray(x.reshape(-1))
        if emb is None:  # folded-table path: scatter rows by token, then two small GEMMs
            dtable = np.zeros((self.config.vocab_size, dxp2.shape[1]), dtype=self.dtype)
            scatter_add_rows(dtable, ids, dxp2)
            np.dot(dtable.T, E, out=g["rnn.weight_ih_l0"])
            g["encoder.weight"][...] += dtable @ W_ih
        else:
            np.dot(dxp2.T, emb, out=g["rnn.weight_ih_l0"])
            scatter_add_rows(g["encoder.weight"], ids, dxp2 @ W_ih)

    def loss_and_grad(self, x, y, state, rng=None):
        """Mean NLL per token over the chunk, gradients in ``grad_flat``, and the carried state."""
        from .kernels import cross_entropy_grad

        logits, new_state, cache = self.forward(x, state, train=True, rng=rng)
        n = logits.shape[0]
        loss_sum = cross_entropy_grad(logits, np.ascontiguousarray(y.reshape(-1)), 1.0 / n)
        self.backward(logits, cache)
        return loss_sum / n, new_state

    def token_nll(self, x, y, state):
        """Per-token NLL in nats (T*B,) float64 and the carried state; no gradients, no dropout."""
        from .kernels import cross_entropy_rows

        logits, new_state, _ = self.forward(x, state)
        nll = np.empty(logits.shape[0], dtype=np.float64)
        cross_entropy_rows(logits, np.ascontiguousarray(y.reshape(-1)), nll)
        return nll, new_state


def _dropout(a, p, rng):
    """Inverted dropout on a (N, H) array; returns (output, mask or None)."""
    if p <= 0:
        return a if a.flags.c_contiguous else np.ascontiguousarray(a), None
    mask = (rng.random(a.shape) >= p).astype(a.dtype) / a.dtype.type(1 - p)
    return a * mask, mask


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))  # sign fix makes the draw uniform over orthogonal matrices
