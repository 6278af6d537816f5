"""Sequence classifier and tagger: embedding -> L (bi)directional layers -> head.

input:    each token's embedding, plus with ``ngrams`` the hashed embeddings of the n-grams ending there
classify: pooling over valid steps -> dropout -> linear -> softmax over C labels (one per sequence)
tag:      dropout -> linear on every valid step -> softmax over C tags (one per token)

Parameters are PyTorch's ``nn.Embedding`` (``embedding.weight``), ``nn.LSTM/GRU/RNN`` with
``bidirectional`` as configured (``rnn.weight_ih_l0``, ``rnn.weight_ih_l0_reverse``, ...) and
``nn.Linear`` (``head.weight``, ``head.bias``), all views into one flat buffer (and the gradients
into another) so that the optimiser works on a single array, as for the language model. The
n-gram table (``ngram_embedding.weight``, K x E) is an ``nn.Embedding`` too (see ngrams.py); a
classifier's wide path (``wide.weight``, K x C, see wide.py) is an ``nn.EmbeddingBag(mode="sum")``
whose output is added to the head's. A batch touches few rows of these two hashed tables: their
gradients are row-sparse, and a training step zeroes, clips and updates only the rows touched
(sparse_grad.py, sparse_adam.py).

A batch is ids (T, B) right-padded with any id, lengths (B,) in any order: it is sorted by length
here (the encoder needs the sequences still running to be a prefix) and results come back in
the caller's order.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from . import heads, ngrams, sparse_grad, wide
from .bidir import Spans, encoder_backward, encoder_forward, encoder_shapes
from .config import SeqModelConfig

# The hashed tables: a batch touches few of their rows, so their gradients are row-sparse.
TABLES = ("ngram_embedding.weight", "wide.weight")


@contextmanager
def kernel_scope(threads: int = 0):
    """Run the block with every BLAS pool on one thread and ``threads`` threads for the model
    (0 = all cores; restored on exit). The layer kernels split their work across Numba's threads,
    each calling single-threaded BLAS (kernels/parallel.py says why); with two threads or more, a
    bidirectional layer runs its two directions at once."""
    from ..runtime import kernel_threads, thread_limits

    with thread_limits(threads):
        kernel_threads()  # applies the limits now (they otherwise wait for a parallel kernel)
        yield


def parameter_shapes(config: SeqModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes in storage order; an ensemble's members one after another, each under
    ``members.<k>.`` (ensemble.py)."""
    if config.members > 1:
        one = parameter_shapes(replace(config, members=1))
        return [(f"members.{k}.{name}", shape) for k in range(config.members) for name, shape in one]
    from ..kernels.cells import get_cell

    c = config
    F = c.directions * c.hidden
    ngram = [("ngram_embedding.weight", (c.buckets, c.embed))] if c.ngrams else []
    wide_table = [("wide.weight", (c.wide_buckets, c.num_labels))] if c.wide_ngrams else []
    return ([("embedding.weight", (c.vocab_size, c.embed))] + ngram
            + encoder_shapes(get_cell(c.cell).gates, c.embed, c.hidden, c.layers, c.directions)
            + [("head.weight", (c.num_labels, F)), ("head.bias", (c.num_labels,))] + wide_table)


