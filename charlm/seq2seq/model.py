"""The encoder-decoder with attention: its configuration, parameters, and one batch's loss and gradient.

    source ids -> embedding -> dropout -> L (bi)directional layers (seqtask/bidir.py)  -> e (S, B, F)
    top layer's final states, directions concatenated -> bridge: h0 = tanh(W_h [h_fwd; h_bwd] + b_h)
                                                         c0 = W_c' [c_fwd; c_bwd] + b_c' (two-state cells)
    target ids -> embedding -> dropout -> decoder loop (decoder.py, attention.py)     -> a_t (T, B, H)
    a_t -> dropout -> Linear(H, V_target) -> softmax   (a_t is also fed to the next step, whole)

Parameters carry the names of the equivalent ``torch.nn`` module (tests/test_seq2seq_model.py
writes it): ``src_embedding``, ``tgt_embedding`` (nn.Embedding), ``encoder`` (nn.LSTM/GRU/RNN,
``bidirectional`` as configured), ``bridge_h``, ``bridge_c`` (nn.Linear; bridge_c for two-state
cells only), ``decoder`` (nn.LSTMCell/GRUCell/RNNCell on [embedding; a_{t-1}]), ``attention.*``
(attention.py), ``combine`` (nn.Linear(H+F, H)) and ``out`` (nn.Linear(H, V_target)); all views
into one flat buffer, the gradients into another.

A batch: src_ids (S, B) right-padded, src_lengths (B,); tgt_in, tgt_out (T, B) right-padded (the
target with its start token in front, and with its end token behind), tgt_lengths (B,); any order,
padding never read. The encoder runs the batch sorted by source length and the decoder each block of
rows it splits the batch into by target length (each needs the rows still running to be a prefix);
results come back in the caller's order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..seqtask.bidir import Spans, encoder_backward, encoder_forward, encoder_shapes
from ..seqtask.heads import dropout_mask
from . import attention
from .config import Seq2SeqConfig

EMBEDDINGS = ("src_embedding", "tgt_embedding")


def parameter_shapes(c: Seq2SeqConfig) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes in storage order."""
    from ..kernels.cells import get_cell

    cell = get_cell(c.cell)
    H, F, G = c.hidden, c.width, cell.gates * c.hidden
    bridges = [f"bridge_{s}" for s in "hc"[:cell.states]]
    return ([("src_embedding.weight", (c.src_vocab, c.embed)), ("tgt_embedding.weight", (c.tgt_vocab, c.embed))]
            + encoder_shapes(cell.gates, c.embed, H, c.layers, c.directions, prefix="encoder.")
            + [(f"{b}.{kind}", shape) for b in bridges for kind, shape in (("weight", (H, F)), ("bias", (H,)))]
            + [("decoder.weight_ih", (G, c.embed + H)), ("decoder.weight_hh", (G, H)),
               ("decoder.bias_ih", (G,)), ("decoder.bias_hh", (G,))]
            + (attention.attention_shapes(c.attention, H, F) if c.attention != "none" else [])
            + [("combine.weight", (H, H + F)), ("combine.bias", (H,)),
               ("out.weight", (c.tgt_vocab, H)), ("out.bias", (c.tgt_vocab,))])


@dataclass
class Encoded:
    """The encoder's pass over a batch sorted by source length (``order``: the caller's rows)."""
    order: np.ndarray
    spans: Spans
    ids: np.ndarray          # (S, B) source ids, 0 at padding
    keep: np.ndarray | None  # the embeddings' dropout mask
    out: np.ndarray          # (S, B, F), 0 at padding
    finals: np.ndarray       # (L*D, states, B, H)
    cache: list


