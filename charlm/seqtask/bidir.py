"""Stacked (bi)directional recurrent layers over a batch of variable-length sequences.

Each layer is one call of the layer kernels (kernels/layer.py) for both directions at once, the
same tiled, multithreaded kernels the language model trains with, for any per-layer cell of the
table. Batches are right-padded and sorted by length, longest first (``Spans`` checks it); each
sequence runs exactly its own length inside the kernels (padding is never computed, and its final
state is the state at its length, as with PyTorch's packed sequences), and the reverse direction
starts at each sequence's own last token. The kernels write both directions' outputs by position,
the forward direction's before the reverse one's, (T, B, 2H), as input to the next layer or the
head. On two threads or more the two directions run side by side. ``stacked_forward`` and
``stacked_backward`` run several models of the same shapes (an ensemble's members), each on its
own input, in one call per layer: their directions' blocks share the threads, and each model
computes exactly what it would alone.

Parameters carry ``nn.LSTM/GRU/RNN(bidirectional=True)``'s names under a prefix:
``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` and the same with
``_reverse``. Final states are (L*D, S, B, H): layer-major, forward before reverse (``h_n``,
``c_n`` of PyTorch are [:, 0] and [:, 1]). Outputs at padded steps are 0.

Dimensions: T steps, B batch, I layer input, H hidden, G gates, S states, D directions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIRECTION_SUFFIXES = ("", "_reverse")


def encoder_shapes(gates: int, input_size: int, hidden: int, layers: int,
                   directions: int, prefix: str = "rnn.") -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes in PyTorch's state_dict order."""
    shapes = []
    for k in range(layers):
        inp = input_size if k == 0 else directions * hidden
        for sfx in DIRECTION_SUFFIXES[:directions]:
            shapes += [(f"{prefix}weight_ih_l{k}{sfx}", (gates * hidden, inp)),
                       (f"{prefix}weight_hh_l{k}{sfx}", (gates * hidden, hidden)),
                       (f"{prefix}bias_ih_l{k}{sfx}", (gates * hidden,)),
                       (f"{prefix}bias_hh_l{k}{sfx}", (gates * hidden,))]
    return shapes


@dataclass
class Spans:
    """A sorted, right-padded batch: lengths (B,) non-increasing, each >= 1; T = lengths[0].
    ``reverse`` (T, B) maps a step to its mirror within the row's length (an involution; padded
    steps map to themselves)."""

    lengths: np.ndarray
    reverse: np.ndarray
    mask: np.ndarray       # (T, B) True at valid steps

    @classmethod
    def of(cls, lengths) -> "Spans":
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.ndim != 1 or lengths.size == 0 or lengths.min() < 1:
            raise ValueError("lengths must be a non-empty 1-d array of positive integers")
        if np.any(np.diff(lengths) > 0):
            raise ValueError("sequences must be sorted by length, longest first")
        T = int(lengths[0])
        t = np.arange(T)[:, None]
        mask = t < lengths[None, :]
        reverse = np.where(mask, lengths[None, :] - 1 - t, t)
        return cls(np.ascontiguousarray(lengths), reverse, mask)

    def flip(self, a: np.ndarray) -> np.ndarray:
        """a (T, B, ...) with every row's valid steps reversed (its padding left in place)."""
        idx = self.reverse.reshape(self.reverse.shape + (1,) * (a.ndim - 2))
        return np.take_along_axis(a, idx, axis=0)


def _names(prefix: str, k: int, d: int):
    return lambda kind: f"{prefix}{kind}_l{k}{DIRECTION_SUFFIXES[d]}"


def _stacked(params, prefix: str, k: int, directions: int):
    """Layer k's (W_ih (D, G, I), b_ih (D, G), W_hh (D, G, H), b_hh (D, G)) of every model in
    ``params`` (a list of parameter dicts), the models' directions stacked one model after another."""
    names = [_names(prefix, k, d) for d in range(directions)]
    return tuple(np.ascontiguousarray(np.stack([p[name(kind)] for p in params for name in names]))
                 for kind in ("weight_ih", "bias_ih", "weight_hh", "bias_hh"))


