"""Optimisers follow torch.optim step for step; clipping and schedules do what they say."""
import math

import numpy as np
import pytest

from charlm.errors import ConfigError
from charlm.optim import Schedule, clip_grad_norm, clip_grad_value, make_optimizer

CASES = [("adam", {}), ("adam", {"weight_decay": 0.01}), ("adamw", {"weight_decay": 0.1}),
         ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.0}), ("rmsprop", {}), ("adagrad", {})]


@pytest.mark.parametrize("name,kw", CASES)
def test_optimizer_matches_torch(name, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(50)
    grads = [rng.standard_normal(50) for _ in range(6)]
    lr = 0.01

    param = p0.copy()
    opt = make_optimizer(name, param.size, np.float64, **kw)
    for g in grads:
        opt.step(param, g.copy(), lr)

    tp = torch.nn.Parameter(torch.tensor(p0))
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
           "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[name]
    topt = cls([tp], lr=lr, weight_decay=kw.get("weight_decay", 0.0),
               **({"momentum": kw["momentum"]} if name == "sgd" else {}))
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(param, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_optimizer_state_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(20) for _ in range(4)]
    a = np.ones(20)
    opt_a = make_optimizer("adam", 20, np.float64)
    for g in grads:
        opt_a.step(a, g.copy(), 0.1)

    b = np.ones(20)
    opt_b = make_optimizer("adam", 20, np.float64)
    for g in grads[:2]:
        opt_b.step(b, g.copy(), 0.1)
    arrays, scalars = opt_b.state_dict()
    opt_c = make_optimizer("adam", 20, np.float64)
    opt_c.load_state_dict({k: v.copy() for k, v in arrays.items()}, dict(scalars))
    for g in grads[2:]:
        opt_c.step(b, g.copy(), 0.1)
    np.testing.assert_array_equal(a, b)


def test_clip_grad_norm_returns_norm_before_and_rescales():
    g = np.array([3.0, 4.0])
    assert clip_grad_norm(g, 1.0) == pytest.approx(5.0)
    assert np.linalg.norm(g) == pytest.approx(1.0, rel=1e-5)
    h = np.array([0.3, 0.4])
    assert clip_grad_norm(h, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(h, [0.3, 0.4])  # under the limit: untouched


def test_clip_grad_norm_reports_nan_without_touching():
    g = np.array([np.nan, 1.0])
    assert math.isnan(clip_grad_norm(g, 1.0))


def test_clip_grad_value_clamps_elementwise():
    g = np.array([-3.0, 0.5, 7.0])
    clip_grad_value(g, 1.0)
    np.testing.assert_array_equal(g, [-1.0, 0.5, 1.0])


def test_cosine_schedule_follows_the_budget_fraction_with_a_warm_up_ramp():
    s = Schedule("cosine", 1.0, warmup=10, min_lr=0.1)
    assert s.lr(0, 0.0) == pytest.approx(0.1)           # ramp 1/10 of the cosine's start
    assert s.lr(9, 0.0) == pytest.approx(1.0)
    assert s.lr(10, 0.0) == pytest.approx(1.0)
    assert s.lr(60, 0.5) == pytest.approx(0.55)         # half the budget: half way down
    assert s.lr(5, 0.5) == pytest.approx(0.55 * 6 / 10)  # a ramp still running multiplies in
    assert s.lr(110, 1.0) == pytest.approx(0.1)         # the end of the budget: min_lr exactly
    assert s.lr(500, 3.0) == pytest.approx(0.1)


def test_linear_schedule_decays_in_a_straight_line_to_min_lr_at_the_end_of_the_budget():
    s = Schedule("linear", 1.0, min_lr=0.2)
    assert s.lr(0, 0.0) == pytest.approx(1.0)
    assert s.lr(30, 0.25) == pytest.approx(0.8)         # cosine would still be at 0.88
    assert s.lr(60, 0.75) == pytest.approx(0.4)
    assert s.lr(90, 1.0) == pytest.approx(0.2)
    assert s.lr(99, 1.5) == pytest.approx(0.2)          # past the budget: stays at min_lr


def test_schedule_refuses_min_lr_above_lr():
    with pytest.raises(ConfigError, match="min_lr"):
        Schedule("cosine", 1e-3, min_lr=1e-2)


def test_plateau_schedule_reduces_after_patience():
    s = Schedule("plateau", 1.0, patience=1, factor=0.5)
    for loss in (2.0, 1.9, 1.95, 1.95):
        s.observe(loss)
    assert s.lr(0, 0.0) == pytest.approx(0.5)
    state = s.state_dict()
    t = Schedule("plateau", 1.0, patience=1, factor=0.5)
    t.load_state_dict(state)
    assert t.lr(0, 0.0) == pytest.approx(0.5) and t.best == pytest.approx(1.9)



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_buffers_split_across_threads_give_the_serial_results(dtype):
    """Adam's pass, the weight average's update and the sum of squares over a buffer long enough to
    be split into blocks run side by side: Adam's result is the serial kernel's bit for bit, the
    average's NumPy's, and the sum is the same number
    on one thread and on two (its blocks are fixed, not one per thread)."""
    from charlm.kernels import update
    from charlm.runtime import thread_limits

    n = update.SPLIT_MIN + 12345
    rng = np.random.default_rng(3)
    param, grad, m = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(n)).astype(dtype)
    serial = [a.copy() for a in (param, grad, m, v)]
    update.adam_update(*serial, 1e-3, 0.9, 0.999, 1.5, 1e-8)
    split = [a.copy() for a in (param, grad, m, v)]
    with thread_limits(2):
        update.adam_pass(*split, 1e-3, 0.9, 0.999, 1.5, 1e-8)
        two = update.sum_squares_pass(grad)
    for got, want in zip(split, serial):
        np.testing.assert_array_equal(got, want)
    mean, numpy_mean = param.copy(), param.copy()
    with thread_limits(2):
        update.average_pass(mean, grad, 1.0 / 3)   # the weight average's update: NumPy's arithmetic
    numpy_mean += (grad - numpy_mean) * dtype(1.0 / 3)
    np.testing.assert_array_equal(mean, numpy_mean)
    with thread_limits(1):
        one = update.sum_squares_pass(grad)
    assert two == one
    assert two == pytest.approx(float(np.sum(grad.astype(np.float64) ** 2)), rel=1e-12)
