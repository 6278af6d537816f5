"""tanh and sigmoid for the kernels, chosen by dtype at compile time.

float32: PyPI's llvmlite has no SVML, so ``np.tanh``/``np.exp`` inside a Numba loop are scalar libm
calls that block vectorisation; in the prototype that halved training speed. So float32 uses the
odd 13/6 rational minimax tanh that Eigen, XLA and ONNX Runtime use,
https://gitlab.com/libeigen/eigen/-/blob/master/Eigen/src/Core/MathFunctionsImpl.h
(``generic_fast_tanh_float``), clamped at +-7.905 where float32 tanh rounds to +-1. It is only
multiply-adds, min/max and one division, so LLVM vectorises the loops that call it.

Measured against float64 ``np.tanh`` on a dense float32 grid over [-20, 20] (tests/test_kernels.py):
    max |tanh_act(x) - tanh(x)|    = 3.9e-7   (TANH_F32_MAX_ERR = 5e-7 is the bound we test)
    max |sigmoid_act(x) - sigm(x)| = 2.3e-7   (SIGMOID_F32_MAX_ERR = 3e-7)
i.e. about 3 float32 ulps of 1.0. sigmoid(x) = 0.5 * (1 + tanh(x / 2)) reuses the same code.

float64: the exact functions, so that float64 finite-difference gradient checks test the calculus
and not the approximation. The backward passes never differentiate these functions: they use the
stored outputs, tanh' = 1 - t^2 and sigmoid' = s * (1 - s), which is exact for float64 and within the
approximation error for float32.

``tanh_act``/``sigmoid_act`` are plain Python functions (so ``NUMBA_DISABLE_JIT=1`` still works) with
a ``numba.extending.overload`` that picks the implementation from the argument's Numba type.

Every kernel that calls them is compiled with ``error_model="numpy"``: Numba's default ("python")
guards each float division with a ZeroDivisionError branch, which stops LLVM vectorising the loop
(with the numpy model the loop uses ``vdivps`` and runs several times faster).
"""
import numpy as np
from numba import types
from numba.extending import overload

# Eigen's coefficients (float32 literals there); odd numerator p(x) = x * P(x^2), even denominator Q(x^2).
_CLAMP = 7.90531110763549805
_ALPHA = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
          -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)  # x^1 .. x^13
_BETA = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)

# Fast-math flags of the per-row step functions that call these (lstm_step, gru_step, ...):
# "contract" only, which lets LLVM fuse a multiply and an add into one FMA (one rounding instead of
# two, so each fused step is at least as accurate). Numba does not fuse by default;
# the rational tanh is a chain of multiply-adds, so fusing them shortens it by about a third
# (docs/performance.md, "How"). No reassociation: sums keep their order, so results stay
# reproducible.
STEP_MATH = {"contract"}

TANH_F32_MAX_ERR = 5e-7
SIGMOID_F32_MAX_ERR = 3e-7


def _tanh_f32_numpy(x):
    """The float32 approximation in NumPy (used when JIT is disabled, and as the test's twin)."""
    x = np.clip(np.asarray(x, dtype=np.float32), np.float32(-_CLAMP), np.float32(_CLAMP))
    a = [np.float32(c) for c in _ALPHA]
    b = [np.float32(c) for c in _BETA]
    x2 = x * x
    p = ((((((a[6] * x2 + a[5]) * x2 + a[4]) * x2 + a[3]) * x2 + a[2]) * x2 + a[1]) * x2 + a[0]) * x
    q = ((b[3] * x2 + b[2]) * x2 + b[1]) * x2 + b[0]
    return p / q


def tanh_act(x):
    """tanh(x): fast rational approximation for float32, exact for float64."""
    if np.asarray(x).dtype == np.float32:
        return _tanh_f32_numpy(x)[()]
    return np.tanh(x)


def sigmoid_act(x):
    """1 / (1 + exp(-x)): 0.5 * (1 + tanh(x / 2)) with the fast tanh for float32, exact for float64."""
    if np.asarray(x).dtype == np.float32:
        return np.float32(0.5) * (np.float32(1.0) + _tanh_f32_numpy(np.float32(0.5) * x))[()]
    return 1.0 / (1.0 + np.exp(-x))


def _tanh_f32_impl(x):
    # Every constant is cast to float32 so nothing promotes to float64 (which would halve SIMD width).
    c = np.float32(_CLAMP)
    x = min(max(x, -c), c)
    x2 = x * x
    p = np.float32(_ALPHA[6])
    p = p * x2 + np.float32(_ALPHA[5])
    p = p * x2 + np.float32(_ALPHA[4])
    p = p * x2 + np.float32(_ALPHA[3])
    p = p * x2 + np.float32(_ALPHA[2])
    p = p * x2 + np.float32(_ALPHA[1])
    p = (p * x2 + np.float32(_ALPHA[0])) * x
    q = np.float32(_BETA[3])
    q = q * x2 + np.float32(_BETA[2])
    q = q * x2 + np.float32(_BETA[1])
    q = q * x2 + np.float32(_BETA[0])
    return p / q


@overload(tanh_act)
def _tanh_act_overload(x):
    if x == types.float32:
        return _tanh_f32_impl
    if isinstance(x, types.Float):
        return lambda x: np.tanh(x)


@overload(sigmoid_act)
def _sigmoid_act_overload(x):
    if x == types.float32:
        def impl(x):
            half = np.float32(0.5)
            return half * (np.float32(1.0) + tanh_act(half * x))
        return impl
    if isinstance(x, types.Float):
        return lambda x: 1.0 / (1.0 + np.exp(-x))
