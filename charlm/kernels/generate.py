"""Batch-1 generation: the whole token loop in one @njit call, no Python per token.

Per token and layer l: xp = table0[token] (layer 0: embedding folded into W_ih_l0, a row gather)
or W_ih[l-1] @ h_{l-1} + b_ih[l-1]; then W_hh[l] @ h_l (``gemv``, gemv.py) and the same per-row step
function the training kernels use (the cell's ``<name>_step``). Then logits = W_dec @ h_top +
b_dec, the sampling controls (banned ids, minimum length, repetition penalty, no repeated n-gram:
``constrain``, skipped when none is set) and one draw (``sample_id``), both from sampling_rule.py,
which the NumPy loop shares.

One loop (``_tokens``) on one thread or several. Sampling streams every weight once per token, so
it is bound by cache bandwidth: one core's L2 (2 MB here) does not hold a 2x256 LSTM (3.3 MB); two
cores' L2s do. So a model whose recurrent weights pass SPLIT_MIN_BYTES runs the loop on n threads
(``generate_split``, on Python threads each running a GIL-free block: blocks.py): thread k owns
the gate rows of units [k*H/n, (k+1)*H/n) of every layer (copied once, contiguous, by
``split_weights``) and the logits [k*V/n, (k+1)*V/n); the threads meet at a
barrier (barrier.py) after each layer (a layer needs all of h below) and after the decoder, then
each draws the same id from the same logits and uniform. On one thread (``generate``) the share is
the whole model and nothing waits. Each row's dot product is the same ``gemv`` in the same order
either way, so the ids and states are identical. ``CompiledLoop`` picks the thread count per call
and keeps the per-thread copies with the model they belong to.

Compiled per cell, as the training's layer kernels are (per_cell.py): ``generate``, ``advance``
and ``generate_split`` take the cell's id and run that cell's own copy of the loop, built and
compiled (or loaded from Numba's cache) when the cell is first sampled. Why: the loop reached the
step through the id chain of every cell (dispatch.py), and the two-thread loop was a parallel loop,
whose compilation costs several times its body's: the first long sample spent most of its time
compiling.

Dimensions: L layers, S state arrays per layer, H hidden, G gates, V vocabulary.

Shared arguments (all float arrays one dtype, C-contiguous):
    cell_id  the cell's ``id`` in the cell table (kernels/cells.py)
    table0   (V, G*H)      encoder.weight @ W_ih_l0^T + b_ih_l0
    W_ih     (L-1, G*H, H) and b_ih (L-1, G*H): layers 1..L-1 (leading dim 0 when L = 1)
    W_hh     (L, G*H, H)   and b_hh (L, G*H)
    W_dec    (V, H)        and b_dec (V,)
    state    (L, S, H)     updated in place: (h,) or (h, c) per layer
Jordan (kernels/jordan.py): W_hh, b_hh are W_yh (L, H, V), b_yh (L, H); G = 1; its step runs the
whole stack through the decoder (``jordan_feed``), so it runs on one thread.

State convention: after ``generate`` the state has consumed ``token`` and every generated id except
the last one returned; to continue, call again with token = out[n_written - 1]. Two calls chained
this way produce exactly what one longer call produces with the same uniforms.
"""
import functools

import numba
import numpy as np
from numba import njit

from .barrier import barrier
from .blocks import run_blocks, threads_at_once
from .cells import CELLS
from .gemv import gemv
from .jordan import jordan_feed
from .per_cell import specialise
from .sampling_rule import constrain, constrains, sample_id

SPLIT_CELLS = frozenset(c.id for c in CELLS.values() if not c.feeds_output)  # steps that split by unit
SPLIT_MIN_BYTES = 1 << 19   # recurrent weights from which two threads sample faster than one

draw = njit(cache=True, error_model="numpy")(sample_id)  # the sampling rule, compiled
limit = njit(cache=True, error_model="numpy")(constrain)   # and its controls
any_limit = njit(cache=True)(constrains)

# Placeholders the loop templates below call; _loop binds them per cell (per_cell.specialise): its
# step, its Cell.input_apart, and whether it feeds its output back (Jordan: jordan_feed instead).
cell_step = None
APART = FEEDS_OUTPUT = False
_LOOP = {"error_model": "numpy"}


