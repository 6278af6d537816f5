"""Stacked (bi)directional recurrent layers over a batch of variable-length sequences.

Any cell of the kernel table runs here through its serial pair
``forward(xp, W_hh, b_hh, s0) -> (hs, sT, cache)`` / ``backward(dh_out, dsT, W_hh, hs, cache)``.

Batches are right-padded and sorted by length, longest first (``Spans`` checks it), so that the
sequences still running at step t are always a prefix of the batch. A direction runs as one kernel
call per span of steps between two distinct lengths, on that prefix only: padding is never
computed, each sequence's final state is the state at its own length (PyTorch's packed
sequences give the same), and the state carried from span to span chains the gradients back
exactly. The reverse direction is the same forward kernel on every sequence reversed within its
length (padding stays at the end); its outputs are reversed back and concatenated after the
forward direction's, (T, B, 2H), as input to the next layer or the head.

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
    """How a sorted, right-padded batch splits into kernel calls.

    lengths (B,) non-increasing, each >= 1; T = lengths[0]. ``bounds`` lists (t0, t1, n, n_end)
    per span: steps t0..t1-1 run on rows 0..n-1; rows n_end..n-1 end at t1. ``reverse`` (T, B)
    maps a step to its mirror within the row's length (an involution; padded steps map to
    themselves)."""

    lengths: np.ndarray
    bounds: list
    reverse: np.ndarray
    mask: np.ndarray       # (T, B) True at valid steps

    @classmethod
    def of(cls, lengths) -> "Spans":
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.ndim != 1 or lengths.size == 0 or lengths.min() < 1:
            raise ValueError("lengths must be a non-empty 1-d array of positive integers")
        if np.any(np.diff(lengths) > 0):
            raise ValueError("sequences must be sorted by length, longest first")
        T, B = int(lengths[0]), lengths.size
        bounds, t0 = [], 0
        for t1 in np.unique(lengths):           # ascending distinct lengths
            n = int(np.count_nonzero(lengths >= t1))
            n_end = int(np.count_nonzero(lengths > t1))
            bounds.append((t0, int(t1), n, n_end))
            t0 = int(t1)
        t = np.arange(T)[:, None]
        mask = t < lengths[None, :]
        reverse = np.where(mask, lengths[None, :] - 1 - t, t)
        return cls(lengths, bounds, reverse, mask)

    def flip(self, a: np.ndarray) -> np.ndarray:
        """a (T, B, ...) with every row's valid steps reversed (its padding left in place)."""
        idx = self.reverse.reshape(self.reverse.shape + (1,) * (a.ndim - 2))
        return np.take_along_axis(a, idx, axis=0)


def direction_forward(cell, xp, W_hh, b_hh, spans: Spans):
    """One direction over the valid steps. xp (T, B, GH) input projections (b_ih included).
    Returns out (T, B, H) (0 at padded steps), final (S, B, H) at each row's length, and the
    per-span kernel caches for ``direction_backward``."""
    T, B, _ = xp.shape
    H = W_hh.shape[1]
    out = np.zeros((T, B, H), xp.dtype)
    final = np.empty((cell.states, B, H), xp.dtype)
    state = np.zeros((cell.states, B, H), xp.dtype)
    caches = []
    for t0, t1, n, n_end in spans.bounds:
        hs, sT, cache = cell.forward(np.ascontiguousarray(xp[t0:t1, :n]), W_hh, b_hh,
                                     np.ascontiguousarray(state[:, :n]))
        out[t0:t1, :n] = hs[1:]
        final[:, n_end:n] = sT[:, n_end:n]
        state = sT
        caches.append((hs, cache))
    return out, final, caches


def direction_backward(cell, dout, dfinal, W_hh, spans: Spans, caches):
    """Gradients of one direction: dout (T, B, H) wrt its outputs (ignored at padded steps),
    dfinal (S, B, H) wrt its final states. Returns dxp (T, B, GH) (0 at padded steps), dW_hh, db_hh."""
    T, B, H = dout.shape
    G = W_hh.shape[0]
    dxp = np.zeros((T, B, G), dout.dtype)
    dW_hh = np.zeros_like(W_hh)
    db_hh = np.zeros(G, dout.dtype)
    carried = None  # dL/d(state at t1) of the rows that go on past this span
    for (t0, t1, n, n_end), (hs, cache) in zip(reversed(spans.bounds), reversed(caches)):
        ds = np.empty((cell.states, n, H), dout.dtype)
        ds[:, n_end:n] = dfinal[:, n_end:n]
        if n_end:
            ds[:, :n_end] = carried
        dx_k, dW_k, db_k, carried = cell.backward(np.ascontiguousarray(dout[t0:t1, :n]), ds, W_hh, hs, cache)
        dxp[t0:t1, :n] = dx_k
        dW_hh += dW_k
        db_hh += db_k
    return dxp, dW_hh, db_hh


