"""The stack of per-layer recurrent cells (every row of the cell table that feeds back its own hidden
state): embedding -> L layers -> decoder, forward and backward, on all cores.

One training step, on ``charlm.runtime.kernel_threads()`` threads that each own a block of the B
streams (kernels/parallel.py says why):
  1. layer 0's input projection is a row gather from table = E @ W_ih0ᵀ (V, GH), read by token
     id inside the kernel (or, when V > T*B, the gathered embeddings, projected inside it);
  2. each layer is one call of kernels/layer.py: per block of steps the input projection (one
     GEMM), then per step the recurrent GEMM (a register-blocked micro-kernel on W_hh packed once)
     and the cell's fused pointwise step; no (T, B, GH) projection is ever stored;
  3. decoder: one GEMM (bias fused); the caller runs the fused log-softmax / NLL / gradient kernel;
  4. backward mirrors it per layer in one kernel call: per block of steps, while the gate
     gradients are in cache, the weight-gradient GEMMs (per-thread partial sums, added in a
     fixed order afterwards), dL/dx for the layer below (written over dh in place), the bias
     sums and the folded-table scatter.
Dimensions: T steps, B streams, V vocabulary, E embedding, H hidden, G gates, S states, L layers.
"""
from __future__ import annotations

import numpy as np

from ..kernels.cells import LAYER_CACHE
from ..stream_random import stream_uniform