@njit(cache=True)
def _scratch(Gu, units, V, dt):
    """What _feed works in: xp, zx (zeros), hW, gates (Gu,); h_new, c_new, hn (units,); p (V,)."""
    return (np.empty(Gu, dt), np.zeros(Gu, dt), np.empty(Gu, dt), np.empty(Gu, dt), np.empty(units, dt),
            np.empty(units, dt), np.empty(units, dt), np.empty(V, dt))


def _feed(nthreads, sync, u0, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, old, new, token, work):
    """Run one token through all layers: this thread's units [u0, u0 + units) of ``new`` (L, S, H)
    from ``old`` (the same array on one thread: updated in place). Weights are this thread's rows
    (one entry of split_weights); work as _scratch returns it.

    Most cells add the input and recurrent products into one vector (W_hh h + W_ih x) and get b_ih
    where the step expects xp; a cell that keeps them apart (``APART``: the GRU, whose
    b_in + W_in x sits outside r * (...)) gets W_ih x and b_ih separately."""
    xp, zx, hW, gates, h_new, c_new, hn, p = work
    if FEEDS_OUTPUT:  # the whole stack and the decoder in one step, on one thread
        jordan_feed(table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, old, token, xp, hW, h_new, p)
        return
    S = old.shape[1]
    u1 = u0 + h_new.shape[0]
    for l in range(W_hh.shape[0]):
        gemv(W_hh[l], old[l, 0], hW, False)  # (Gu,) recurrent product of this thread's rows
        if l == 0:
            x, bx = table0[token], zx  # layer 0: the embedding folded into W_ih_l0 (+ b_ih_l0)
        elif APART:
            gemv(W_ih[l - 1], new[l - 1, 0], xp, False)
            x, bx = xp, b_ih[l - 1]
        else:
            gemv(W_ih[l - 1], new[l - 1, 0], hW, True)  # W_hh h + W_ih x in one vector
            x, bx = b_ih[l - 1], zx
        c_prev = old[l, S - 1, u0:u1]  # the second state (read only by the cells that have one)
        cell_step(x, bx, b_hh[l], b_hh[l], hW, old[l, 0, u0:u1], c_prev, h_new, c_new, gates, hn)
        if S > 1:
            new[l, 1, u0:u1] = c_new
        new[l, 0, u0:u1] = h_new
        if nthreads > 1:
            barrier(sync, nthreads)  # the next layer (and the decoder) read all of h


