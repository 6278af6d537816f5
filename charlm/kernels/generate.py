"""Batch-1 generation: the whole token loop in one @njit call, no Python per token.

Per token and layer l: xp = table0[token] (layer 0: embedding folded into W_ih_l0, a row gather)
or W_ih[l-1] @ h_{l-1} + b_ih[l-1]; then W_hh[l] @ h_l (GEMV) and the same per-row step function the
batched forward uses (lstm_step / gru_step / rnn_step). Then logits = W_dec @ h_top + b_dec and one
sample. Dimensions: L layers, S state arrays per layer, H hidden, G gates, V vocabulary.

Shared arguments (all float arrays one dtype, C-contiguous):
    cell_id  0 = lstm, 1 = gru, 2 = rnn, 3 = jordan (CELL_IDS in charlm.kernels)
    table0   (V, G*H)      encoder.weight @ W_ih_l0^T + b_ih_l0
    W_ih     (L-1, G*H, H) and b_ih (L-1, G*H): layers 1..L-1 (leading dim 0 when L = 1)
    W_hh     (L, G*H, H)   and b_hh (L, G*H)
    W_dec    (V, H)        and b_dec (V,)
    state    (L, S, H)     updated in place: (h,) or (h, c) per layer
Jordan (kernels/jordan.py): W_hh, b_hh are W_yh (L, H, V), b_yh (L, H); G = 1; each token first
recomputes the previous output p = softmax(W_dec h_top + b_dec) and feeds it to every layer.

State convention: after ``generate`` the state has consumed ``token`` and every generated id except
the last one returned; to continue, call again with token = out[n_written - 1]. Two calls chained
this way produce exactly what one longer call produces with the same uniforms.
"""
import numpy as np
from numba import njit

from .gru import gru_step
from .jordan import jordan_feed
from .lstm import lstm_step
from .rnn import rnn_step

LSTM, GRU, RNN, JORDAN_ID = 0, 1, 2, 3


@njit(cache=True, error_model="numpy")
def _layer_step(cell_id, xp, bx, W_hh, b_hh, s, hW, gates, h_new, c_new):
    """Advance one layer by one token. xp (G*H,); bx (G*H,) zeros (the GRU step's separate input
    bias, already in xp here); s (S, H) updated in place; the rest scratch."""
    np.dot(W_hh, s[0], hW)  # (G*H,) = (G*H, H) @ (H,)
    if cell_id == LSTM:
        lstm_step(xp, hW, b_hh, s[1], h_new, c_new, gates)
        s[1, :] = c_new
    elif cell_id == GRU:
        gru_step(xp, bx, hW, b_hh, s[0], h_new, gates, c_new)  # c_new is scratch for hn
    else:
        rnn_step(xp, hW, b_hh, h_new)
    s[0, :] = h_new


@njit(cache=True, error_model="numpy")
def _feed(cell_id, table0, W_ih, b_ih, W_hh, b_hh, state, token, xp, hW, gates, h_new, c_new):
    """Run one token through all layers, updating state in place."""
    bx = np.zeros(xp.shape[0], xp.dtype)
    _layer_step(cell_id, table0[token], bx, W_hh[0], b_hh[0], state[0], hW, gates, h_new, c_new)
    for l in range(1, W_hh.shape[0]):
        np.dot(W_ih[l - 1], state[l - 1, 0], xp)  # (G*H,) input from the layer below
        xp += b_ih[l - 1]
        _layer_step(cell_id, xp, bx, W_hh[l], b_hh[l], state[l], hW, gates, h_new, c_new)


