"""Jordan network (Jordan 1986) as a language model: the recurrence runs through the OUTPUT.

An Elman RNN feeds the previous hidden state back (h_t = tanh(W x_t + U h_{t-1})); a Jordan
network feeds back the previous *output* instead. For a language model the output is the
next-token distribution, so that is what comes back. All L layers see it; no layer sees its own
past hidden state (one-layer form: h_t = tanh(W_ih x_t + W_yh p_{t-1} + b)):

    p_{t-1} = softmax(W_dec h^L_{t-1} + b_dec)                                 (B, V)
    h^1_t   = tanh(xp_t + p_{t-1} @ W_yh^1ᵀ + b_yh^1),  xp_t = x_t @ W_ih^1ᵀ + b_ih^1 (caller)
    h^l_t   = tanh(h^{l-1}_t @ W_ih^lᵀ + b_ih^l + p_{t-1} @ W_yh^lᵀ + b_yh^l)      l = 2..L
    z_t     = W_dec h^L_t + b_dec       (the logits: the loss reads them, p_t = softmax(z_t))

Why the softmax output and not a separate per-layer projection y = W_hy h fed back through W_yh:
that would be an Elman network with a factored (low-rank) recurrent matrix, identical in what it
can compute; the point of Jordan's design is that the only memory is what the output carries.
W_yh p is a probability-weighted sum of columns of W_yh, i.e. an embedding of the predicted next
token, so the network remembers its own guess, and anything else it must remember has to be
smuggled through the shape of that distribution (charlm.inspect.memory shows what that costs).

So the step's cost includes the decoder (B, H) @ (H, V) and (B, V) @ (V, L·H), and the whole stack
plus the decoder is one recurrence: the per-layer kernels cannot run it, and the cell's row says
so (``feeds_output``). These kernels do all layers and the decoder step by step; ``stack_forward``
/ ``stack_backward`` at the end are the row's entry for the model. Parameters (no PyTorch twin
exists, so the names are ours, shaped like ``nn.RNN``'s): ``rnn.weight_ih_l{k}`` (H, I),
``rnn.weight_yh_l{k}`` (H, V), ``rnn.bias_ih_l{k}`` (H,), ``rnn.bias_yh_l{k}`` (H,), plus the usual
encoder/decoder. The carried state (L, 1, B, H) holds each layer's last hidden state; only the top
one matters (p_0 of the next chunk is recomputed from it, so chunked evaluation equals one long
run). Dropout masks, if any, multiply each layer's output where the next layer (or the decoder)
reads it.

Backward, one step (dp = dL/dp_t from step t+1, i.e. sum_l da^l_{t+1} @ W_yh^l):

    dz_t   = dlogits_t + p_t ⊙ (dp − <p_t, dp>)           softmax backward, (B, V)
    dh^L_t = dz_t @ W_dec                                  (B, H)
    da^l_t = dh^l_t ⊙ (1 − (h^l_t)^2);  dh^{l-1}_t = da^l_t @ W_ih^l
    dp_{t-1} = da_t (B, L·H) @ W_yh (L·H, V)               one GEMM for all layers
    weights (one GEMM each, jordan_weight_grads): dW_yh = daᵀ @ p_{t-1}, dW_ih^l = da^lᵀ @ h^{l-1},
    dW_dec = dzᵀ @ h^L (including the p_0 computed from the initial state)

Dimensions: T steps, B batch, H hidden, V vocabulary, L layers.
"""
import numpy as np
from numba import njit

from .cells import CELLS
from .rnn import elman


@njit(cache=True, error_model="numpy")
def softmax_row(z, p):
    """p = softmax(z), both (V,); max-subtracted, exact exp (V is small next to the GEMMs)."""
    m = z[0]
    for v in range(1, z.shape[0]):
        m = max(m, z[v])
    s = z.dtype.type(0)
    for v in range(z.shape[0]):
        e = np.exp(z[v] - m)
        p[v] = e
        s += e
    inv = z.dtype.type(1) / s
    for v in range(z.shape[0]):
        p[v] *= inv


