"""GRU layer: PyTorch's ``nn.GRU`` layout and cuDNN form, gate order r, z, n.

Forward, one step (xp_t = x_t @ W_ih^T + b_ih is done by the caller for all T steps at once):

    a   = h_{t-1} @ W_hh^T + b_hh                     (B, 3H)  the only GEMM per step
    r   = sigmoid(xp_r + a_r)
    z   = sigmoid(xp_z + a_z)
    n   = tanh(xp_n + r * a_n)                        a_n = W_hn h_{t-1} + b_hn is cached as hn
    h_t = (1 - z) * n + z * h_{t-1}

Backward, one step (dh = dh_out_t + dh coming back from step t+1):

    dn_pre = dh * (1 - z) * (1 - n^2)
    dz_pre = dh * (h_{t-1} - n) * z(1 - z)
    dr_pre = dn_pre * a_n * r(1 - r)
    dxp    = [dr_pre, dz_pre, dn_pre]                 gradient wrt the input projection
    da     = [dr_pre, dz_pre, dn_pre * r]             gradient wrt the recurrent pre-activation
    dh_{t-1} = da @ W_hh + dh * z                     (B, H)  the only GEMM per step
    dW_hh = sum_t da_t^T @ h_{t-1}  (one GEMM after the loop),  db_hh = sum_t,b da  (folded in)

The n block is why dxp and da differ and both are kept: dW_hh and db_hh must use da.
Dimensions: T steps, B batch, H hidden.
"""
import numpy as np
from numba import njit, prange

from .activations import STEP_MATH, sigmoid_act, tanh_act
from .parallel import MR, block_weight_grads, matmul_packed, matmul_rec, pack_panels, scatter_row, zero_parts


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def gru_step(xp, bx, hW, bias, h_prev, h_next, gates, hn):
    """One row of one step. xp, bx (an input bias not yet in xp, b_ih or zeros), hW (= W_hh @ h_prev,
    no bias), bias (b_hh), gates: (3H,); h_prev, h_next, hn: (H,). Writes h_next, the
    post-activation gates r, z, n and hn = W_hn h + b_hn. Shared by gru_forward, gru_forward_par
    and generate, so the recurrence is written once. (b_ih and b_hh cannot be merged: b_hn sits
    inside r * (...).)"""
    H = h_prev.shape[0]
    for j in range(H):
        r = sigmoid_act(xp[j] + bx[j] + hW[j] + bias[j])
        z = sigmoid_act(xp[H + j] + bx[H + j] + hW[H + j] + bias[H + j])
        a_n = hW[2 * H + j] + bias[2 * H + j]
        n = tanh_act(xp[2 * H + j] + bx[2 * H + j] + r * a_n)
        h_next[j] = n + z * (h_prev[j] - n)  # = (1 - z) n + z h_prev with one multiply
        gates[j] = r
        gates[H + j] = z
        gates[2 * H + j] = n
        hn[j] = a_n


@njit(cache=True, error_model="numpy")
def gru_forward(xp, W_hh, b_hh, s0):
    """
    xp:   (T, B, 3H) input projections x_t @ W_ih^T + b_ih
    W_hh: (3H, H), b_hh: (3H,)
    s0:   (1, B, H) initial h0
    returns hs (T+1, B, H) with hs[0] = h0; sT (1, B, H) = h_T;
            gates (T, B, 3H) post-activation r, z, n; hn (T, B, H) = W_hn h_{t-1} + b_hn
    """
    T, B, G = xp.shape
    H = G // 3
    hs = np.empty((T + 1, B, H), xp.dtype)
    gates = np.empty((T, B, G), xp.dtype)
    hn = np.empty((T, B, H), xp.dtype)
    hs[0] = s0[0]
    W_hhT = np.ascontiguousarray(W_hh.T)  # (H, 3H) once per call: np.dot wants contiguous operands
    hW = np.empty((B, G), xp.dtype)
    no_bias = np.zeros(G, xp.dtype)  # xp already holds b_ih
    for t in range(T):
        np.dot(hs[t], W_hhT, hW)  # (B, 3H)
        for b in range(B):
            gru_step(xp[t, b], no_bias, hW[b], b_hh, hs[t, b], hs[t + 1, b], gates[t, b], hn[t, b])
    sT = np.empty((1, B, H), xp.dtype)
    sT[0] = hs[T]
    return hs, sT, gates, hn


