"""Batch-1 generation on two threads: each thread owns half of every layer's hidden units.

Sampling streams every weight once per token, so it is bound by cache bandwidth. One core's L2
(2 MB here) does not hold a 2x256 LSTM (3.3 MB); two cores' L2s do. So thread k permanently owns
the gate rows of units [k*H/n, (k+1)*H/n) of every layer (copied once, contiguous, by
``split_weights``), computes those rows' GEMVs and the cell update for its units, and the threads
meet at a barrier after each layer (a layer needs all of h below) and after the decoder (whose
rows are split the same way). Both threads then draw the same token from the same logits and
uniform, so no third barrier is needed.

Each row's dot product is computed by the same ``gemv`` code as the one-thread loop, in the same
order, so the two paths produce identical ids and states (tests/test_bench.py checks it).

The barrier spins on an atomic counter (a few hundred ns between cores) and yields the CPU after
a while, so a descheduled partner on a busy machine costs a time slice, not a spinning core.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .generate import GRU, LSTM, _sample, gemv
from .gru import gru_step
from .lstm import lstm_step
from .rnn import rnn_step

SPINS = 4000  # barrier polls before each sched_yield


@intrinsic
def _atomic_add(typingctx, arr, i, v):
    """arr[i] += v atomically (sequentially consistent); returns the old value. arr int64."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])
        return builder.atomic_rmw("add", ptr, context.cast(builder, args[2], sig.args[2], types.int64), "seq_cst")
    return types.int64(arr, i, v), codegen


@intrinsic
def _atomic_load(typingctx, arr, i):
    """arr[i], read atomically (sequentially consistent). arr int64."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])
        return builder.load_atomic(ptr, "seq_cst", 8)
    return types.int64(arr, i), codegen


@intrinsic
def _sched_yield(typingctx):
    """libc's sched_yield(): give the core to another runnable thread."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(cache=True)
def barrier(sync, nthreads):
    """Wait until all ``nthreads`` threads have arrived. sync (2,) int64: [arrived, generation]."""
    gen = _atomic_load(sync, 1)
    if _atomic_add(sync, 0, 1) == nthreads - 1:  # the last one in resets and releases the others
        _atomic_add(sync, 0, -nthreads)
        _atomic_add(sync, 1, 1)
        return
    spins = 0
    while _atomic_load(sync, 1) == gen:
        spins += 1
        if spins >= SPINS:
            _sched_yield()
            spins = 0


def split_weights(cell_id, table0, W_ih, b_ih, W_hh, b_hh, nthreads):
    """Per-thread copies of the gate rows of each thread's units (NumPy, once per Sampler).
    Returns (table0 (n, V, Gu), W_ih (n, L-1, Gu, H), b_ih (n, L-1, Gu), W_hh (n, L, Gu, H),
    b_hh (n, L, Gu)) with Gu = G * H / n; the gate blocks keep their order (i, f, g, o ...)."""
    G, H = W_hh.shape[1], W_hh.shape[2]
    gates = G // H
    nu = H // nthreads

    def rows(k):
        return np.concatenate([np.arange(g * H + k * nu, g * H + (k + 1) * nu) for g in range(gates)])

    idx = [rows(k) for k in range(nthreads)]
    return (np.ascontiguousarray(np.stack([table0[:, r] for r in idx])),
            np.ascontiguousarray(np.stack([W_ih[:, r] for r in idx])),
            np.ascontiguousarray(np.stack([b_ih[:, r] for r in idx])),
            np.ascontiguousarray(np.stack([W_hh[:, r] for r in idx])),
            np.ascontiguousarray(np.stack([b_hh[:, r] for r in idx])))


@njit(cache=True, parallel=True, error_model="numpy")
def generate_split(cell_id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, token, uniforms,
                   temperature, top_k, top_p, eos_id, stop_at_eos, out, nthreads):
    """``generate`` (kernels/generate.py) on ``nthreads`` threads that must run concurrently (the
    caller checks Numba has that many). Weights as returned by ``split_weights``; W_dec, b_dec,
    state (L, S, H) and the rest as for ``generate``. Returns the number of ids written."""
    L, Gu = W_hh.shape[1], W_hh.shape[2]
    H = W_dec.shape[1]
    V = W_dec.shape[0]
    S = state.shape[1]
    dt = W_dec.dtype
    if token < 0 or token >= V:
        raise IndexError("generate: token id out of range [0, V)")
    n = min(uniforms.shape[0], out.shape[0])
    hbuf = np.empty((2, L, S, H), dt)  # double-buffered state: read [cur], write [1 - cur]
    hbuf[0] = state
    logits = np.empty(V, dt)
    sync = np.zeros(2, np.int64)
    written = np.zeros(nthreads, np.int64)
    for tid in prange(nthreads):
        u0 = tid * H // nthreads
        nu = (tid + 1) * H // nthreads - u0
        v0 = tid * V // nthreads
        v1 = (tid + 1) * V // nthreads
        xp = np.empty(Gu, dt)
        zx = np.zeros(Gu, dt)
        hW = np.empty(Gu, dt)
        gates = np.empty(Gu, dt)
        h_new = np.empty(nu, dt)
        c_new = np.empty(nu, dt)
        p = np.empty(V, np.float64)
        tok = token
        count = n
        for k in range(n):
            cur = k % 2
            for l in range(L):
                s = hbuf[cur, l]
                gemv(W_hh[tid, l], s[0], hW, False)  # this thread's gate rows
                if l == 0:
                    x, bx = table0[tid, tok], zx
                elif cell_id == GRU:
                    gemv(W_ih[tid, l - 1], hbuf[1 - cur, l - 1, 0], xp, False)
                    x, bx = xp, b_ih[tid, l - 1]
                else:
                    gemv(W_ih[tid, l - 1], hbuf[1 - cur, l - 1, 0], hW, True)
                    x, bx = b_ih[tid, l - 1], zx
                if cell_id == LSTM:
                    lstm_step(x, hW, b_hh[tid, l], s[1, u0:u0 + nu], h_new, c_new, gates)
                    hbuf[1 - cur, l, 1, u0:u0 + nu] = c_new
                elif cell_id == GRU:
                    gru_step(x, bx, hW, b_hh[tid, l], s[0, u0:u0 + nu], h_new, gates, c_new)
                else:
                    rnn_step(x, hW, b_hh[tid, l], h_new)
                hbuf[1 - cur, l, 0, u0:u0 + nu] = h_new
                barrier(sync, nthreads)  # the next layer (and the decoder) read all of h
            gemv(W_dec[v0:v1], hbuf[1 - cur, L - 1, 0], logits[v0:v1], False)
            for v in range(v0, v1):
                logits[v] += b_dec[v]
            barrier(sync, nthreads)
            tok = _sample(logits, uniforms[k], temperature, top_k, top_p, p)  # same draw on every thread
            if tid == 0:
                out[k] = tok
            # logits are rewritten only after the next token's layer barriers: no barrier needed here
            if stop_at_eos and tok == eos_id:
                count = k + 1
                break
        written[tid] = count
    state[:] = hbuf[written[0] % 2]
    return written[0]