class Seq2SeqModel:
    """Parameters, forward and backward of one batch, decoding steps (decode.py). Never prints."""

    def __init__(self, config: Seq2SeqConfig, dtype=np.float32):
        from .heap import keep_freed_memory

        keep_freed_memory()   # its passes' large arrays then reuse the process's pages (heap.py)
        self.config = config.validate()
        self.dtype = np.dtype(dtype)
        self.shapes = parameter_shapes(config)
        bounds = np.cumsum([0] + [math.prod(shape) for _, shape in self.shapes])
        self.size = int(bounds[-1])
        self.flat = np.zeros(self.size, self.dtype)
        self.grad_flat = np.zeros(self.size, self.dtype)
        spans = [(name, shape, a, b) for (name, shape), a, b in zip(self.shapes, bounds[:-1], bounds[1:])]
        self.params = {name: self.flat[a:b].reshape(shape) for name, shape, a, b in spans}
        self.grads = {name: self.grad_flat[a:b].reshape(shape) for name, shape, a, b in spans}
        # no attention runs the general kernel over one position (its weight is 1, whatever the score)
        self.kind = attention.KINDS.get(config.attention, attention.KINDS["general"])

    @property
    def cell(self):
        from ..kernels.cells import get_cell  # the kernels (and Numba) load on first use

        return get_cell(self.config.cell)

    def init_weights(self, rng: np.random.Generator) -> "Seq2SeqModel":
        """PyTorch's defaults: N(0, 1) embeddings, U(±1/√H) in the recurrent layers and the
        decoder cell, U(±1/√fan_in) in every Linear (weight and bias, fan_in its weight's)."""
        H = self.config.hidden
        for name, shape in self.shapes:
            module, kind = name.rsplit(".", 1)
            if module in EMBEDDINGS:
                self.params[name][...] = rng.standard_normal(shape)
                continue
            if module in ("encoder", "decoder"):
                bound = 1.0 / math.sqrt(H)
            else:
                bound = 1.0 / math.sqrt(self.params[f"{module}.weight"].shape[1])
            self.params[name][...] = rng.uniform(-bound, bound, shape)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: self.params[name] for name, _ in self.shapes}

    def load_state_dict(self, tensors) -> None:
        missing = [name for name, _ in self.shapes if name not in tensors]
        extra = sorted(set(tensors) - set(self.params))
        if missing or extra:
            raise KeyError(f"state dict does not match: missing {missing}, unexpected {extra}")
        for name, _ in self.shapes:
            self.params[name][...] = tensors[name]

    def nchunks(self, rows: int) -> int:
        from ..runtime import kernel_threads

        return max(1, min(kernel_threads(), rows))

    def loaded(self, tensors) -> "Seq2SeqModel":
        """The model with ``tensors`` loaded (load_state_dict)."""
        self.load_state_dict(tensors)
        return self

    # -- the encoder and the bridge --------------------------------------------------------------

    def encode_batch(self, src_ids, src_lengths, rng=None) -> Encoded:
        c, p = self.config, self.params
        lengths = np.asarray(src_lengths, np.int64)
        order = np.argsort(-lengths, kind="stable")
        spans = Spans.of(lengths[order])
        ids = np.where(spans.mask, np.asarray(src_ids)[:int(spans.lengths[0])][:, order], 0)
        x = p["src_embedding.weight"][ids]
        drop = c.dropout if rng is not None else 0.0
        keep = dropout_mask(x.shape, drop, rng, x.dtype) if drop else None
        if keep is not None:
            x *= keep
        out, finals, cache = encoder_forward(self.cell, p, x, spans, c.layers, c.directions, dropout=drop, rng=rng,
                                             prefix="encoder.")
        return Encoded(order, spans, ids, keep, out, finals, cache)

    def bridge(self, enc: Encoded, rows):
        """(h0, c0, top) of the decoder rows ``rows`` (indices into the encoder's sorted batch);
        top: the top layer's final states, directions concatenated, per state (B, F)."""
        c, p = self.config, self.params
        D = c.directions
        finals = enc.finals[(c.layers - 1) * D:]                     # (D, states, B, H)
        top = [np.ascontiguousarray(finals[:, s][:, rows].transpose(1, 0, 2).reshape(len(rows), c.width))
               for s in range(finals.shape[1])]
        h0 = np.tanh(top[0] @ p["bridge_h.weight"].T + p["bridge_h.bias"])
        c0 = top[1] @ p["bridge_c.weight"].T + p["bridge_c.bias"] if len(top) > 1 else h0
        return h0, np.ascontiguousarray(c0), top

    def attended(self, enc: Encoded, rows, top):
        """(memory (B, S, F), keys (B, S, A), source lengths) the decoder rows ``rows`` attend to:
        the encoder outputs, or without attention the top layer's final vector as a memory of one
        position (the context is then that vector at every step, and keys of 0 score nothing).
        Row-major (a row's positions contiguous), unlike the encoder's step-major outputs: the
        attention's loops run over one row's positions, and vectorise only on contiguous rows."""
        if self.config.attention == "none":
            B = len(rows)
            return (np.ascontiguousarray(top[0][:, None]), np.zeros((B, 1, self.config.hidden), self.dtype),
                    np.ones(B, np.int64))
        memory = np.ascontiguousarray(enc.out.transpose(1, 0, 2)[rows])
        keys = attention.keys(self.config.attention, memory, self.params, self.nchunks(memory.shape[0] * len(rows)))
        return memory, keys, np.ascontiguousarray(enc.spans.lengths[rows])

    def attended_backward(self, enc: Encoded, rows, memory, grads, dfinals):
        """dL/d(encoder outputs) in the encoder's order from the decoder's ``grads``; without
        attention, what reached the memory goes to the top layer's final states in ``dfinals``."""
        c = self.config
        dout = np.zeros_like(enc.out)
        if c.attention == "none":
            D, H = c.directions, c.hidden
            for d in range(D):
                dfinals[(c.layers - 1) * D + d, 0][rows] += grads["denc"][:, 0, d * H:(d + 1) * H]
            return dout
        dmemory = grads["denc"] + attention.keys_backward(c.attention, memory, grads["dkeys"], self.params,
                                                          self.grads, self.nchunks(memory.shape[0] * len(rows)))
        dout[:, rows] = dmemory.transpose(1, 0, 2)
        return dout

    def bridge_backward(self, enc: Encoded, rows, dh0, dc0, h0, top):
        """The bridge's weight gradients, and dL/d(final states) for the encoder (L*D, states, B, H)."""
        c, p, g = self.config, self.params, self.grads
        D, H = c.directions, c.hidden
        dfinals = np.zeros(enc.finals.shape, enc.finals.dtype)
        pairs = [("bridge_h", dh0 * (1 - h0 * h0))] + ([("bridge_c", dc0)] if len(top) > 1 else [])
        for s, (name, dz) in enumerate(pairs):
            g[f"{name}.weight"] += dz.T @ top[s]
            g[f"{name}.bias"] += dz.sum(axis=0)
            dtop = dz @ p[f"{name}.weight"]
            for d in range(D):
                dfinals[(c.layers - 1) * D + d, s][rows] = dtop[:, d * H:(d + 1) * H]
        return dfinals

    def encoder_backward(self, enc: Encoded, dout, dfinals) -> None:
        """From dL/d(encoder outputs) and dL/d(final states), both in the encoder's order."""
        from ..kernels.embedding import scatter_add_rows

        c = self.config
        dx = encoder_backward(self.cell, self.params, self.grads, dout, dfinals, enc.spans, enc.cache, c.layers,
                              c.directions, prefix="encoder.")
        if enc.keep is not None:
            dx *= enc.keep
        valid = enc.spans.mask
        scatter_add_rows(self.grads["src_embedding.weight"], enc.ids[valid], np.ascontiguousarray(dx[valid]))

    # -- a training batch -------------------------------------------------------------------------

    def forward(self, src_ids, src_lengths, tgt_in, tgt_lengths, rng=None):
        """(logits (T, B, V_target) and attention weights (T, B, S), both in the caller's order and
        0 at padding; the pass, for ``backward``). ``rng`` turns dropout on (training)."""
        from .training_pass import run_pass

        return run_pass(self, src_ids, src_lengths, tgt_in, tgt_lengths, rng)

    def loss_and_grad(self, src_ids, src_lengths, tgt_in, tgt_out, tgt_lengths, rng=None) -> float:
        """Mean cross-entropy over the valid target tokens; its gradient into ``grad_flat``."""
        from .training_pass import backward, loss

        _, _, state = self.forward(src_ids, src_lengths, tgt_in, tgt_lengths, rng)
        value, dlogits = loss(self, state, tgt_out)
        backward(self, state, dlogits)
        return value

    # -- decoding (decode.py) ----------------------------------------------------------------------

    def encode(self, src_ids, src_lengths):
        from .decode import encode

        return encode(self, src_ids, src_lengths)

    def step(self, tokens, states):
        from .decode import step

        return step(self, tokens, states)

    def select(self, states, rows):
        from .decode import select

        return select(states, rows)

    def greedy(self, src_ids, src_lengths, bos: int, eos: int, max_length: int, banned=()):
        from .decode import greedy

        return greedy(self, src_ids, src_lengths, bos, eos, max_length, banned)