def _blocks(B: int, directions: int, serial: bool = False):
    """(blocks per direction, steps per block): the kernel threads shared by one model's directions
    (one block per direction when ``serial``). Stacked models keep their own split (so each
    computes as it would alone) and add blocks."""
    from ..kernels.parallel import block_steps
    from ..runtime import kernel_threads

    nchunks = 1 if serial else max(1, kernel_threads() // directions)
    return nchunks, block_steps(-(-B // nchunks))


def _threads(serial: bool):
    """Where the layer kernels' blocks run: on the calling thread only (``serial``), else on all."""
    from contextlib import nullcontext

    from ..kernels.blocks import on_this_thread

    return on_this_thread() if serial else nullcontext()


def encoder_forward(cell, params, x, spans: Spans, layers: int, directions: int, *,
                    dropout: float = 0.0, rng=None, prefix: str = "rnn.", serial: bool = False):
    """x (T, B, I) -> out (T, B, D*H) (0 at padded steps), finals (L*D, S, B, H), cache.
    ``dropout`` (training, with ``rng``) drops inputs of layers 2..L, as nn.LSTM's dropout does.
    ``serial``: one block per direction, every block on the calling thread (kernels/blocks.py), so
    that it may run on a Python thread beside another model's pass."""
    out, finals, cache = stacked_forward(cell, [params], [x], spans, layers, directions, dropout=dropout, rngs=[rng],
                                         prefix=prefix, serial=serial)
    return out, finals[0], cache


def stacked_forward(cell, params: list, xs: list, spans: Spans, layers: int, directions: int, *,
                    dropout: float = 0.0, rngs=None, prefix: str = "rnn.", scratch=None, serial: bool = False):
    """``encoder_forward`` of M models of the same shapes on the same batch, each on its own input
    xs[m] (T, B, I) with its own parameters and dropout generator rngs[m], in one kernel call per
    layer (D = M x directions blocks side by side, so the models share the threads). Returns out
    (T, B, M*D*H), the models' outputs side by side, the list of their finals and the cache.
    Each model's arithmetic and draws are those of ``encoder_forward`` on it alone. ``scratch``
    (scratch.py): where the layers' large arrays come from, valid until the next call with it.
    ``serial``: as ``encoder_forward``'s."""
    from ..kernels.layer import layer_forward
    from .scratch import allocator

    M, (T, B, _) = len(params), xs[0].shape
    D, S, dt = M * directions, cell.states, xs[0].dtype
    rngs = rngs if rngs is not None else [None] * M
    nchunks, tb = _blocks(B, directions, serial)
    lengths, rows = spans.lengths, np.arange(B)
    none3, no_ids = np.zeros((0, 0, 0), dt), np.zeros((0, 0), np.int64)
    finals, cache = [], []
    inp = np.ascontiguousarray(xs[0] if M == 1 else np.concatenate(xs, axis=2))
    for k in range(layers):
        empty = allocator(scratch, ("forward", k))
        mask = None
        if k > 0 and dropout > 0 and all(rng is not None for rng in rngs):
            keep, width = 1.0 - dropout, inp.shape[2] // M
            mask = np.concatenate([((rng.random((T, B, width)) < keep) / keep).astype(inp.dtype) for rng in rngs],
                                  axis=2)
            inp = inp * mask
        weights = _stacked(params, prefix, k, directions)
        H = weights[2].shape[2]
        hs = empty("hs", (D, T + 1, B, H), dt)
        arrays = {name: empty(name, (D,) + shape, dt) for name, shape in cell.cache_shapes(T, B, H).items()}
        out = empty("out", (T, B, D * H), dt)
        with _threads(serial):
            layer_forward(cell.id, inp, none3, no_ids, *weights, np.zeros((D, S, B, H), dt), hs, *arrays.values(),
                          out, lengths, nchunks, tb)
        final = np.empty((D, S, B, H), dt)
        final[:, 0] = hs[:, lengths, rows]              # each sequence's state at its own length
        if S > 1:                                       # the second state is the cell state
            final[:, 1] = arrays["cs"][:, lengths, rows]
        finals.append(final)
        cache.append((inp, mask, weights, hs, tuple(arrays.values())))
        inp = out
    per_model = [np.concatenate([f[m * directions:(m + 1) * directions] for f in finals]) for m in range(M)]
    return inp, per_model, cache


def _sum_parts(parts, nchunks: int, d: int):
    """Direction d's per-thread partial sums, added in thread order."""
    total = parts[d * nchunks].copy()
    for j in range(1, nchunks):
        total += parts[d * nchunks + j]
    return total


def encoder_backward(cell, params, grads, dout, dfinals, spans: Spans, cache, layers: int,
                     directions: int, prefix: str = "rnn.", serial: bool = False):
    """Accumulate parameter gradients into ``grads`` (same names as ``params``) and return dL/dx
    (T, B, I). dout (T, B, D*H) wrt the top layer's outputs; dfinals (L*D, S, B, H) or None;
    ``serial`` as the forward pass's."""
    return stacked_backward(cell, [grads], dout, [dfinals], spans, cache, layers, directions, prefix,
                            serial=serial)[0]


def stacked_backward(cell, grads: list, dout, dfinals: list, spans: Spans, cache, layers: int, directions: int,
                     prefix: str = "rnn.", scratch=None, serial: bool = False):
    """``encoder_backward`` of the M models ``stacked_forward`` ran: dout (T, B, M*D*H) their
    outputs' gradients side by side, dfinals[m] (L*D, S, B, H) or None. Accumulates each model's
    gradients into grads[m] and returns the list of their dL/dx (T, B, I) (from ``scratch``,
    when given, as ``stacked_forward``'s arrays); ``serial`` as ``stacked_forward``'s."""
    from ..kernels.layer import layer_backward
    from .scratch import allocator

    M, (T, B, _) = len(grads), dout.shape
    D, S, dt = M * directions, cell.states, cache[0][3].dtype
    nchunks, tb = _blocks(B, directions, serial)
    none3, none4, no_ids = np.zeros((0, 0, 0), dt), np.zeros((0, 0, 0, 0), dt), np.zeros((0, 0), np.int64)
    for k in range(layers - 1, -1, -1):
        inp, mask, (W_ih, _, W_hh, _), hs, arrays = cache[k]
        G, H, I = W_hh.shape[1], W_hh.shape[2], W_ih.shape[2]
        empty = allocator(scratch, ("backward", k))
        dsT = np.zeros((D, S, B, H), dt)
        for m, dfinal in enumerate(dfinals):
            if dfinal is not None:
                dsT[m * directions:(m + 1) * directions] = dfinal[k * directions:(k + 1) * directions]
        dW_hh, dW_ih = empty("dW_hh", (D * nchunks, G, H), dt), empty("dW_ih", (D * nchunks, G, I), dt)
        db_hh, db_ih = np.empty((D * nchunks, G), dt), np.empty((D * nchunks, G), dt)
        dx = empty("dx", (D, T, B, I), dt)
        with _threads(serial):
            layer_backward(cell.id, np.ascontiguousarray(dout, dtype=dt), dsT, W_hh, hs, *arrays, inp, W_ih, no_ids,
                           dW_hh, dW_ih, db_hh, db_ih, none3, dx, np.empty((D, S, B, H), dt), none4, spans.lengths,
                           nchunks, tb)
        dinps = []
        for m in range(M):
            for d in range(directions):
                name, kk = _names(prefix, k, d), m * directions + d
                for kind, parts in (("weight_hh", dW_hh), ("bias_hh", db_hh), ("weight_ih", dW_ih),
                                    ("bias_ih", db_ih)):
                    grads[m][name(kind)] += _sum_parts(parts, nchunks, kk)
            dinp = dx[m * directions]
            for d in range(1, directions):   # summed in a fixed order
                dinp += dx[m * directions + d]
            if mask is not None:
                dinp *= mask[:, :, m * I:(m + 1) * I]
            dinps.append(dinp)
        dout = dinps[0] if M == 1 else np.concatenate(dinps, axis=2)
    return dinps