@njit(cache=True, error_model="numpy")
def jordan_forward(xp0, W_ih, b_ih, W_yh, b_yh, W_dec, b_dec, s0, masks):
    """
    xp0:   (T, B, H) layer 1's input projections x_t @ W_ih^1ᵀ + b_ih^1
    W_ih:  (L-1, H, H), b_ih (L-1, H): input weights of layers 2..L (leading dim 0 when L = 1)
    W_yh:  (L, H, V), b_yh (L, H): output-to-hidden weights of every layer
    W_dec: (V, H), b_dec (V,)
    s0:    (L, B, H) initial hidden states (only s0[L-1] matters: it gives p_0)
    masks: (L, T, B, H) dropout multipliers on each layer's output, or shape (0, 0, 0, 0) for none
    returns hs (L, T+1, B, H) with hs[:, 0] = s0; logits (T, B, V);
            probs (T+1, B, V): probs[0] = softmax(W_dec s0[L-1] + b_dec), probs[t+1] = softmax(logits[t])
    """
    T, B, H = xp0.shape
    L, _, V = W_yh.shape
    dt = xp0.dtype
    drop = masks.shape[0] > 0
    hs = np.empty((L, T + 1, B, H), dt)
    logits = np.empty((T, B, V), dt)
    probs = np.empty((T + 1, B, V), dt)
    for l in range(L):
        hs[l, 0] = s0[l]
    W_yhT = np.ascontiguousarray(W_yh.reshape(L * H, V).T)  # (V, L*H)
    W_decT = np.ascontiguousarray(W_dec.T)                  # (H, V)
    W_ihT = np.empty((max(L - 1, 0), H, H), dt)
    for l in range(L - 1):
        W_ihT[l] = W_ih[l].T
    z = np.empty((B, V), dt)
    np.dot(np.ascontiguousarray(s0[L - 1]), W_decT, z)     # p_0 from the carried state (no dropout)
    for b in range(B):
        z[b] += b_dec
        softmax_row(z[b], probs[0, b])
    yW = np.empty((B, L * H), dt)
    inp = np.empty((B, H), dt)
    xl = np.empty((B, H), dt)
    for t in range(T):
        np.dot(probs[t], W_yhT, yW)                         # (B, L*H): p_{t-1} into every layer
        for b in range(B):
            elman(xp0[t, b], yW[b, 0:H], b_yh[0], hs[0, t + 1, b])
        for l in range(1, L):
            inp[:] = hs[l - 1, t + 1]
            if drop:
                inp *= masks[l - 1, t]
            np.dot(inp, W_ihT[l - 1], xl)                   # (B, H)
            for b in range(B):
                xl[b] += b_ih[l - 1]
                elman(xl[b], yW[b, l * H:(l + 1) * H], b_yh[l], hs[l, t + 1, b])
        inp[:] = hs[L - 1, t + 1]
        if drop:
            inp *= masks[L - 1, t]
        np.dot(inp, W_decT, logits[t])                      # (B, V)
        for b in range(B):
            logits[t, b] += b_dec
            softmax_row(logits[t, b], probs[t + 1, b])
    return hs, logits, probs


