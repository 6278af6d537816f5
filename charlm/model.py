"""The language model: embedding -> L recurrent layers -> linear decoder -> softmax.

Parameters carry PyTorch's names, shapes and gate order (``encoder.weight``,
``rnn.weight_ih_l0``, ..., ``decoder.weight``), so a saved model loads into
``nn.Embedding`` + ``nn.LSTM/GRU/RNN`` + ``nn.Linear`` with ``load_state_dict(strict=True)``.
All parameters are views into one flat buffer and all gradients into another, so the
optimiser and clipping work on a single array.

Dimensions: T steps, B streams, V vocabulary, E embedding, H hidden, G gates, S states, L layers.
State is an array (L, S, B, H): S = 2 (h, c) for LSTM, 1 (h) for GRU and RNN.

One training step, per the kernel recipe in DESIGN.md, on ``charlm.runtime.kernel_threads()``
threads that each own a block of the B streams (kernels/parallel.py says why):
  1. layer 0's input projection is a row gather from table = E @ W_ih0ᵀ (V, GH), read by token
     id inside the kernel (or, when V > T*B, the gathered embeddings, projected inside it);
  2. each layer is one kernel call: per block of steps the input projection (one GEMM), then
     per step the recurrent GEMM (a register-blocked micro-kernel on W_hh packed once) and one
     fused pointwise pass; no (T, B, GH) projection is ever stored;
  3. decoder: one GEMM (bias fused), then a fused log-softmax / NLL / gradient / bias-gradient
     kernel;
  4. backward mirrors it per layer in one kernel call: per block of steps, while the gate
     gradients are in cache, the weight-gradient GEMMs (per-thread partial sums, added in a
     fixed order afterwards), dL/dx for the layer below (written over dh in place), the bias
     sums and the folded-table scatter.
Arrays that live from step to step (caches, buffers) come from a per-model workspace, so a
step does not page-fault hundreds of MB in; the public ``forward``/``backward`` allocate fresh.
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
        if config.cell == "jordan":  # no torch twin: output-to-hidden weights replace weight_hh (jordan.py)
            shapes += [(f"rnn.weight_ih_l{layer}", (H, inp)), (f"rnn.weight_yh_l{layer}", (H, V)),
                       (f"rnn.bias_ih_l{layer}", (H,)), (f"rnn.bias_yh_l{layer}", (H,))]
            continue
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
        self.config = config.validate()
        self.dtype = np.dtype(dtype)
        self.shapes = parameter_shapes(config)
        self.size = sum(math.prod(s) for _, s in self.shapes)
        self.flat = np.zeros(self.size, dtype=self.dtype)
        self.grad_flat = np.zeros(self.size, dtype=self.dtype)
        self.params = _views(self.flat, self.shapes)
        self.grads = _views(self.grad_flat, self.shapes)
        if config.tie_weights:  # one array under two names, as PyTorch's tied modules do
            self.params["decoder.weight"] = self.params["encoder.weight"]
            self.grads["decoder.weight"] = self.grads["encoder.weight"]

    @property
    def cell(self):
        """The serial kernels of this model's cell (kernels.Cell). Numba is imported here and by
        forward/backward, not when a model is built: sampling a short text never needs it."""
        from . import kernels

        return kernels.get_cell(self.config.cell)

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
            if c.cell == "jordan":
                from .jordan import init_layer

                init_layer(self, layer, rng)
                continue
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

    def forward(self, x, state, *, train=False, rng=None):
        """Run the network over a chunk.

        x      (T, B) int token ids
        state  (L, S, B, H) initial state (not modified)
        Returns (logits (T*B, V), new_state (L, S, B, H), cache for backward).
        """
        if self.config.cell == "jordan":  # the recurrence runs through the decoder: its own path (jordan.py)
            from .jordan import forward

            return forward(self, x, state, train, rng)
        return self._forward(x, state, train, rng, _Scratch())

    def _forward(self, x, state, train, rng, ws):
        """forward() with its arrays taken from ``ws`` (a _Workspace reused across steps, or fresh).

        The cache is (x, emb, layers, (top, top_mask)) with layers[l] = (inp, hs, cell_cache) as
        the cell kernels return them (inp: None for layer 0, else (input, dropout mask or None);
        emb: the gathered embeddings, or None when layer 0 reads the folded table)."""
        from .kernels.parallel import block_steps, matmul_rows_bias
        from .runtime import kernel_threads

        c, p = self.config, self.params
        kern = _PAR[c.cell]
        nc = kernel_threads()
        T, B = x.shape
        N, H, GH = T * B, c.hidden, c.gates * c.hidden
        tb = block_steps(-(-B // nc))
        drop = c.dropout if train else 0.0
        ids = ws.get("ids", (T, B), np.int64)
        ids[...] = x
        none2, none3 = np.zeros((0, 0), self.dtype), np.zeros((0, 0, 0), self.dtype)
        new_state = np.empty_like(state)
        layers = []
        # layer 0's input: rows of the folded table E @ W_ih0ᵀ read by token id (a gather inside
        # the kernel), or, when V > T*B, the gathered embeddings (projected inside the kernel).
        E = p["encoder.weight"]
        if c.vocab_size <= N:
            table, emb, x_in = ws.get("table", (c.vocab_size, GH), self.dtype), None, none3
            np.dot(E, p["rnn.weight_ih_l0"].T, out=table)
        else:
            emb = E[ids.reshape(-1)]                                    # (T*B, E)
            table, x_in = none2, emb.reshape(T, B, -1)
        inp, hs = None, None
        for layer in range(c.layers):
            if layer > 0:  # input: the previous layer's outputs (T*B, H), after dropout
                inp = _dropout(hs[1:].reshape(N, H), drop, rng)
                table, x_in = none2, inp[0].reshape(T, B, H)
            s0 = np.ascontiguousarray(state[layer])
            hs = ws.get(f"hs{layer}", (T + 1, B, H), self.dtype)
            extra = [ws.get(f"{name}{layer}", shape, self.dtype) for name, shape in kern.cache_shapes(T, B, H)]
            kern.forward(x_in, table, ids, p[f"rnn.weight_ih_l{layer}"], p[f"rnn.bias_ih_l{layer}"],
                         p[f"rnn.weight_hh_l{layer}"], p[f"rnn.bias_hh_l{layer}"], s0, hs, *extra, nc, tb)
            new_state[layer, 0] = hs[T]
            if c.cell == "lstm":
                new_state[layer, 1] = extra[0][T]
            layers.append((inp, hs, tuple(extra[::-1]) if c.cell == "lstm" else tuple(extra)))
        top = _dropout(hs[1:].reshape(N, H), drop, rng)
        logits = ws.get("logits", (N, c.vocab_size), self.dtype)
        matmul_rows_bias(top[0], p["decoder.weight"].T, p["decoder.bias"], logits, nc)
        return logits, new_state, (x, emb, layers, top)

    def backward(self, dlogits, cache) -> None:
        """Accumulate gradients into ``grad_flat`` (zeroed first) from dL/dlogits (T*B, V)."""
        if self.config.cell == "jordan":
            from .jordan import backward

            return backward(self, dlogits, cache)
        self._backward(np.ascontiguousarray(dlogits), cache, _Scratch(), None)

    def _backward(self, dlogits, cache, ws, db_dec):
        """backward() with scratch arrays from ``ws``; ``db_dec`` is the decoder-bias gradient when
        the loss kernel has already summed it (else computed here)."""
        from .kernels.embedding import scatter_add_rows
        from .kernels.parallel import block_steps, matmul_rows, matmul_tn, sum_blocks
        from .runtime import kernel_threads

        c, p, g = self.config, self.params, self.grads
        kern = _PAR[c.cell]
        nc = kernel_threads()
        x, emb, layers, (top, top_mask) = cache
        T, B = x.shape
        N, H, G, V = T * B, c.hidden, c.gates * c.hidden, c.vocab_size
        tb = block_steps(-(-B // nc))
        ids = ws.get("ids", (T, B), np.int64)
        ids[...] = x
        none3 = np.zeros((0, 0, 0), self.dtype)
        # decoder: dW_dec = dlogitsᵀ @ top (into the encoder's gradient when tied), db_dec, dh
        g["encoder.weight"][...] = 0
        dW_dec = ws.get("dW_dec", (V, H), self.dtype) if c.tie_weights else g["decoder.weight"]
        matmul_tn(dlogits, top, dW_dec, ws.get("dW_dec_p", (nc - 1, V, H), self.dtype), nc)
        if c.tie_weights:
            g["encoder.weight"][...] = dW_dec
        g["decoder.bias"][...] = dlogits.sum(axis=0) if db_dec is None else db_dec
        dh = ws.get("dh", (T, B, H), self.dtype)
        matmul_rows(dlogits, p["decoder.weight"], dh.reshape(N, H), nc)
        if top_mask is not None:
            dh *= top_mask.reshape(T, B, H)
        dsT = ws.zeros("dsT", (c.states, B, H), self.dtype)
        ds0 = ws.get("ds0", (c.states, B, H), self.dtype)
        db = ws.get("db", (nc, G), self.dtype)
        dbx = ws.get("dbx", (nc, G), self.dtype)
        dW_hh = ws.get("dW_hh_p", (nc, G, H), self.dtype)
        folded = emb is None
        dtab = ws.get("dtab", (nc, V, G), self.dtype) if folded else none3
        no_ids = np.zeros((0, 0), np.int64)
        for layer in reversed(range(c.layers)):
            inp, hs, cell_cache = layers[layer]
            W_ih = p[f"rnn.weight_ih_l{layer}"]
            if layer > 0:
                # dL/dx_in overwrites dh in place: each thread writes its streams' rows of a block of
                # steps only after reading them (see lstm_backward_par)
                x_in, mask, dx = inp[0].reshape(T, B, H), inp[1], dh
            elif folded:
                x_in, mask, dx = none3, None, none3
            else:
                x_in, mask = emb.reshape(T, B, -1), None
                dx = ws.get("demb", x_in.shape, self.dtype)
            dW_ih = ws.get(f"dW_ih_p{x_in.shape[2]}", (nc, G, x_in.shape[2]), self.dtype)
            kern.backward(dh, dsT, p[f"rnn.weight_hh_l{layer}"], hs, cell_cache, x_in, W_ih,
                          ids if layer == 0 and folded else no_ids, dW_hh, dW_ih, db, dbx, dtab, dx, ds0, nc, tb)
            sum_blocks(dW_hh, g[f"rnn.weight_hh_l{layer}"])
            g[f"rnn.bias_hh_l{layer}"][...] = db.sum(axis=0)
            b_ih = g[f"rnn.bias_ih_l{layer}"]
            b_ih[...] = g[f"rnn.bias_hh_l{layer}"]
            if c.cell == "gru":  # b_ih's n block is dxp's, not da's
                b_ih[2 * H:] = dbx[:, 2 * H:].sum(axis=0)
            if x_in.shape[0]:
                sum_blocks(dW_ih, g[f"rnn.weight_ih_l{layer}"])
            if layer > 0:
                dh = dx
                if mask is not None:
                    dh *= mask.reshape(T, B, H)
            elif folded:  # dtable = the scattered dxp; then two small GEMMs
                dtable = ws.get("dtable", (V, G), self.dtype)
                sum_blocks(dtab, dtable)
                np.dot(dtable.T, p["encoder.weight"], out=g["rnn.weight_ih_l0"])
                g["encoder.weight"][...] += dtable @ W_ih
            else:
                scatter_add_rows(g["encoder.weight"], ids.reshape(-1), dx.reshape(N, -1))

    def _layer0_input(self, x):
        """xp for layer 0, (T, B, GH) including b_ih0: a gather from the folded table when V is
        small (used by the Jordan path, jordan.py)."""
        p = self.params
        E, W, b = p["encoder.weight"], p["rnn.weight_ih_l0"], p["rnn.bias_ih_l0"]
        T, B = x.shape
        if self.config.vocab_size <= T * B:
            table = E @ W.T + b                                    # (V, GH)
            return table[x], None
        emb = E[x.reshape(-1)]                                     # (T*B, E)
        return (emb @ W.T + b).reshape(T, B, -1), emb

    def _layer0_backward(self, x, emb, dxp2, W_ih):
        """Gradients of encoder.weight (added) and W_ih0 (set) from dxp of layer 0 (T*B, GH)."""
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
        if self.config.cell == "jordan":
            from .kernels import cross_entropy_grad

            logits, new_state, cache = self.forward(x, state, train=True, rng=rng)
            n = logits.shape[0]
            loss_sum = cross_entropy_grad(logits, np.ascontiguousarray(y.reshape(-1)), 1.0 / n)
            self.backward(logits, cache)
            return loss_sum / n, new_state
        from .kernels.loss import cross_entropy_grad_par
        from .runtime import kernel_threads

        ws = self._workspace("train")
        logits, new_state, cache = self._forward(x, state, True, rng, ws)
        n = logits.shape[0]
        targets = ws.get("targets", (n,), np.int64)
        targets[...] = y.reshape(-1)
        db_dec = ws.get("db_dec", (self.config.vocab_size,), self.dtype)
        loss_sum = cross_entropy_grad_par(logits, targets, 1.0 / n, db_dec, kernel_threads())
        self._backward(logits, cache, ws, db_dec)
        return loss_sum / n, new_state

    def token_nll(self, x, y, state):
        """Per-token NLL in nats (T*B,) float64 and the carried state; no gradients, no dropout."""
        if self.config.cell == "jordan":
            from .kernels import cross_entropy_rows

            logits, new_state, _ = self.forward(x, state)
            nll = np.empty(logits.shape[0], dtype=np.float64)
            cross_entropy_rows(logits, np.ascontiguousarray(y.reshape(-1)), nll)
            return nll, new_state
        from .kernels.loss import cross_entropy_rows_par
        from .runtime import kernel_threads

        ws = self._workspace("eval")
        logits, new_state, _ = self._forward(x, state, False, None, ws)
        nll = np.empty(logits.shape[0], dtype=np.float64)
        cross_entropy_rows_par(logits, np.ascontiguousarray(y.reshape(-1), dtype=np.int64), nll,
                               kernel_threads())
        return nll, new_state

    def _workspace(self, kind):
        """Arrays reused from step to step (one set per kind: "train", "eval"), so a step does not
        page-fault hundreds of MB of fresh memory in."""
        if not hasattr(self, "_ws"):
            self._ws = {}
        return self._ws.setdefault(kind, _Workspace())


class _Scratch:
    """Fresh arrays every time (the public forward/backward: callers may keep what they get)."""

    def get(self, name, shape, dtype):
        return np.empty(shape, dtype)

    def zeros(self, name, shape, dtype):
        return np.zeros(shape, dtype)

    def arange(self, T, B):
        return np.arange(T * B, dtype=np.int64).reshape(T, B)


class _Workspace(_Scratch):
    """Named arrays kept between calls and reallocated only when a shape changes."""

    def __init__(self):
        self.arrays = {}

    def get(self, name, shape, dtype):
        a = self.arrays.get(name)
        if a is None or a.shape != tuple(shape) or a.dtype != dtype:
            a = self.arrays[name] = np.empty(shape, dtype)
        return a

    def zeros(self, name, shape, dtype):
        a = self.get(name, shape, dtype)
        a[...] = 0
        return a

    def arange(self, T, B):
        a = self.arrays.get("arange")
        if a is None or a.shape != (T, B):
            a = self.arrays["arange"] = np.arange(T * B, dtype=np.int64).reshape(T, B)
        return a


class _ParallelCell:
    """The batch-parallel kernels of one cell behind one calling convention (kernels/*_par)."""

    def __init__(self, cell):
        self.cell = cell

    def cache_shapes(self, T, B, H):
        """Arrays the forward kernel writes besides hs, in its argument order."""
        if self.cell == "lstm":
            return [("cs", (T + 1, B, H)), ("gates", (T, B, 4 * H))]
        if self.cell == "gru":
            return [("gates", (T, B, 3 * H)), ("hn", (T, B, H))]
        return []

    def forward(self, x_in, table, ids, W_ih, b_ih, W_hh, b_hh, s0, hs, *rest):
        from . import kernels as K

        f = {"lstm": K.lstm.lstm_forward_par, "gru": K.gru.gru_forward_par, "rnn": K.rnn.rnn_forward_par}
        f[self.cell](x_in, table, ids, W_ih, b_ih, W_hh, b_hh, s0, hs, *rest)

    def backward(self, dh_out, dsT, W_hh, hs, cache, x_in, W_ih, ids, dW_hh, dW_ih, db, dbx, dtab, dx, ds0, nc, tb):
        from . import kernels as K

        if self.cell == "lstm":
            gates, cs = cache
            K.lstm.lstm_backward_par(dh_out, dsT, W_hh, hs, gates, cs, x_in, W_ih, ids, dW_hh, dW_ih, db, dtab,
                                     dx, ds0, nc, tb)
        elif self.cell == "gru":
            gates, hn = cache
            K.gru.gru_backward_par(dh_out, dsT, W_hh, hs, gates, hn, x_in, W_ih, ids, dW_hh, dW_ih, db, dbx, dtab,
                                   dx, ds0, nc, tb)
        else:
            K.rnn.rnn_backward_par(dh_out, dsT, W_hh, hs, x_in, W_ih, ids, dW_hh, dW_ih, db, dtab, dx, ds0, nc, tb)


_PAR = {name: _ParallelCell(name) for name in ("lstm", "gru", "rnn")}


def _dropout(a, p, rng):
    """Inverted dropout on a (N, H) array; returns (output, mask or None)."""
    if p <= 0:
        return a if a.flags.c_contiguous else np.ascontiguousarray(a), None
    mask = (rng.random(a.shape) >= p).astype(a.dtype) / a.dtype.type(1 - p)
    return a * mask, mask


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))  # sign fix makes the draw uniform over orthogonal matrices
