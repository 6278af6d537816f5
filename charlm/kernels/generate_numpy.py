"""The generation loop of kernels/generate.py in plain NumPy, for the first tokens of a sample.

Why a second loop: loading Numba and its cached kernels costs most of a second per process
(``import numba``, its typing registries, and the SciPy import it triggers), far more than a short
sample takes. So ``Sampler`` produces the first ``NUMPY_TOKENS`` tokens of every sample (and
conditions on primes up to that length) here, and only a longer sample loads the compiled loop,
which is several times faster per token once loaded (docs/performance.md, "Start-up").
``charlm sample`` of a few hundred characters from a small model therefore never imports Numba.

The rule is fixed (always the first NUMPY_TOKENS, whatever has been imported), so a seed gives the
same text in the CLI, in a training run's samples and in a script. Same arguments, same uniforms,
and the very same sampling rule (sampling_rule's constrain and sample_id, which the compiled loop
compiles); only
the cell arithmetic is a twin, written in whole-vector NumPy (the kernels' per-row steps are
scalar loops that only run compiled). It differs from theirs by ~1e-7 relative (exact tanh here,
the kernels' float32 approximation there, and BLAS summation order), which changes a draw only
when a uniform falls that close to a boundary of the cumulative distribution.
tests/test_kernels.py checks the two loops agree id for id. Cells whose step runs through the
decoder (Jordan) always use the compiled loop: ``runs(cell_id)`` says which cells this loop runs.
"""
from __future__ import annotations

import numpy as np

from .cells import CELLS
from .sampling_rule import constrain, sample_id

NUMPY_TOKENS = 256   # tokens of each sample (and prime length) served by this loop
LSTM, GRU, RNN = (CELLS[name].id for name in ("lstm", "gru", "rnn"))


def runs(cell_id) -> bool:
    """Whether this loop has the cell's step (else the compiled loop serves the whole sample)."""
    return cell_id in (LSTM, GRU, RNN)


def _sigmoid(a):
    half = a.dtype.type(0.5)
    return half * (1 + np.tanh(half * a))


def feed(cell_id, table0, W_ih, b_ih, W_hh, b_hh, state, token) -> None:
    """Run one token through every layer, updating state (L, S, H) in place (kernels' _feed)."""
    if not runs(cell_id):
        raise ValueError(f"generate_numpy: no NumPy loop for cell id {cell_id}")
    for l in range(W_hh.shape[0]):
        s = state[l]
        hW = W_hh[l] @ s[0]
        if l == 0:
            x, bx = table0[token], None
        elif cell_id == GRU:
            x, bx = W_ih[l - 1] @ state[l - 1, 0], b_ih[l - 1]
        else:
            hW += W_ih[l - 1] @ state[l - 1, 0]
            x, bx = b_ih[l - 1], None
        H = s.shape[1]
        if cell_id == LSTM:
            a = x + hW + b_hh[l]
            i, f, o = _sigmoid(a[:H]), _sigmoid(a[H:2 * H]), _sigmoid(a[3 * H:])
            g = np.tanh(a[2 * H:3 * H])
            s[1] = f * s[1] + i * g
            s[0] = o * np.tanh(s[1])
        elif cell_id == GRU:
            xb = x if bx is None else x + bx
            rz = _sigmoid(xb[:2 * H] + hW[:2 * H] + b_hh[l, :2 * H])
            a_n = hW[2 * H:] + b_hh[l, 2 * H:]
            n = np.tanh(xb[2 * H:] + rz[:H] * a_n)
            s[0] = n + rz[H:] * (s[0] - n)
        else:
            s[0] = np.tanh(x + hW + b_hh[l])


def generate(cell_id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, token, uniforms,
             temperature, top_k, top_p, eos_id, stop_at_eos, out, start, controls) -> int:
    """kernels.generate with the same arguments, result and state convention."""
    V = table0.shape[0]
    if not 0 <= token < V:
        raise IndexError("generate: token id out of range [0, V)")
    top = W_hh.shape[0] - 1
    p, q = np.empty(V, np.float64), np.empty(V, np.float64)
    n = min(uniforms.shape[0], out.shape[0] - start)
    for k in range(n):
        feed(cell_id, table0, W_ih, b_ih, W_hh, b_hh, state, token)
        logits = W_dec @ state[top, 0] + b_dec
        constrain(logits, q, out, start + k, eos_id, controls)
        token = int(sample_id(q, uniforms[k], temperature, top_k, top_p, p))
        out[start + k] = token
        if stop_at_eos and token == eos_id:
            return k + 1
    return n


def advance(cell_id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, ids, logits_out) -> None:
    """kernels.advance: feed ids without sampling; logits_out receives the last logits."""
    V = table0.shape[0]
    for token in ids:
        if not 0 <= token < V:
            raise IndexError("advance: token id out of range [0, V)")
        feed(cell_id, table0, W_ih, b_ih, W_hh, b_hh, state, int(token))
    if len(ids):
        logits_out[...] = W_dec @ state[W_hh.shape[0] - 1, 0] + b_dec