@njit(cache=True, error_model="numpy")
def jordan_backward(dlogits, dsT, W_ih, W_yh, W_dec, hs, probs, masks):
    """
    dlogits: (T, B, V) dL/dlogits from the loss (not through the recurrence)
    dsT:     (L, B, H) dL/dh_T of each layer from whatever consumed the final state
    W_ih, W_yh, W_dec, masks as for jordan_forward; hs, probs as it returned them
    returns da (T, B, L, H): pre-activation gradients of every layer (da[:, :, 0] = dxp0);
            dz (T+1, B, V): total dL/dz, loss plus recurrence (dz[0] for p_0 from s0[L-1]);
            ds0 (L, B, H)
    """
    T, B, V = dlogits.shape
    L, H = hs.shape[0], hs.shape[3]
    dt = dlogits.dtype
    drop = masks.shape[0] > 0
    one = dt.type(1)
    W_yh2 = np.ascontiguousarray(W_yh.reshape(L * H, V))   # (L*H, V)
    da = np.empty((T, B, L, H), dt)
    dz = np.empty((T + 1, B, V), dt)
    dp = np.zeros((B, V), dt)        # dL/dp_t from the layers of step t+1
    dh = np.empty((B, H), dt)
    dal = np.empty((B, H), dt)
    for t in range(T - 1, -1, -1):
        for b in range(B):           # softmax backward, plus the loss's own gradient
            s = dt.type(0)
            for v in range(V):
                s += probs[t + 1, b, v] * dp[b, v]
            for v in range(V):
                dz[t + 1, b, v] = dlogits[t, b, v] + probs[t + 1, b, v] * (dp[b, v] - s)
        np.dot(dz[t + 1], W_dec, dh)                        # (B, H)
        if drop:
            dh *= masks[L - 1, t]
        for l in range(L - 1, -1, -1):
            if t == T - 1:
                dh += dsT[l]
            for b in range(B):
                for j in range(H):
                    h = hs[l, t + 1, b, j]
                    d = dh[b, j] * (one - h * h)
                    dal[b, j] = d
                    da[t, b, l, j] = d
            if l > 0:
                np.dot(dal, W_ih[l - 1], dh)                # (B, H) into the layer below
                if drop:
                    dh *= masks[l - 1, t]
        np.dot(da[t].reshape(B, L * H), W_yh2, dp)          # (B, V) dL/dp_{t-1}
    for b in range(B):               # p_0 = softmax(W_dec s0[L-1] + b_dec)
        s = dt.type(0)
        for v in range(V):
            s += probs[0, b, v] * dp[b, v]
        for v in range(V):
            dz[0, b, v] = probs[0, b, v] * (dp[b, v] - s)
    ds0 = np.zeros((L, B, H), dt)
    np.dot(dz[0], W_dec, ds0[L - 1])
    if T == 0:
        ds0 += dsT
    return da, dz, ds0


def jordan_weight_grads(da, dz, hs, probs, masks):
    """The weight gradients, one GEMM each, from jordan_backward's da and dz. Plain NumPy: it is
    nothing but GEMMs and sums, which NumPy's BLAS does as fast, and it saves compiling.
    returns dW_ih (L-1, H, H), db_ih (L-1, H) for layers 2..L (layer 1's input projection is the
    caller's: its gradient is da[:, :, 0]); dW_yh (L, H, V), db_yh (L, H); dW_dec (V, H), db_dec (V,)"""
    T, B, L, H = da.shape
    V = dz.shape[2]
    N = T * B
    drop = masks.shape[0] > 0
    da2 = da.reshape(N, L * H)
    dW_yh = (da2.T @ probs[:T].reshape(N, V)).reshape(L, H, V)           # (L*H, N) @ (N, V)
    db_yh = da2.sum(axis=0).reshape(L, H)
    dW_ih = np.empty((max(L - 1, 0), H, H), da.dtype)
    for l in range(1, L):
        inp = hs[l - 1, 1:] * masks[l - 1] if drop else hs[l - 1, 1:]
        np.dot(da[:, :, l, :].reshape(N, H).T, inp.reshape(N, H), out=dW_ih[l - 1])
    db_ih = db_yh[1:].copy()
    top = hs[L - 1].copy()                                   # what the decoder read, (T+1, B, H)
    if drop:
        top[1:] *= masks[L - 1]
    dW_dec = dz.reshape((T + 1) * B, V).T @ top.reshape((T + 1) * B, H)
    db_dec = dz.reshape(-1, V).sum(axis=0)
    return dW_ih, db_ih, dW_yh, db_yh, dW_dec, db_dec


@njit(cache=True, error_model="numpy")
def jordan_feed(table0, W_ih, b_ih, W_yh, b_yh, W_dec, b_dec, state, token, xp, hW, h_new, p):
    """Batch-1 step for generate/advance: feed ``token``, updating state (L, 1, H) in place.
    table0 (V, H); W_yh (L, H, V); xp, hW, h_new (H,) and p (V,) are scratch."""
    L = W_yh.shape[0]
    np.dot(W_dec, state[L - 1, 0], p)                       # p_{t-1} from the carried top state
    p += b_dec
    softmax_row(p, p)  # in place is safe: each element is read before it is written
    np.dot(W_yh[0], p, hW)
    elman(table0[token], hW, b_yh[0], h_new)
    state[0, 0, :] = h_new
    for l in range(1, L):
        np.dot(W_ih[l - 1], state[l - 1, 0], xp)
        xp += b_ih[l - 1]
        np.dot(W_yh[l], p, hW)
        elman(xp, hW, b_yh[l], h_new)
        state[l, 0, :] = h_new