@njit(cache=True, error_model="numpy", fastmath=STEP_MATH)
def gru_step_backward(dh_out, dh_gemm, dh_skip, gates, hn, h_prev, dxp, da, db, dbx):
    """One row of one backward step. The gradient wrt h_t is dh_out + dh_gemm + dh_skip, where
    dh_gemm = da_{t+1} @ W_hh and dh_skip = dh_{t+1} * z_{t+1} (the direct path); summing here
    saves a pass. dh_skip is overwritten with this step's direct path dh * z.
    gates, dxp, da, db, dbx: (3H,); the rest (H,). db accumulates da (b_hh's gradient) and dbx
    the n block of dxp (b_ih's gradient is db with its n block replaced by dbx's)."""
    H = h_prev.shape[0]
    one = h_prev.dtype.type(1)  # a bare 1 would promote float32 arithmetic to float64
    for j in range(H):
        r = gates[j]
        z = gates[H + j]
        n = gates[2 * H + j]
        dh = dh_out[j] + dh_gemm[j] + dh_skip[j]
        dn_pre = dh * (one - z) * (one - n * n)
        dz_pre = dh * (h_prev[j] - n) * (z - z * z)
        dr_pre = dn_pre * hn[j] * (r - r * r)
        dxp[j] = dr_pre
        dxp[H + j] = dz_pre
        dxp[2 * H + j] = dn_pre
        da[j] = dr_pre
        da[H + j] = dz_pre
        da[2 * H + j] = dn_pre * r
        db[j] += dr_pre
        db[H + j] += dz_pre
        db[2 * H + j] += dn_pre * r
        dbx[2 * H + j] += dn_pre
        dh_skip[j] = dh * z


@njit(cache=True, error_model="numpy")
def gru_backward(dh_out, dsT, W_hh, hs, gates, hn):
    """
    dh_out: (T, B, H) dL/dh_t for t = 1..T from above (layer above or decoder), not the recurrence
    dsT:    (1, B, H) dL/dh_T from whatever consumed the final state
    W_hh (3H, H); hs, gates, hn as returned by gru_forward
    returns dxp (T, B, 3H), dW_hh (3H, H), db_hh (3H,), ds0 (1, B, H)
    """
    T, B, H = dh_out.shape
    G = 3 * H
    dt = dh_out.dtype
    dxp = np.empty((T, B, G), dt)
    da = np.empty((T, B, G), dt)  # recurrent pre-activation gradients, for dW_hh
    db_hh = np.zeros(G, dt)
    dh_gemm = np.zeros((B, H), dt)
    dh_skip = dsT[0].copy()  # (B, H) the final-state gradient enters like a direct path
    dbx = np.zeros(G, dt)  # unused here (the caller sums dxp)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            gru_step_backward(dh_out[t, b], dh_gemm[b], dh_skip[b], gates[t, b], hn[t, b],
                              hs[t, b], dxp[t, b], da[t, b], db_hh, dbx)
        np.dot(da[t], W_hh, dh_gemm)  # (B, H) = (B, 3H) @ (3H, H)
    dW_hh = np.empty((G, H), dt)
    np.dot(da.reshape(T * B, G).T, hs[:T].reshape(T * B, H), dW_hh)  # (3H, T*B) @ (T*B, H)
    ds0 = np.empty((1, B, H), dt)
    ds0[0] = dh_gemm + dh_skip
    return dxp, dW_hh, db_hh, ds0


# -- the batch-parallel pair: same arithmetic, streams split across threads (kernels/parallel.py) ----