def _tokens(tid, nthreads, sync, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, hbuf, logits, token,
            uniforms, temperature, top_k, top_p, eos_id, stop_at_eos, out, start, controls):
    """The token loop as thread ``tid`` of ``nthreads`` runs it. Weights (n, ...) as split_weights
    returns them (n = 1: the whole model); hbuf (B, L, S, H) the state: B = 1 is updated in place,
    B = 2 is double-buffered (token k reads hbuf[k % 2] and writes the other, since threads read
    units that others are writing); logits (V,) shared by the threads. Returns how many ids it wrote."""
    V, H = W_dec.shape
    u0 = tid * H // nthreads
    v0, v1 = tid * V // nthreads, (tid + 1) * V // nthreads
    work = _scratch(W_hh.shape[2], (tid + 1) * H // nthreads - u0, V, W_dec.dtype)
    p = np.empty(V, np.float64)
    q = np.empty(V, np.float64)
    top = hbuf.shape[1] - 1
    nbuf = hbuf.shape[0]
    n = min(uniforms.shape[0], out.shape[0] - start)
    limited = any_limit(controls)  # once per call: without controls the draw reads the logits themselves
    for k in range(n):
        new = hbuf[(k + 1) % nbuf]
        _feed(nthreads, sync, u0, table0[tid], W_ih[tid], b_ih[tid], W_hh[tid], b_hh[tid], W_dec, b_dec,
              hbuf[k % nbuf], new, token, work)
        gemv(W_dec[v0:v1], new[top, 0], logits[v0:v1], False)  # (V,) this thread's rows
        for v in range(v0, v1):
            logits[v] += b_dec[v]
        if nthreads > 1:
            barrier(sync, nthreads)
        if limited:
            limit(logits, q, out, start + k, eos_id, controls)  # every thread reads the same history
            token = draw(q, uniforms[k], temperature, top_k, top_p, p)  # the same id on every thread
        else:
            token = draw(logits, uniforms[k], temperature, top_k, top_p, p)
        if tid == 0:  # the others read it next token, after that token's layer barriers
            out[start + k] = token
        # logits are rewritten only after the next token's layer barriers: no barrier needed here
        if stop_at_eos and token == eos_id:
            return k + 1
    return n


def _split_block(tid, nthreads, sync, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, hbuf, logits, token, uniforms,
                 temperature, top_k, top_p, eos_id, stop_at_eos, out, start, controls, written):
    """Thread ``tid``'s part of generate_split: the loop as that thread runs it (run_blocks runs
    every thread's at once, GIL-free)."""
    written[tid] = _tokens(tid, nthreads, sync, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, hbuf, logits, token,
                           uniforms, temperature, top_k, top_p, eos_id, stop_at_eos, out, start, controls)


def _advance(nthreads, u0, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, ids, logits_out):
    """The loop of ``advance`` (its arguments from table0 on; nthreads = 1, u0 = 0)."""
    V, H = W_dec.shape
    work = _scratch(W_hh.shape[1], H, V, W_dec.dtype)
    sync = np.zeros(2, np.int64)  # unused on one thread
    for i in range(ids.shape[0]):
        if ids[i] < 0 or ids[i] >= V:
            raise IndexError("advance: token id out of range [0, V)")
        _feed(nthreads, sync, u0, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, state, ids[i], work)
    if ids.shape[0] > 0:
        gemv(W_dec, state[W_hh.shape[0] - 1, 0], logits_out, False)
        logits_out += b_dec


@functools.cache
def _loop(cell_id):
    """The loop's functions for one cell, compiled (or loaded from Numba's cache) on first call."""
    cell = next((c for c in CELLS.values() if c.id == cell_id), None)
    if cell is None:
        raise ValueError(f"no cell has id {cell_id!r}")
    step = _no_step if cell.feeds_output else getattr(cell.kernels, f"{cell.name}_step")
    templates = [(_feed, _LOOP), (_tokens, _LOOP), (_advance, _LOOP), (_split_block, _LOOP | {"nogil": True})]
    return specialise(cell, templates, {"cell_step": step, "APART": cell.input_apart, "FEEDS_OUTPUT": cell.feeds_output})


@njit(cache=True)
def _no_step(*args):
    """The step of a cell that feeds its output back: never called (its loop takes the other path)."""
    return None


# The one-thread loop is the split loop's block with one thread, and advance takes its thread count and
# first unit as arguments: a constant passed in compiled code makes Numba compile the callee per value,
# so the token loop and the step of all three compile once.

def generate(cell_id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, token, uniforms, temperature, top_k,
             top_p, eos_id, stop_at_eos, out, start, controls):
    """The generation loop on one thread.

    token:     the id fed first (e.g. <eos> to start, or the last id of the prime)
    uniforms:  (n,) float64 in [0, 1), one per generated id, drawn by the caller's Generator
    temperature, top_k, top_p: see sampling_rule.sample_id (top_p >= 1 and top_k <= 0 mean off)
    eos_id, stop_at_eos: stop after writing eos_id (it is written and counted)
    out:       (M,) int64 this sample's ids: out[:start] were generated before (the controls read
               them), the new ids go to out[start:start + n]
    controls:  (banned (V,) bool, min_length, repetition_penalty, no_repeat_ngram): see
               sampling_rule.constrain (sampling_rule.no_controls(V) changes nothing)
    returns    the number of ids written
    """
    if token < 0 or token >= W_dec.shape[0]:
        raise IndexError("generate: token id out of range [0, V)")
    written = np.zeros(1, np.int64)
    # [None]: views with a leading axis of 1, the whole model the one thread's share; state updated in place
    _loop(cell_id)["_split_block"](0, 1, np.zeros(2, np.int64), table0[None], W_ih[None], b_ih[None], W_hh[None],
                                   b_hh[None], W_dec, b_dec, state[None], np.empty(W_dec.shape[0], W_dec.dtype),
                                   token, uniforms, temperature, top_k, top_p, eos_id, stop_at_eos, out, start,
                                   controls, written)
    return int(written[0])


def generate_split(cell_id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, token, uniforms,
                   temperature, top_k, top_p, eos_id, stop_at_eos, out, start, controls, nthreads):
    """``generate`` on ``nthreads`` threads that must run at once (the caller checks they can:
    split_threads). Weights as returned by ``split_weights``; W_dec, b_dec, state (L, S, H) and the
    rest as for ``generate``. Returns the number of ids written."""
    if token < 0 or token >= W_dec.shape[0]:
        raise IndexError("generate: token id out of range [0, V)")
    hbuf = np.empty((2,) + state.shape, state.dtype)
    hbuf[0] = state
    logits = np.empty(W_dec.shape[0], W_dec.dtype)
    sync = np.zeros(2, np.int64)
    written = np.zeros(nthreads, np.int64)
    run_blocks(_loop(cell_id)["_split_block"], nthreads, nthreads, sync, table0, W_ih, b_ih, W_hh, b_hh, W_dec,
               b_dec, hbuf, logits, token, uniforms, temperature, top_k, top_p, eos_id, stop_at_eos, out, start,
               controls, written)
    state[:] = hbuf[written[0] % 2]
    return int(written[0])


def advance(cell_id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, ids, logits_out):
    """Feed ids (n,) through the recurrence without sampling (conditioning on a prime), updating
    state in place; logits_out (V,) receives the logits after the last id (untouched if n = 0)."""
    _loop(cell_id)["_advance"](1, 0, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, ids, logits_out)


def split_weights(cell_id, table0, W_ih, b_ih, W_hh, b_hh, nthreads):
    """Per-thread copies of the gate rows of each thread's units (NumPy, once per model).
    Returns (table0 (n, V, Gu), W_ih (n, L-1, Gu, H), b_ih (n, L-1, Gu), W_hh (n, L, Gu, H),
    b_hh (n, L, Gu)) with Gu = G * H / n; the gate blocks keep their order (i, f, g, o ...)."""
    G, H = W_hh.shape[1], W_hh.shape[2]
    nu = H // nthreads

    def rows(k):
        return np.concatenate([np.arange(g * H + k * nu, g * H + (k + 1) * nu) for g in range(G // H)])

    idx = [rows(k) for k in range(nthreads)]
    return tuple(np.ascontiguousarray(np.stack([a[:, r] for r in idx])) for a in (table0, W_ih, b_ih, W_hh, b_hh))


def split_threads(cell_id, W_ih, W_hh) -> int:
    """Threads to generate on: the runtime's count when the cell's step splits by unit, the model is
    large enough and the hidden units divide evenly, else 1 (the barrier needs every thread running
    at once, so never with JIT disabled or fewer Numba threads)."""
    if cell_id not in SPLIT_CELLS or numba.config.DISABLE_JIT or W_hh.nbytes + W_ih.nbytes < SPLIT_MIN_BYTES:
        return 1
    from ..runtime import kernel_threads

    nt = min(kernel_threads(), threads_at_once())
    return nt if nt >= 2 and W_hh.shape[2] % nt == 0 else 1


class CompiledLoop:
    """The compiled loop bound to one model's arrays (cell_id, table0, W_ih, b_ih, W_hh, b_hh,
    W_dec, b_dec as above, treated as immutable). ``generate`` runs on ``split_threads`` threads
    and keeps the per-thread weight copies that needs here, with the model they were made from."""

    def __init__(self, cell_id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec):
        self.weights = (cell_id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec)
        self._split = {}   # thread count -> split_weights(...)

    def generate(self, state, token, uniforms, temperature, top_k, top_p, eos_id, stop_at_eos, out, start,
                 controls) -> int:
        """``generate`` (arguments from ``state`` on, result and state convention the same)."""
        cell_id, *arrays, W_dec, b_dec = self.weights
        nt = split_threads(cell_id, arrays[1], arrays[3])
        if nt < 2:
            return generate(*self.weights, state, token, uniforms, temperature, top_k, top_p, eos_id, stop_at_eos,
                            out, start, controls)
        if nt not in self._split:
            self._split[nt] = split_weights(cell_id, *arrays, nt)
        return generate_split(cell_id, *self._split[nt], W_dec, b_dec, state, token, uniforms, temperature, top_k,
                              top_p, eos_id, stop_at_eos, out, start, controls, nt)

    def advance(self, state, ids, logits_out) -> None:
        """``advance`` (arguments from ``state`` on)."""
        advance(*self.weights, state, ids, logits_out)