class SeqModel:
    """Parameters, forward and backward of one batch. Never prints, never reads files."""

    def __init__(self, config: SeqModelConfig, dtype=np.float32, *, flat=None, grad_flat=None, ngram_salt: int = 0):
        """``flat``, ``grad_flat``: buffers to view (an ensemble's slices) instead of new ones;
        ``ngram_salt``: the salt of this model's n-gram hash (an ensemble member's index, ngrams.py)."""
        self.config = config.validate()
        self.dtype = np.dtype(dtype)
        self.shapes = parameter_shapes(config)
        self.size = sum(math.prod(s) for _, s in self.shapes)
        self.flat = np.zeros(self.size, self.dtype) if flat is None else flat
        self.grad_flat = np.zeros(self.size, self.dtype) if grad_flat is None else grad_flat
        self.params, self.grads, offset = {}, {}, 0
        for name, shape in self.shapes:
            n = math.prod(shape)
            self.params[name] = self.flat[offset:offset + n].reshape(shape)
            self.grads[name] = self.grad_flat[offset:offset + n].reshape(shape)
            offset += n
        self.ngram_salt = ngram_salt
        self.layout = sparse_grad.GradLayout.of(self.shapes, TABLES)
        self.table_names = [name for name, _ in self.shapes if name in TABLES]
        # the distinct rows of each table (table_names order) the last backward pass wrote; None
        # before the first one: the next pass then zeroes the whole gradient
        self.touched: list[np.ndarray] | None = None

    @property
    def cell(self):
        from ..kernels.cells import get_cell  # the kernels (and Numba) load on first use

        return get_cell(self.config.cell)

    def init_weights(self, rng: np.random.Generator) -> "SeqModel":
        """PyTorch's defaults (U(±1/√H) in the recurrent layers, U(±1/√fan_in) in the head), an
        embedding of N(0, 0.1²) rows, and the forget-gate bias at 1 where the cell has one
        (Jozefowicz et al. 2015), so that early training remembers. The wide table starts at 0
        (the linear model's usual start; it draws nothing, so the rest starts as without it)."""
        c, p = self.config, self.params
        bound = 1.0 / math.sqrt(c.hidden)
        for name, shape in self.shapes:
            if name.startswith("rnn."):
                p[name][...] = rng.uniform(-bound, bound, shape)
        forget = self.cell.forget_gate
        if forget >= 0:
            H = c.hidden
            for name in p:
                if name.startswith("rnn.bias_"):
                    p[name][forget * H:(forget + 1) * H] = 0.5  # two biases: 1 in sum
        p["embedding.weight"][...] = rng.normal(0.0, 0.1, p["embedding.weight"].shape)
        head_bound = 1.0 / math.sqrt(c.directions * c.hidden)
        p["head.weight"][...] = rng.uniform(-head_bound, head_bound, p["head.weight"].shape)
        p["head.bias"][...] = 0.0
        if c.ngrams:  # drawn last: a model without n-grams starts as it always did
            p["ngram_embedding.weight"][...] = rng.normal(0.0, 0.1, p["ngram_embedding.weight"].shape)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: self.params[name] for name, _ in self.shapes}

    def load_state_dict(self, tensors) -> None:
        for name, _ in self.shapes:
            self.params[name][...] = tensors[name]

    # -- forward / backward ------------------------------------------------------------------

    def forward(self, ids, lengths, *, rng=None, serial: bool = False):
        """Logits in the caller's order: (B, C) for classify, (T, B, C) for tag (0 at padded
        steps). ``rng`` turns on dropout (training); ``serial`` keeps the recurrent layers' work on
        the calling thread (bidir.encoder_forward), for a Python thread of its own. Returns (logits,
        cache for backward)."""
        c = self.config
        x, batch = self.inputs(ids, lengths, rng)
        drop = c.dropout if rng is not None else 0.0
        out, _, enc_cache = encoder_forward(self.cell, self.params, x, batch[-1], c.layers, c.directions,
                                            dropout=drop, rng=rng, serial=serial)
        return self.head(out, batch, enc_cache, rng)

    def inputs(self, ids, lengths, rng):
        """The encoder's input x (T, B, E) of the batch sorted by length, longest first, and the
        sorted batch (order, lengths, ids, n-gram buckets, input-dropout multipliers, spans).
        The first of the model's draws from ``rng``; the encoder's and ``head``'s follow."""
        c, p = self.config, self.params
        lengths = np.asarray(lengths, dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        lengths_s = lengths[order]
        T = int(lengths_s[0])
        ids_s = np.ascontiguousarray(np.asarray(ids)[:T, order])
        spans = Spans.of(lengths_s)
        x = p["embedding.weight"][ids_s]                                       # (T, B, E)
        drop_in = c.input_dropout if rng is not None else 0.0
        token_keep = gram_keep = grams = None
        if drop_in:  # whole vectors: a dropped character or n-gram is simply not seen this time
            token_keep = heads.dropout_mask(ids_s.shape, drop_in, rng, x.dtype)  # (T, B)
            x *= token_keep[:, :, None]
        if c.ngrams:
            grams = ngrams.ngram_ids(ids_s, c.vocab_size, c.ngrams, c.buckets, self.ngram_salt)  # (N-1, T, B)
            if drop_in:
                gram_keep = heads.dropout_mask(grams.shape, drop_in, rng, x.dtype)
            ngrams.embed(p["ngram_embedding.weight"], grams, x, gram_keep)
        return x, (order, lengths_s, ids_s, grams, token_keep, gram_keep, spans)

    def head(self, out, batch, enc_cache, rng):
        """(logits in the caller's order, cache for ``backward``) from the encoder's outputs out
        (T, B, D*H) of the sorted ``batch`` (``inputs``)."""
        c, p = self.config, self.params
        order, lengths_s, ids_s, spans = *batch[:3], batch[-1]
        drop = c.dropout if rng is not None else 0.0
        if c.task == "classify":
            feats, arg = heads.pool(c.pooling, out, lengths_s, spans.mask, c.directions)
        else:
            feats, arg = out, None
        mask = heads.dropout_mask(feats.shape, drop, rng, feats.dtype) if drop else None
        h = feats * mask if mask is not None else feats
        logits_s = h @ p["head.weight"].T + p["head.bias"]
        bag = None
        if c.wide_ngrams:  # its dropout is drawn last: without it, every other draw is as before
            buckets, rows = wide.bag(ids_s, lengths_s, c.vocab_size, c.wide_ngrams, c.wide_buckets, self.ngram_salt)
            drop_wide = c.wide_dropout if rng is not None else 0.0
            wide_keep = heads.dropout_mask(buckets.shape, drop_wide, rng, out.dtype) if drop_wide else None
            logits_s = logits_s + wide.logits(p["wide.weight"], buckets, rows, len(lengths_s), wide_keep)
            bag = (buckets, rows, wide_keep)
        if c.task == "tag":
            logits_s = logits_s * spans.mask[:, :, None]
        inverse = np.argsort(order, kind="stable")
        logits = logits_s[inverse] if c.task == "classify" else logits_s[:, inverse]
        return logits, (order, inverse, *batch[1:], enc_cache, out.shape, arg, mask, h, bag)

    def backward(self, dlogits, cache, *, zeroed: bool = False, serial: bool = False) -> None:
        """Gradients of the loss wrt every parameter into ``grads`` (overwritten), from dlogits
        in the caller's order (zero wherever the loss does not look). Only what the previous
        pass wrote is zeroed first (``zeroed``: the caller has done it), and ``touched`` lists
        the table rows this one writes: the rest of each table's gradient stays zero without
        being visited (sparse_grad.py). ``serial`` as ``forward``'s."""
        c = self.config
        dout, touched = self.head_backward(dlogits, cache, zeroed=zeroed)
        dx = encoder_backward(self.cell, self.params, self.grads, dout, None, cache[7], cache[8], c.layers,
                              c.directions, serial=serial)
        self.inputs_backward(dx, cache, touched)

    def zero_grad(self) -> None:
        """Zero what the last backward pass wrote (the whole gradient before the first one)."""
        if self.touched is None:
            self.grad_flat[...] = 0
        else:
            sparse_grad.zero(self.grad_flat, self.layout, self.touched)

    def head_backward(self, dlogits, cache, *, zeroed: bool = False):
        """Zero the gradients the last pass wrote, write the head's and the wide path's, and return
        dL/d(encoder outputs) (T, B, D*H) and the wide table's rows written ({name: rows}).
        ``zeroed``: the caller has zeroed them already (an ensemble, all its members at once)."""
        c, p, g = self.config, self.params, self.grads
        order, _, lengths_s, _, _, _, _, spans, _, out_shape, arg, mask, h, bag = cache
        if not zeroed:
            self.zero_grad()
        self.touched, touched = None, {}  # (None while half written: a failed pass leaves a full zeroing next)
        dl = dlogits[order] if c.task == "classify" else dlogits[:, order] * spans.mask[:, :, None]
        if bag is not None:
            touched["wide.weight"] = wide.backward(g["wide.weight"], *bag[:2], dl, bag[2])
        F = out_shape[2]
        g["head.weight"][...] = dl.reshape(-1, dl.shape[-1]).T @ h.reshape(-1, F)
        g["head.bias"][...] = dl.reshape(-1, dl.shape[-1]).sum(axis=0)
        dh = dl @ p["head.weight"]
        if mask is not None:
            dh *= mask
        if c.task == "classify":
            return heads.pool_backward(c.pooling, dh, out_shape, lengths_s, spans.mask, arg, c.directions), touched
        return dh, touched

    def inputs_backward(self, dx, cache, touched) -> None:
        """The embeddings' gradients from dL/dx (T, B, E); ``touched`` (``head_backward``'s) gets
        the n-gram table's rows and becomes the model's."""
        from ..kernels.embedding import scatter_add_rows

        g = self.grads
        ids_s, grams, token_keep, gram_keep, spans = cache[3:8]
        if grams is not None:
            touched["ngram_embedding.weight"] = ngrams.embed_backward(g["ngram_embedding.weight"], grams, dx,
                                                                      spans.mask, gram_keep)
        if token_keep is not None:
            dx = dx * token_keep[:, :, None]
        dx = np.ascontiguousarray(dx.reshape(-1, dx.shape[-1])[spans.mask.reshape(-1)])
        scatter_add_rows(g["embedding.weight"], ids_s.reshape(-1)[spans.mask.reshape(-1)], dx)
        self.touched = [touched[name] for name in self.table_names]

    def loss(self, logits, labels, lengths):
        """(mean training loss, dL/dlogits), the labels smoothed by ``label_smoothing``.
        classify: labels (B,); tag: labels (T, B), padded steps ignored."""
        e = self.config.label_smoothing
        if self.config.task == "classify":
            return heads.cross_entropy(logits, np.asarray(labels), smoothing=e)
        T, B, C = logits.shape
        valid = (np.arange(T)[:, None] < np.asarray(lengths)[None, :]).reshape(-1)
        labels = np.asarray(labels)[:T].reshape(-1)
        loss, dlogits = heads.cross_entropy(logits.reshape(-1, C), np.where(valid, labels, 0),
                                            valid.astype(np.float64), e)
        return loss, dlogits.reshape(T, B, C)

    def loss_and_grad(self, ids, lengths, labels, rng=None, *, zeroed: bool = False, serial: bool = False) -> float:
        """The batch's mean loss; its gradients into ``grads`` (``backward``'s ``zeroed`` and ``serial``)."""
        logits, cache = self.forward(ids, lengths, rng=rng, serial=serial)
        loss, dlogits = self.loss(logits, labels, lengths)
        self.backward(dlogits, cache, zeroed=zeroed, serial=serial)
        return loss