@njit(cache=True, parallel=True, error_model="numpy")
def gru_forward_par(x_in, table, ids, W_ih, b_ih, W_hh, b_hh, s0, hs, gates, hn, nchunks, tb):
    """gru_forward for a whole layer with the streams split across threads and the input projection
    done per block of ``tb`` steps, exactly as lstm_forward_par (see it for x_in / table / ids).
    b_ih, b_hh (3H,) (kept apart: b_hn sits inside r * (...)); s0 (1, B, H).
    Writes hs (T+1, B, H), gates (T, B, 3H), hn (T, B, H) as gru_forward returns them."""
    T = hs.shape[0] - 1
    B = hs.shape[1]
    G = W_hh.shape[0]
    P = pack_panels(W_hh, True)  # W_hh^T in register-tile panels, once per chunk
    project = x_in.shape[0] > 0
    I = x_in.shape[2]
    P_ih = pack_panels(W_ih if project else W_ih[:0], True)  # W_ih^T panels (empty for the table)
    for k in prange(nchunks):
        r0 = k * B // nchunks
        r1 = (k + 1) * B // nchunks
        R = r1 - r0
        hW = np.empty((R, G), hs.dtype)
        tmp = np.empty((MR, P.shape[2]), hs.dtype)
        X = np.empty((tb * R if project else 0, I), hs.dtype)
        XP = np.empty((tb * R if project else 0, G), hs.dtype)
        for b in range(r0, r1):
            hs[0, b] = s0[0, b]
        for t0 in range(0, T if R > 0 else 0, tb):
            t1 = min(T, t0 + tb)
            if project:
                for t in range(t0, t1):
                    X[(t - t0) * R:(t - t0 + 1) * R] = x_in[t, r0:r1]
                matmul_packed(X[:(t1 - t0) * R], P_ih, XP[:(t1 - t0) * R], tmp)
            for t in range(t0, t1):
                matmul_rec(hs[t, r0:r1], P, W_hh, True, hW, tmp)  # (rows, 3H)
                for b in range(r0, r1):
                    xrow = XP[(t - t0) * R + b - r0] if project else table[ids[t, b]]
                    gru_step(xrow, b_ih, hW[b - r0], b_hh, hs[t, b], hs[t + 1, b], gates[t, b], hn[t, b])


@njit(cache=True, parallel=True, error_model="numpy")
def gru_backward_par(dh_out, dsT, W_hh, hs, gates, hn, x_in, W_ih, ids, dW_hh, dW_ih, db, dbx, dtab, dx, ds0,
                     nchunks, tb):
    """gru_backward for a whole layer, streams split across threads, weight gradients per block of
    ``tb`` steps, as lstm_backward_par (see it for the arguments). db[k] is thread k's part of
    b_hh's gradient (the sums of da) and dbx[k] of the n block of b_ih's (rows r, z equal db's)."""
    T, B, H = dh_out.shape
    G = 3 * H
    project = x_in.shape[0] > 0
    I = x_in.shape[2]
    scatter = ids.shape[0] > 0
    P = pack_panels(W_hh, False)  # W_hh in register-tile panels, once per chunk
    P_ih = pack_panels(W_ih if dx.shape[0] > 0 else W_ih[:0], False)  # for dx = dX @ W_ih
    for k in prange(nchunks):
        r0 = k * B // nchunks
        r1 = (k + 1) * B // nchunks
        R = r1 - r0
        zero_parts(k, R, db, dtab, scatter, dW_hh, dW_ih, project)
        dbx[k, :] = 0
        tmp = np.empty((MR, P.shape[2]), dh_out.dtype)
        dX = np.empty((tb * R, G), dh_out.dtype)  # gradients of the input projections (dxp)
        dA = np.empty((tb * R, G), dh_out.dtype)  # and of the recurrent pre-activations (da)
        Hp = np.empty((tb * R, H), dh_out.dtype)
        Xg = np.empty((tb * R if project else 0, I), dh_out.dtype)
        DX = np.empty((tb * R if dx.shape[0] > 0 else 0, I), dh_out.dtype)
        dh_gemm = np.zeros((R, H), dh_out.dtype)
        dh_skip = np.empty((R, H), dh_out.dtype)
        for b in range(r0, r1):
            dh_skip[b - r0] = dsT[0, b]
        for t1 in range(T if R > 0 else 0, 0, -tb):
            t0 = max(0, t1 - tb)
            n = (t1 - t0) * R
            for t in range(t1 - 1, t0 - 1, -1):
                j = (t - t0) * R
                for b in range(r0, r1):
                    gru_step_backward(dh_out[t, b], dh_gemm[b - r0], dh_skip[b - r0], gates[t, b], hn[t, b],
                                      hs[t, b], dX[j + b - r0], dA[j + b - r0], db[k], dbx[k])
                    if scatter:
                        scatter_row(dtab[k, ids[t, b]], dX[j + b - r0])
                matmul_rec(dA[j:j + R], P, W_hh, False, dh_gemm, tmp)  # (rows, H) = (rows, 3H) @ (3H, H)
            block_weight_grads(dA[:n], dX[:n], hs, x_in, W_ih, t0, t1, r0, r1, Hp, Xg, DX, dW_hh[k], dW_ih[k],
                               P_ih, tmp, dx, t1 == T)
        for b in range(r0, r1):
            for j in range(H):
                ds0[0, b, j] = dh_gemm[b - r0, j] + dh_skip[b - r0, j]