@njit(cache=True, error_model="numpy")
def _sample(logits, u, temperature, top_k, top_p, p):
    """Draw one id from softmax(logits / temperature) by inverse CDF with the uniform u in [0, 1).
    temperature 0 = argmax; top_k > 0 keeps the k most probable; 0 < top_p < 1 keeps the smallest
    most-probable set whose mass is >= top_p of what top_k left. p (V,) float64 scratch."""
    V = logits.shape[0]
    if temperature <= 0.0:
        return np.argmax(logits)
    m = np.float64(np.max(logits))
    inv_t = 1.0 / temperature
    for v in range(V):
        p[v] = np.exp((np.float64(logits[v]) - m) * inv_t)  # unnormalised, max is 1
    if (0 < top_k < V) or top_p < 1.0:
        order = np.argsort(-p, kind="mergesort")  # most probable first, ties by lower id
        keep = top_k if 0 < top_k < V else V
        if top_p < 1.0:
            mass = 0.0
            for r in range(keep):
                mass += p[order[r]]
            acc = 0.0
            for r in range(keep):
                acc += p[order[r]]
                if acc >= top_p * mass:
                    keep = r + 1
                    break
        for r in range(keep, V):
            p[order[r]] = 0.0
    # Inverse CDF in id order over what is left (so top_k = V is exactly "off").
    total = 0.0
    for v in range(V):
        total += p[v]
    target = u * total
    acc = 0.0
    last = 0
    for v in range(V):
        if p[v] > 0.0:
            acc += p[v]
            last = v
            if acc > target:
                return v
    return last  # only reached through rounding when u is within an ulp of 1


@njit(cache=True, error_model="numpy")
def generate(cell_id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, token, uniforms,
             temperature, top_k, top_p, eos_id, stop_at_eos, out):
    """
    token:     the id fed first (e.g. <eos> to start, or the last id of the prime)
    uniforms:  (n,) float64 in [0, 1), one per generated id, drawn by the caller's Generator
    temperature, top_k, top_p: see _sample (top_p >= 1 and top_k <= 0 mean off)
    eos_id, stop_at_eos: stop after writing eos_id (it is written and counted)
    out:       (n,) int64 receives the generated ids
    returns    the number of ids written
    """
    V, G = table0.shape
    H = W_dec.shape[1]
    dt = table0.dtype
    if token < 0 or token >= V:
        raise IndexError("generate: token id out of range [0, V)")
    xp = np.empty(G, dt)
    hW = np.empty(G, dt)
    gates = np.empty(G, dt)
    h_new = np.empty(H, dt)
    c_new = np.empty(H, dt)
    logits = np.empty(V, dt)
    p = np.empty(V, np.float64)
    top = W_hh.shape[0] - 1
    n = min(uniforms.shape[0], out.shape[0])
    for k in range(n):
        if cell_id == JORDAN_ID:
            jordan_feed(table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, token, xp, hW, h_new, logits)
        else:
            _feed(cell_id, table0, W_ih, b_ih, W_hh, b_hh, state, token, xp, hW, gates, h_new, c_new)
        np.dot(W_dec, state[top, 0], logits)  # (V,)
        logits += b_dec
        token = _sample(logits, uniforms[k], temperature, top_k, top_p, p)
        out[k] = token
        if stop_at_eos and token == eos_id:
            return k + 1
    return n


@njit(cache=True, error_model="numpy")
def advance(cell_id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, ids, logits_out):
    """Feed ids (n,) through the recurrence without sampling (conditioning on a prime), updating
    state in place; logits_out (V,) receives the logits after the last id (untouched if n = 0)."""
    V, G = table0.shape
    H = W_dec.shape[1]
    dt = table0.dtype
    xp = np.empty(G, dt)
    hW = np.empty(G, dt)
    gates = np.empty(G, dt)
    h_new = np.empty(H, dt)
    c_new = np.empty(H, dt)
    scratch = np.empty(V, dt)
    for i in range(ids.shape[0]):
        token = ids[i]
        if token < 0 or token >= V:
            raise IndexError("advance: token id out of range [0, V)")
        if cell_id == JORDAN_ID:
            jordan_feed(table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, token, xp, hW, h_new, scratch)
        else:
            _feed(cell_id, table0, W_ih, b_ih, W_hh, b_hh, state, token, xp, hW, gates, h_new, c_new)
    if ids.shape[0] > 0:
        np.dot(W_dec, state[W_hh.shape[0] - 1, 0], logits_out)
        logits_out += b_dec
