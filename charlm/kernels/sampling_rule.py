"""The sampling rule, written once: the controls (banned ids, minimum length, repetition penalty,
no repeated n-gram: ``constrain``), then temperature, top-k, top-p and an inverse-CDF draw.

Both generation loops use these very functions: the compiled loop (kernels/generate.py) compiles
them with ``njit``, and the NumPy loop that serves the first tokens of a sample (generate_numpy.py)
calls them as they are. So they are written in whole-array NumPy operations that Numba compiles,
and this module imports nothing but NumPy (a short ``charlm sample`` never loads Numba).

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


def no_controls(V):
    """The controls that change nothing: no banned id, no minimum length, no penalty, no n-gram rule."""
    return (np.zeros(V, np.bool_), 0, 1.0, 0)


def constrain(logits, q, history, n, eos_id, controls):
    """q (V,) float64 <- the logits the draw may use after ``history[:n]`` (this sample's ids so far).

    controls = (banned (V,) bool, min_length, repetition_penalty, no_repeat_ngram):
    - a banned id (a token the model must not produce: <unk>, and <eos> for a model trained
      without it) gets -inf, so no temperature, top-k or top-p setting can draw it;
    - while fewer than min_length ids have been generated, eos_id gets -inf;
    - repetition_penalty R != 1: the logit of every id already generated is divided by R when
      positive and multiplied by R when not (CTRL's rule: R > 1 makes repeats less likely);
    - no_repeat_ngram N > 0: an id that would complete an N-gram already in the history gets -inf.
    Then ``sample_id(q, ...)`` draws. Whole-array operations only, so Numba compiles it as is.
    """
    banned, min_length, penalty, no_repeat = controls
    q[:] = logits
    q[banned] = -np.inf
    if n < min_length:
        q[eos_id] = -np.inf
    if penalty != 1.0 and n > 0:
        seen = history[:n]
        vals = q[seen]
        q[seen] = np.where(vals > 0, vals / penalty, vals * penalty)
    k = no_repeat - 1   # the N-gram's prefix length
    if no_repeat > 0 and n >= k:
        starts = n - k  # earlier prefixes start at 0 .. starts - 1, each followed by the id to ban
        match = np.ones(starts, np.bool_)
        for j in range(k):
            match &= history[j:j + starts] == history[starts + j]
        q[history[k:n][match]] = -np.inf


def constrains(controls):
    """Whether ``constrain`` can change a logit under ``controls``. When it cannot, the loops draw
    from the logits as they are: ``constrain`` would only copy them to float64, which ``sample_id``
    does anyway, so the draw is the same."""
    banned, min_length, penalty, no_repeat = controls
    return bool(banned.any()) or min_length > 0 or penalty != 1.0 or no_repeat > 0