class LayerStack:
    """Forward, backward and gradient inspection of a Model whose cell is a per-layer row."""

    def __init__(self, model):
        self.model = model
        self.cell = model.config.row

    def init_recurrent(self, w_hh, rng: np.random.Generator) -> None:
        """U(±1/√H), PyTorch's default (orthogonal blocks trained slower: Model.init_weights)."""
        bound = 1.0 / np.sqrt(self.model.config.hidden)
        w_hh[...] = rng.uniform(-bound, bound, w_hh.shape)

    def forward(self, x, state, train, rng, ws, labels=None):
        """(logits (T*B, V), new_state (L, S, B, H), cache) with arrays from ``ws``; ``labels`` (B,)
        each stream's label, for a labelled model (the state design takes it in ``state`` already).

        The cache is (x, emb, layers, (top, top_mask), recurrent, labelled) with layers[l] = (inp, hs,
        cell_cache): inp None for layer 0, else (input, dropout mask or None); cell_cache the
        arrays named by the cell's ``cache``, as the layer kernels take them; emb the gathered
        embeddings, or None when layer 0 reads the folded table; recurrent[l] = (the W_hh the
        recurrence used, its DropConnect mask or None); labelled None, or (labels,
        None or, when the label is an input, layer 0's W_ih with the label columns beside it): layer 0
        then reads [embedding; one-hot label], which adds the label's vector to its gate pre-activations.

        Regularisation (training only): ``dropout`` on the inputs of layers 2..L and of the
        decoder with one mask per stream for the whole window, the same at every step
        (variational dropout, Gal & Ghahramani 2016: a unit dropped at one step and kept at the
        next only adds noise to the memory); ``weight_dropout`` drops entries of every W_hh, one
        mask per window shared by all streams and steps (DropConnect on the recurrent weights,
        Merity et al. 2017, AWD-LSTM): it regularises the recurrence itself, which dropout on
        activations cannot reach without breaking the cell's memory."""
        from ..kernels.layer import layer_forward
        from ..kernels.parallel import block_steps, matmul_rows_bias
        from ..runtime import kernel_threads

        m, cell = self.model, self.cell
        c, p, dt = m.config, m.params, m.dtype
        nc = kernel_threads()
        T, B = x.shape
        N, H, GH = T * B, c.hidden, c.gates * c.hidden
        tb = block_steps(-(-B // nc))
        drop = c.dropout if train else 0.0
        drop_w = c.weight_dropout if train else 0.0
        ids = ws.get("ids", (T, B), np.int64)
        ids[...] = x
        lengths = ws.get("lengths", (B,), np.int64)
        lengths[...] = T
        none3 = np.zeros((0, 0, 0), dt)
        new_state = np.empty_like(state)
        layers = []
        # layer 0's input: rows of the folded table E @ W_ih0ᵀ read by token id (a gather inside
        # the kernel), or, when V > T*B, the gathered embeddings (projected inside the kernel).
        E, W_ih0 = p["encoder.weight"], p["rnn.weight_ih_l0"]
        labelled = None if labels is None or not c.labels else (np.asarray(labels, np.int64), None)
        if labelled and c.condition == "input":
            W_ih0 = np.ascontiguousarray(np.hstack([W_ih0, p["label_embedding.weight"].T]))
            labelled = (labelled[0], W_ih0)
            emb = label_inputs(E, ids, labelled[0], c.labels)              # (T*B, E + labels)
            table, x_in = none3, emb.reshape(T, B, -1)
        elif c.vocab_size <= N:
            table, emb, x_in = ws.get("table", (1, c.vocab_size, GH), dt), None, none3
            np.dot(E, W_ih0.T, out=table[0])
        else:
            emb = E[ids.reshape(-1)]                                    # (T*B, E)
            table, x_in = none3, emb.reshape(T, B, -1)
        inp, hs, recurrent = None, None, []
        for layer in range(c.layers):
            if layer > 0:  # input: the previous layer's outputs (T*B, H), after dropout
                inp = dropout(hs[1:], drop, rng)
                table, x_in = none3, inp[0].reshape(T, B, H)
            W_hh, w_mask = p[f"rnn.weight_hh_l{layer}"], None
            if drop_w > 0:
                w_mask = (rng.random(W_hh.shape) >= drop_w).astype(dt) / dt.type(1 - drop_w)
                W_hh = W_hh * w_mask
            recurrent.append((W_hh, w_mask))
            s0 = np.ascontiguousarray(state[layer])
            hs = ws.get(f"hs{layer}", (T + 1, B, H), dt)
            arrays = {name: ws.get(f"{name}{layer}", shape, dt) for name, shape in cell.cache_shapes(T, B, H).items()}
            # one direction: every per-direction array is a (1, ...) view
            W_ih = W_ih0 if layer == 0 else p[f"rnn.weight_ih_l{layer}"]
            layer_forward(cell.id, x_in, table, ids, W_ih[None],
                          p[f"rnn.bias_ih_l{layer}"][None], W_hh[None], p[f"rnn.bias_hh_l{layer}"][None], s0[None],
                          hs[None], *(a[None] for a in arrays.values()), none3, lengths, nc, tb)
            new_state[layer, 0] = hs[T]
            if c.states > 1:  # the second state is the cell state c
                new_state[layer, 1] = arrays["cs"][T]
            layers.append((inp, hs, tuple(arrays[name] for name in cell.cache)))
        top = dropout(hs[1:], drop, rng)
        logits = ws.get("logits", (N, c.vocab_size), dt)
        matmul_rows_bias(top[0], p["decoder.weight"].T, p["decoder.bias"], logits, nc)
        return logits, new_state, (x, emb, layers, top, recurrent, labelled)

    def backward(self, dlogits, cache, ws, db_dec) -> None:
        """Gradients into the model's ``grads`` from dL/dlogits (T*B, V) C-contiguous; ``db_dec`` is
        the decoder-bias gradient when the loss kernel has already summed it (else None)."""
        from ..kernels.embedding import scatter_add_rows
        from ..kernels.layer import layer_backward
        from ..kernels.parallel import block_steps, matmul_rows, matmul_tn, sum_blocks
        from ..runtime import kernel_threads

        m, cell = self.model, self.cell
        c, p, g, dt = m.config, m.params, m.grads, m.dtype
        nc = kernel_threads()
        x, emb, layers, (top, top_mask), recurrent, labelled = cache
        label_W = labelled[1] if labelled else None
        T, B = x.shape
        N, H, G, V = T * B, c.hidden, c.gates * c.hidden, c.vocab_size
        tb = block_steps(-(-B // nc))
        ids = ws.get("ids", (T, B), np.int64)
        ids[...] = x
        none3, none4 = np.zeros((0, 0, 0), dt), np.zeros((0, 0, 0, 0), dt)
        lengths = ws.get("lengths", (B,), np.int64)
        lengths[...] = T
        # decoder: dW_dec = dlogitsᵀ @ top (into the encoder's gradient when tied), db_dec, dh
        g["encoder.weight"][...] = 0
        dW_dec = ws.get("dW_dec", (V, H), dt) if c.tie_weights else g["decoder.weight"]
        matmul_tn(dlogits, top, dW_dec, ws.get("dW_dec_p", (nc - 1, V, H), dt), nc)
        if c.tie_weights:
            g["encoder.weight"][...] = dW_dec
        g["decoder.bias"][...] = dlogits.sum(axis=0) if db_dec is None else db_dec
        dh = ws.get("dh", (T, B, H), dt)
        matmul_rows(dlogits, p["decoder.weight"], dh.reshape(N, H), nc)
        if top_mask is not None:
            dh *= top_mask.reshape(T, B, H)
        dsT = ws.zeros("dsT", (c.states, B, H), dt)
        ds0 = ws.get("ds0", (c.states, B, H), dt)
        db_hh = ws.get("db_hh", (nc, G), dt)
        db_ih = ws.get("db_ih", (nc, G), dt)
        dW_hh = ws.get("dW_hh_p", (nc, G, H), dt)
        folded = emb is None
        dtab = ws.get("dtab", (nc, V, G), dt) if folded else none3
        no_ids = np.zeros((0, 0), np.int64)
        by_state = labelled and c.condition == "state"
        ds0_all = ws.get("ds0_all", (c.layers, c.states, B, H), dt) if by_state else None
        for layer in reversed(range(c.layers)):
            inp, hs, cell_cache = layers[layer]
            arrays = dict(zip(cell.cache, cell_cache))
            cache_args = [arrays.get(name, none3)[None] for name in LAYER_CACHE]
            W_ih = label_W if layer == 0 and label_W is not None else p[f"rnn.weight_ih_l{layer}"]
            if layer > 0:
                # dL/dx_in overwrites dh in place: each thread writes its streams' rows of a block of
                # steps only after reading them (see kernels/layer.py)
                x_in, mask, dx = inp[0].reshape(T, B, H), inp[1], dh[None]
            elif folded:
                x_in, mask, dx = none3, None, none4
            else:
                x_in, mask = emb.reshape(T, B, -1), None
                dx = ws.get("demb", (1,) + x_in.shape, dt)
            dW_ih = ws.get(f"dW_ih_p{x_in.shape[2]}", (nc, G, x_in.shape[2]), dt)
            W_hh, w_mask = recurrent[layer]
            layer_backward(cell.id, dh, dsT[None], W_hh[None], hs[None], *cache_args, x_in, W_ih[None],
                           ids if layer == 0 and folded else no_ids, dW_hh, dW_ih, db_hh, db_ih, dtab, dx, ds0[None],
                           none4, lengths, nc, tb)
            if ds0_all is not None:  # dL/ds0: what the lines' label vectors receive
                ds0_all[layer] = ds0
            sum_blocks(dW_hh, g[f"rnn.weight_hh_l{layer}"])
            if w_mask is not None:  # dL/dW_hh = dL/d(W_hh * mask) * mask
                g[f"rnn.weight_hh_l{layer}"][...] *= w_mask
            g[f"rnn.bias_hh_l{layer}"][...] = db_hh.sum(axis=0)
            g[f"rnn.bias_ih_l{layer}"][...] = db_ih.sum(axis=0)
            if x_in.shape[0] and not (layer == 0 and label_W is not None):
                sum_blocks(dW_ih, g[f"rnn.weight_ih_l{layer}"])
            if layer > 0:
                dh = dx[0]
                if mask is not None:
                    dh *= mask.reshape(T, B, H)
            elif folded:  # dtable = the scattered dxp; then two small GEMMs
                dtable = ws.get("dtable", (V, G), dt)
                sum_blocks(dtab, dtable)
                np.dot(dtable.T, p["encoder.weight"], out=g["rnn.weight_ih_l0"])
                g["encoder.weight"][...] += dtable @ W_ih
            else:
                demb = dx[0].reshape(N, -1)
                if label_W is not None:  # layer 0 read [embedding; one-hot label]: split its gradients
                    demb = self._split_label_grads(dW_ih, demb)
                scatter_add_rows(g["encoder.weight"], ids.reshape(-1), demb)
        if c.labels and label_W is None:  # each line's dL/ds0 into its label's vector (if any)
            g_label = g["label_embedding.weight"]
            g_label[...] = 0
        if ds0_all is not None:
            np.add.at(g_label, labelled[0], ds0_all.transpose(2, 0, 1, 3).reshape(B, -1))

    def _split_label_grads(self, dW_ih, demb):
        """From layer 0's gradients wrt [W_ih0 | label columns] and its input [embedding; one-hot]:
        write dW_ih0 and the label vectors' gradient; return the embeddings' part (T*B, E)."""
        from ..kernels.parallel import sum_blocks

        m = self.model
        E, g = m.config.embed, m.grads
        both = np.empty(dW_ih.shape[1:], m.dtype)
        sum_blocks(dW_ih, both)
        g["rnn.weight_ih_l0"][...] = both[:, :E]
        g["label_embedding.weight"][...] = both[:, E:].T
        return np.ascontiguousarray(demb[:, :E])

    def state_grads(self, dlogits, cache) -> np.ndarray:
        """(L, T, B, H) float64 total dL/dh^l_s for every layer and step, from dL/dlogits (T*B, V) of
        a forward without dropout: per layer from the top down, the layer kernel's backward (which
        keeps its gate gradients dxp here) and the recurrent part rebuilt by the cell
        (``Cell.state_grads``)."""
        from ..kernels.layer import layer_backward
        from ..kernels.parallel import block_steps
        from ..runtime import kernel_threads

        m, cell = self.model, self.cell
        c, p, dt = m.config, m.params, m.dtype
        x, _, layers, _, _, _ = cache
        T, B = x.shape
        H, G, nc = c.hidden, c.gates * c.hidden, kernel_threads()
        none3, none4 = np.zeros((0, 0, 0), dt), np.zeros((0, 0, 0, 0), dt)
        out = np.empty((c.layers, T, B, H))
        dh_out = (dlogits @ p["decoder.weight"]).reshape(T, B, -1)   # (T, B, H) from the decoder
        parts = [np.empty(shape, dt) for shape in ((nc, G, H), (nc, 0, 0), (nc, G), (nc, G))]
        dxp = np.empty((1, T, B, G), dt)
        for layer in reversed(range(c.layers)):
            _, hs, cell_cache = layers[layer]
            arrays = dict(zip(cell.cache, cell_cache))
            W_hh = p[f"rnn.weight_hh_l{layer}"]
            dx = np.empty((1, T, B, H), dt) if layer > 0 else none4
            layer_backward(cell.id, np.ascontiguousarray(dh_out, dtype=dt), np.zeros((1, c.states, B, H), dt),
                           W_hh[None], hs[None], *(arrays.get(name, none3)[None] for name in LAYER_CACHE), none3,
                           p[f"rnn.weight_ih_l{layer}"][None], np.zeros((0, 0), np.int64), *parts, none3, dx,
                           np.empty((1, c.states, B, H), dt), dxp, np.full(B, T, np.int64), nc,
                           block_steps(-(-B // nc)))
            out[layer] = cell.state_grads(dh_out, dxp[0], W_hh, cell_cache)
            if layer > 0:
                dh_out = dx[0]
        return out

    def recurrent_matrices(self) -> list[tuple[int, str, np.ndarray]]:
        """(layer, block, matrix) for what carries h_{t-1} into step t: every W_hh whole ("all",
        when it has several gate blocks) and each gate block (the H×H matrix it applies)."""
        c, p, H = self.model.config, self.model.params, self.model.config.hidden
        out = []
        for layer in range(c.layers):
            W = p[f"rnn.weight_hh_l{layer}"]
            if c.gates > 1:
                out.append((layer, "all", W))
            out += [(layer, name, W[g * H:(g + 1) * H]) for g, name in enumerate(self.cell.gate_order)]
        return out


def dropout(a, p, rng):
    """Variational inverted dropout on a (T, B, H) array: one mask per stream (B, H), the same at
    every step. Returns (output (T*B, H) C-contiguous, mask (T*B, H) or None)."""
    T, B, H = a.shape
    if p <= 0:
        return np.ascontiguousarray(a).reshape(T * B, H), None
    mask = np.broadcast_to((stream_uniform(rng, (B, H), 0) >= p).astype(a.dtype) / a.dtype.type(1 - p), (T, B, H))
    mask = mask.reshape(T * B, H)  # a copy: the backward multiplies by it row for row
    return (a * mask.reshape(T, B, H)).reshape(T * B, H), mask


def label_inputs(E, ids, labels, n_labels):
    """(T*B, E + n_labels): each position's embedding beside its stream's one-hot label, layer 0's
    input when the label is an input (W_ih [x; onehot(l)] = W_ih x + the label's vector)."""
    T, B = ids.shape
    width = E.shape[1]
    out = np.zeros((T, B, width + n_labels), E.dtype)
    out[:, :, :width] = E[ids]
    out[:, np.arange(B), width + labels] = 1
    return out.reshape(T * B, -1)
