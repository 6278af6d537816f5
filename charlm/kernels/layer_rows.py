"""The pieces of the layer kernels (layer.py) that know where a row of a block of steps lives.

A thread owns streams [r0, r1) of one direction. Lengths are non-increasing, so the streams
still running at step t are a prefix of its streams (``active_rows``), and a block of steps
[t0, t1) is stored compactly: step t's running rows one after another, steps in order. Step t of
row b reads and writes position t, or L_b - 1 - t in the reverse direction (``position``).
"""
from numba import njit

from .blas import gemm
from .parallel import chunk
from .tile import matmul_packed


@njit(cache=True)
def active_rows(lengths, r0, r1, t):
    """How many of the streams [r0, r1) run at step t (lengths non-increasing): a prefix."""
    lo, hi = r0, r1
    while lo < hi:
        mid = (lo + hi) // 2
        if lengths[mid] > t:
            lo = mid + 1
        else:
            hi = mid
    return lo - r0


@njit(cache=True)
def position(lengths, reverse, t, b):
    """The position step t of stream b reads and writes: t, or its mirror within the length."""
    return lengths[b] - 1 - t if reverse else t


@njit(cache=True)
def block_rows(lengths, r0, r1, t0, t1):
    """Rows of the compact block of steps [t0, t1)."""
    n = 0
    for t in range(t0, t1):
        n += active_rows(lengths, r0, r1, t)
    return n


def input_groups(D, width, I):
    """How many inputs x_in (T, B, width) holds side by side, M = width / I (1 without x_in), each
    read by D / M consecutive blocks (its directions, forward first): one input is shared by every
    direction; an ensemble's members each have their own. Raises when they do not divide."""
    if width == 0:
        return 1
    M = width // I if I > 0 else 0
    if M < 1 or M * I != width or D % M != 0:
        raise ValueError("layer kernels: the input's width is not a whole number of inputs, one per group of blocks")
    return M


@njit(cache=True)
def block_input(d, D, M, I):
    """(first column, reverse) of block d's input, of M inputs of width I (``input_groups``)."""
    per = D // M
    g = d // per
    return g * I, d - g * per == 1


@njit(cache=True)
def thread_block(kk, nchunks, hs, W_ih, M):
    """Where thread kk of a layer kernel works: (T, H, G, I, d, r0, r1, c0, reverse), the layer's
    steps and widths (hs (D, T+1, B, H), W_ih (D, G, I)), its direction d = kk // nchunks, that
    direction's block of streams [r0, r1) and its input columns (``block_input``)."""
    D, T1, B, H = hs.shape
    G, I = W_ih.shape[1], W_ih.shape[2]
    d = kk // nchunks
    r0, r1 = chunk(kk - d * nchunks, B, nchunks)
    c0, reverse = block_input(d, D, M, I)
    return T1 - 1, H, G, I, d, r0, r1, c0, reverse


@njit(cache=True)
def gather_block(src, c0, lengths, reverse, t0, t1, r0, r1, dst):
    """dst[i] = src[position, b, c0:c0 + I] for the block's rows in compact order; src (T, B, .),
    dst (rows, I). Returns how many rows it wrote."""
    j = 0
    I = dst.shape[1]
    for t in range(t0, t1):
        a = active_rows(lengths, r0, r1, t)
        for i in range(a):
            b = r0 + i
            copy_row(dst[j + i], src[position(lengths, reverse, t, b), b, c0:c0 + I])
        j += a
    return j


@njit(cache=True)
def scatter_block(src, dst, lengths, reverse, t0, t1, r0, r1):
    """dst[position, b] = src[i], the inverse of gather_block; dst (T, B, I)."""
    j = 0
    for t in range(t0, t1):
        a = active_rows(lengths, r0, r1, t)
        for i in range(a):
            b = r0 + i
            copy_row(dst[position(lengths, reverse, t, b), b], src[j + i])
        j += a


@njit(cache=True)
def gather_states(hs, lengths, t0, t1, r0, r1, dst):
    """dst[i] = hs[t, b] (h_{t-1} of step t, stored in step order) for the block's rows."""
    j = 0
    for t in range(t0, t1):
        a = active_rows(lengths, r0, r1, t)
        for i in range(a):
            copy_row(dst[j + i], hs[t, r0 + i])
        j += a


@njit(cache=True)
def copy_row(dst, src):
    """dst[:] = src for rows of one length. A loop because Numba compiles an array assignment with
    the formatting of its shape-mismatch message, which took seconds of a first run's compile time."""
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@njit(cache=True)
def cache_row(a, d, t, b, spare):
    """Row [d, t, b] of a cache array, or ``spare`` when the cell does not use it (empty)."""
    if a.size == 0:
        return spare
    return a[d, t, b]


@njit(cache=True, error_model="numpy")
def zero_parts(k, R, db, dtab, scatter, dW_hh, dW_ih, project):
    """Zero what thread k accumulates into (its first block overwrites the weight gradients)."""
    db[k, :] = 0
    if scatter:
        dtab[k, :, :] = 0
    if R == 0:  # a thread with no streams (more blocks than streams) still owns its parts
        dW_hh[k, :, :] = 0
        if project:
            dW_ih[k, :, :] = 0


@njit(cache=True, error_model="numpy")
def scatter_row(dst, src):
    for j in range(src.shape[0]):
        dst[j] += src[j]


@njit(cache=True, error_model="numpy")
def block_weight_grads(dA, dX, hs, x_in, c0, lengths, reverse, t0, t1, r0, r1, Hp, Xg, dW_hh, dW_ih, first):
    """One thread's block of steps [t0, t1) x streams [r0, r1) of one direction (hs its states),
    rows compact: dW_hh += dA^T @ h_{t-1} and, when x_in is not empty, dW_ih += dX^T @ x_in (its
    columns from c0); ``first`` overwrites instead. dA are the gradients of the recurrent
    pre-activations, dX of the input projections (equal unless the cell keeps them apart). Both
    GEMMs stay with BLAS: packing their operands per block costs more than the micro-kernel saves."""
    n = dA.shape[0]
    beta = 0.0 if first else 1.0
    gather_states(hs, lengths, t0, t1, r0, r1, Hp)
    gemm(dA, Hp[:n], dW_hh, True, False, beta)
    if x_in.size > 0:
        gather_block(x_in, c0, lengths, reverse, t0, t1, r0, r1, Xg)
        gemm(dX, Xg[:n], dW_ih, True, False, beta)


@njit(cache=True, error_model="numpy")
def block_input_grads(dX, P_ih, DX, tmp, dx, lengths, reverse, t0, t1, r0, r1):
    """dx[position, b] = (dX @ W_ih)[i] for the same block's rows (P_ih is W_ih packed by pack_panels;
    DX (rows, I) and tmp scratch): the gradient wrt the layer's input, by position."""
    matmul_packed(dX, P_ih, DX, tmp)
    scatter_block(DX, dx, lengths, reverse, t0, t1, r0, r1)
