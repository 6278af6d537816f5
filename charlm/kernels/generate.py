"""Batch-1 generation: the whole token loop in one @njit call, no Python per token.

Per token and layer l: xp = table0[token] (layer 0: embedding folded into W_ih_l0, a row gather)
or W_ih[l-1] @ h_{l-1} + b_ih[l-1]; then W_hh[l] @ h_l (GEMV, ``gemv`` below) and the same per-row
step function the batched forward uses (lstm_step / gru_step / rnn_step). Then logits =
W_dec @ h_top + b_dec and one sample. This loop is single-threaded; ``generate`` at the end runs
models whose weights outgrow one core's cache on two threads instead (generate_split.py).
Dimensions: L layers, S state arrays per layer, H hidden, G gates, V vocabulary.

Shared arguments (all float arrays one dtype, C-contiguous):
    cell_id  0 = lstm, 1 = gru, 2 = rnn, 3 = jordan (charlm.config.CELL_IDS)
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

from ..config import CELL_IDS
from .gru import gru_step
from .jordan import jordan_feed
from .lstm import lstm_step
from .rnn import rnn_step

LSTM, GRU, RNN, JORDAN_ID = (CELL_IDS[name] for name in ("lstm", "gru", "rnn", "jordan"))


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def gemv(W, x, y, accumulate):
    """y = W @ x (or y += W @ x when ``accumulate``); W (M, K) C-contiguous, x (K,), y (M,).

    Four rows at a time, so each x[k] loaded is used four times and the four sums vectorise
    (reassoc) over k. At batch 1 every weight byte is read once per token, so this is bound by
    cache bandwidth; measured here against OpenBLAS's sgemv called from @njit: equal on 1-4 MB
    matrices, 1.3-1.8x faster on small ones (no per-call dispatch)."""
    M, K = W.shape
    zero = y.dtype.type(0)
    r = 0
    while r + 4 <= M:
        s0 = zero
        s1 = zero
        s2 = zero
        s3 = zero
        for k in range(K):
            xk = x[k]
            s0 += W[r, k] * xk
            s1 += W[r + 1, k] * xk
            s2 += W[r + 2, k] * xk
            s3 += W[r + 3, k] * xk
        if accumulate:
            y[r] += s0
            y[r + 1] += s1
            y[r + 2] += s2
            y[r + 3] += s3
        else:
            y[r] = s0
            y[r + 1] = s1
            y[r + 2] = s2
            y[r + 3] = s3
        r += 4
    while r < M:
        s = zero
        for k in range(K):
            s += W[r, k] * x[k]
        y[r] = y[r] + s if accumulate else s
        r += 1


@njit(cache=True, error_model="numpy")
def _feed(cell_id, table0, W_ih, b_ih, W_hh, b_hh, state, token, xp, zx, hW, gates, h_new, c_new):
    """Run one token through all layers, updating state (L, S, H) in place. zx (G*H,) zeros; xp,
    hW, gates (G*H,) and h_new, c_new (H,) scratch.

    LSTM and RNN add the input and recurrent products into one vector (W_hh h + W_ih x) and pass
    b_ih where the step expects xp; the GRU keeps them apart (b_in + W_in x sits outside r * (...))."""
    for l in range(W_hh.shape[0]):
        s = state[l]
        gemv(W_hh[l], s[0], hW, False)  # (G*H,) recurrent product
        if l == 0:
            x, bx = table0[token], zx  # layer 0: the embedding folded into W_ih_l0 (+ b_ih_l0)
        elif cell_id == GRU:
            gemv(W_ih[l - 1], state[l - 1, 0], xp, False)
            x, bx = xp, b_ih[l - 1]
        else:
            gemv(W_ih[l - 1], state[l - 1, 0], hW, True)  # W_hh h + W_ih x in one vector
            x, bx = b_ih[l - 1], zx
        if cell_id == LSTM:
            lstm_step(x, hW, b_hh[l], s[1], h_new, c_new, gates)
            s[1, :] = c_new
        elif cell_id == GRU:
            gru_step(x, bx, hW, b_hh[l], s[0], h_new, gates, c_new)  # c_new is scratch for hn
        else:
            rnn_step(x, hW, b_hh[l], h_new)
        s[0, :] = h_new


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
    if m == np.inf:  # an overflowing logit would make every p NaN: the +inf ones share all the mass
        for v in range(V):
            p[v] = 1.0 if logits[v] == np.inf else 0.0
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
def generate_serial(cell_id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, token, uniforms,
                    temperature, top_k, top_p, eos_id, stop_at_eos, out):
    """The generation loop on one thread (``generate`` below picks this or generate_split).

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
    zx = np.zeros(G, dt)
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
            _feed(cell_id, table0, W_ih, b_ih, W_hh, b_hh, state, token, xp, zx, hW, gates, h_new, c_new)
        gemv(W_dec, state[top, 0], logits, False)  # (V,)
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
    zx = np.zeros(G, dt)
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
            _feed(cell_id, table0, W_ih, b_ih, W_hh, b_hh, state, token, xp, zx, hW, gates, h_new, c_new)
    if ids.shape[0] > 0:
        np.dot(W_dec, state[W_hh.shape[0] - 1, 0], logits_out)
        logits_out += b_dec


SPLIT_MIN_BYTES = 1 << 19   # recurrent weights from which two threads sample faster than one
_split = {"key": None, "weights": None}   # split_weights of the last arrays seen (see generate)


def generate(cell_id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, token, uniforms,
             temperature, top_k, top_p, eos_id, stop_at_eos, out):
    """Generate ids into ``out`` (arguments and result as generate_serial). Models whose recurrent
    weights pass SPLIT_MIN_BYTES run on the ``charlm.runtime`` threads (generate_split.py), with
    the per-thread weight copies made once for these exact arrays (kept by identity: the arrays
    are treated as immutable, as Sampler's are); the ids and state are identical either way."""
    nt = _split_threads(cell_id, W_ih, W_hh)
    if nt < 2:
        return generate_serial(cell_id, table0, W_ih, b_ih, W_hh, b_hh, W_dec, b_dec, state, token, uniforms,
                               temperature, top_k, top_p, eos_id, stop_at_eos, out)
    from .generate_split import generate_split, split_weights

    key = (table0, W_ih, b_ih, W_hh, b_hh, nt)
    if _split["key"] is None or any(a is not b for a, b in zip(_split["key"], key)):
        _split["key"], _split["weights"] = key, split_weights(cell_id, table0, W_ih, b_ih, W_hh, b_hh, nt)
    return generate_split(cell_id, *_split["weights"], W_dec, b_dec, state, token, uniforms, temperature, top_k,
                          top_p, eos_id, stop_at_eos, out, nt)


def _split_threads(cell_id, W_ih, W_hh) -> int:
    """Threads for generate_split: the runtime's count when the model is large enough and the
    hidden units divide evenly, else 1 (the barrier needs every thread running at once, so never
    with JIT disabled or fewer Numba threads)."""
    import numba

    if cell_id == JORDAN_ID or numba.config.DISABLE_JIT or W_hh.nbytes + W_ih.nbytes < SPLIT_MIN_BYTES:
        return 1
    from ..runtime import kernel_threads

    nt = min(kernel_threads(), numba.get_num_threads())
    return nt if nt >= 2 and W_hh.shape[2] % nt == 0 else 1
