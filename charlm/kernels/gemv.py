"""The matrix-vector product of batch-1 generation (kernels/generate.py), four rows at a time."""
from numba import njit


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def gemv(W, x, y, accumulate):
    """y = W @ x (or y += W @ x when ``accumulate``); W (M, K) C-contiguous, x (K,), y (M,).

    Four rows at a time, so each x[k] loaded is used four times and the four sums vectorise
    (reassoc) over k. At batch 1 every weight byte is read once per token, so this is bound by
    cache bandwidth: as fast as OpenBLAS's sgemv called from @njit on large matrices, faster on
    small ones (no per-call dispatch)."""
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