# -- the row's entry for the model: the whole stack over the parameter dict -------------------------


def stacked_weights(params, L: int, dtype):
    """(W_ih (L-1, H, H), b_ih (L-1, H), W_yh (L, H, V), b_yh (L, H)) as contiguous copies."""
    H, V = params["rnn.weight_yh_l0"].shape

    def stack(names, shape):
        return np.ascontiguousarray(np.stack([params[n] for n in names])) if names else np.zeros(shape, dtype)

    return (stack([f"rnn.weight_ih_l{k}" for k in range(1, L)], (0, H, H)),
            stack([f"rnn.bias_ih_l{k}" for k in range(1, L)], (0, H)),
            stack([f"rnn.weight_yh_l{k}" for k in range(L)], (0, H, V)),
            stack([f"rnn.bias_yh_l{k}" for k in range(L)], (0, H)))


def stack_forward(params, xp0, s0, masks):
    """The whole recurrence and decoder over a chunk. xp0 (T, B, H) layer 1's input projections
    (b_ih^1 included); s0 (L, B, H); masks as for jordan_forward.
    Returns logits (T*B, V), hs (L, T+1, B, H) and the cache for stack_backward."""
    L = s0.shape[0]
    dt = xp0.dtype
    W_ih, b_ih, W_yh, b_yh = stacked_weights(params, L, dt)
    W_dec = np.ascontiguousarray(params["decoder.weight"])
    hs, logits, probs = CELLS["jordan"].forward(np.ascontiguousarray(xp0), W_ih, b_ih, W_yh, b_yh, W_dec,
                                                np.ascontiguousarray(params["decoder.bias"]), s0, masks)
    T, B, V = logits.shape
    return logits.reshape(T * B, V), hs, (hs, probs, masks, W_ih, W_yh, W_dec)


def stack_backward(grads, dlogits, cache):
    """From dL/dlogits (T*B, V): writes the gradients of every layer's output-to-hidden weights and
    bias, of layers 2..L's input weights and biases and of decoder.bias, and adds decoder.weight's
    (into encoder.weight's when tied). Returns dxp0 (T*B, H), the gradient of layer 1's input
    projection, from which the caller makes those of encoder.weight, W_ih^1 and b_ih^1."""
    hs, probs, masks, W_ih, W_yh, W_dec = cache
    L, T1, B, H = hs.shape
    T = T1 - 1
    dsT = np.zeros((L, B, H), hs.dtype)
    da, dz, _ = CELLS["jordan"].backward(np.ascontiguousarray(dlogits).reshape(T, B, -1), dsT, W_ih, W_yh, W_dec,
                                         hs, probs, masks)
    dW_ih, db_ih, dW_yh, db_yh, dW_dec, db_dec = jordan_weight_grads(da, dz, hs, probs, masks)
    for l in range(L):
        grads[f"rnn.weight_yh_l{l}"][...] = dW_yh[l]
        grads[f"rnn.bias_yh_l{l}"][...] = db_yh[l]
        if l > 0:
            grads[f"rnn.weight_ih_l{l}"][...] = dW_ih[l - 1]
            grads[f"rnn.bias_ih_l{l}"][...] = db_ih[l - 1]
    grads["decoder.weight"][...] += dW_dec
    grads["decoder.bias"][...] = db_dec
    return np.ascontiguousarray(da[:, :, 0]).reshape(T * B, H)


def stack_state_grads(dlogits, cache):
    """(L, T, B, H) total dL/dh^l_t: the top layer's through the loss and the fed-back output (dz @
    W_dec), the others' through the layer above (its da @ W_ih)."""
    hs, probs, masks, W_ih, W_yh, W_dec = cache
    L, T1, B, H = hs.shape
    T = T1 - 1
    dsT = np.zeros((L, B, H), hs.dtype)
    da, dz, _ = CELLS["jordan"].backward(np.ascontiguousarray(dlogits.reshape(T, B, -1)), dsT, W_ih, W_yh, W_dec,
                                         hs, probs, masks)
    out = np.empty((L, T, B, H))
    out[L - 1] = dz[1:] @ W_dec
    for l in range(L - 1):
        out[l] = da[:, :, l + 1] @ W_ih[l]
    return out