def _layer_direction_forward(cell, params, inp, spans: Spans, name, d: int):
    """One direction of one layer: its outputs (T, B, H) in the forward order, final states, cache."""
    T, B, _ = inp.shape
    src = spans.flip(inp) if d else inp
    xp = (src.reshape(T * B, -1) @ params[name("weight_ih")].T + params[name("bias_ih")]).reshape(T, B, -1)
    out, final, caches = direction_forward(cell, xp, params[name("weight_hh")], params[name("bias_hh")], spans)
    return (spans.flip(out) if d else out), final, (src, caches)


def _layer_direction_backward(cell, params, dout_d, dfinal, spans: Spans, name, d: int, direction_cache):
    """Gradients of one direction of one layer: ((name, gradient) pairs, dL/d(layer input))."""
    T, B, _ = dout_d.shape
    src, caches = direction_cache
    dout_d = dout_d * spans.mask[:, :, None]
    if d:
        dout_d = spans.flip(dout_d)
    dxp, dW_hh, db_hh = direction_backward(cell, dout_d, dfinal, params[name("weight_hh")], spans, caches)
    dxp2 = dxp.reshape(T * B, -1)
    grads = [(name("weight_hh"), dW_hh), (name("bias_hh"), db_hh),
             (name("weight_ih"), dxp2.T @ src.reshape(T * B, -1)), (name("bias_ih"), dxp2.sum(axis=0))]
    dsrc = (dxp2 @ params[name("weight_ih")]).reshape(T, B, -1)
    return grads, (spans.flip(dsrc) if d else dsrc)


def _each_direction(run, directions: int, pool):
    """[run(0), run(1), ...]: with a ``pool`` (an executor), the reverse direction runs on its
    thread while this one runs the forward direction; the kernels release the GIL, and the two
    directions share no array they write, so the results are the same either way."""
    if pool is None or directions == 1:
        return [run(d) for d in range(directions)]
    later = pool.submit(run, 1)
    try:
        first = run(0)
    finally:
        second = later.result()
    return [first, second]


def _names(prefix: str, k: int, d: int):
    return lambda kind: f"{prefix}{kind}_l{k}{DIRECTION_SUFFIXES[d]}"


def encoder_forward(cell, params, x, spans: Spans, layers: int, directions: int, *,
                    dropout: float = 0.0, rng=None, prefix: str = "rnn.", pool=None):
    """x (T, B, I) -> out (T, B, D*H) (0 at padded steps), finals (L*D, S, B, H), cache.
    ``dropout`` (training, with ``rng``) drops inputs of layers 2..L, as nn.LSTM's dropout does.
    ``pool``: an executor that runs the reverse direction beside the forward one."""
    finals, cache = [], []
    inp = x
    for k in range(layers):
        mask = None
        if k > 0 and dropout > 0 and rng is not None:
            keep = 1.0 - dropout
            mask = ((rng.random(inp.shape) < keep) / keep).astype(inp.dtype)
            inp = inp * mask
        layer_inp = inp
        results = _each_direction(
            lambda d: _layer_direction_forward(cell, params, layer_inp, spans, _names(prefix, k, d), d),
            directions, pool)
        finals += [final for _, final, _ in results]
        cache.append((inp, mask, [c for _, _, c in results]))
        inp = np.concatenate([out for out, _, _ in results], axis=2) if directions > 1 else results[0][0]
    return inp, np.stack(finals), cache


def encoder_backward(cell, params, grads, dout, dfinals, spans: Spans, cache, layers: int,
                     directions: int, prefix: str = "rnn.", pool=None):
    """Accumulate parameter gradients into ``grads`` (same names as ``params``) and return dL/dx
    (T, B, I). dout (T, B, D*H) wrt the top layer's outputs; dfinals (L*D, S, B, H) or None."""
    T, B, _ = dout.shape
    for k in range(layers - 1, -1, -1):
        inp, mask, layer_cache = cache[k]
        H = params[f"{prefix}weight_hh_l{k}"].shape[1]
        layer_dout = dout

        def run(d):
            dfinal = (dfinals[k * directions + d] if dfinals is not None
                      else np.zeros((cell.states, B, H), layer_dout.dtype))
            return _layer_direction_backward(cell, params, layer_dout[:, :, d * H:(d + 1) * H], dfinal, spans,
                                             _names(prefix, k, d), d, layer_cache[d])

        dinp = np.zeros_like(inp)
        for named, dsrc in _each_direction(run, directions, pool):  # summed in a fixed order
            for name, g in named:
                grads[name] += g
            dinp += dsrc
        if mask is not None:
            dinp *= mask
        dout = dinp
    return dout
