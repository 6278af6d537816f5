"""The sampling rule, written once: temperature, top-k, top-p and an inverse-CDF draw.

Both generation loops use this very function: the compiled loop (kernels/generate.py) compiles it
with ``njit``, and the NumPy loop that serves the first tokens of a sample (generate_numpy.py)
calls it as it is. So it is written in whole-array NumPy operations that Numba compiles, and this
module imports nothing but NumPy (a short ``charlm sample`` never loads Numba).

Every step is exact and in a fixed order (float64 throughout, running sums in id order), so the
compiled and uncompiled calls draw the same id from the same logits and uniform.
"""
import numpy as np


def sample_id(logits, u, temperature, top_k, top_p, p):
    """One id from softmax(logits / temperature), by inverse CDF with the uniform u in [0, 1).

    logits (V,) float32 or float64; p (V,) float64 scratch. temperature 0 is argmax (the first
    of equal maxima); top_k > 0 keeps the k most probable ids; 0 < top_p < 1 then keeps the
    smallest most-probable set whose mass is >= top_p of what top_k left (ties by lower id);
    top_k <= 0 and top_p >= 1 mean off. What is left is drawn from in id order, so top_k = V is
    exactly "off". Logits holding NaN (or all -inf) give no distribution: id 0 (<eos>) ends the
    sample; +inf logits share all the mass.
    """
    V = logits.shape[0]
    if temperature <= 0.0:
        return np.argmax(logits)
    m = np.float64(np.max(logits))  # NaN if any logit is NaN
    if not m > -np.inf:
        return 0
    if m == np.inf:  # exp(logit - m) would be NaN for every id: the +inf ones share the mass
        p[:] = np.where(logits == np.inf, 1.0, 0.0)
    else:
        p[:] = logits  # to float64, then exp((logit - m) / temperature): unnormalised, max is 1
        p -= m
        p *= 1.0 / temperature
        np.exp(p, p)
    if 0 < top_k < V or top_p < 1.0:
        order = np.argsort(-p, kind="mergesort")  # most probable first, ties by lower id
        keep = top_k if 0 < top_k < V else V
        if top_p < 1.0:
            mass = np.cumsum(p[order[:keep]])
            keep = np.argmax(mass >= top_p * mass[-1]) + 1
        p[order[keep:]] = 0.0
    cdf = np.cumsum(p)
    v = np.searchsorted(cdf, u * cdf[-1], side="right")  # the first id whose running sum passes u
    if v < V:
        return v
    return np.flatnonzero(p)[-1]  # u * total rounded up to total: the last id left
