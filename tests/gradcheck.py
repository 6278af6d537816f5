"""One reusable finite-difference gradient check (central differences, float64)."""
import numpy as np


def numerical_gradient(f, x, eps=1e-6):
    """d f() / d x by central differences, perturbing every element of x in place (and restoring it).
    f takes no arguments and reads x (and whatever else) from its closure; returns a float."""
    assert x.dtype == np.float64, "finite differences need float64"
    grad = np.empty_like(x)
    flat = x.reshape(-1)  # a view: writes go into x
    assert np.shares_memory(flat, x), "x must be contiguous so that perturbations reach f"
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        f_plus = f()
        flat[i] = old - eps
        f_minus = f()
        flat[i] = old
        grad.flat[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def assert_gradient_matches_finite_diff(f, x, analytic, name="", eps=1e-6, rtol=1e-6, atol=1e-8):
    """Assert that the analytic gradient of the scalar f() wrt x matches central differences."""
    numeric = numerical_gradient(f, x, eps)
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol,
                               err_msg=f"gradient wrt {name} differs from finite differences")
