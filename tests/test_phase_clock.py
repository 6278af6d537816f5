"""The layer kernels' phase marks (kernels/phase_clock.py): bound to the thread CPU clock they
change no result and charge time to the phases a step runs."""
import numba
import numpy as np
import pytest
from tiny_models import batch, make_model

from charlm.kernels import layer, phase_clock

pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="the clock is compiled code")


def test_clocked_marks_change_nothing_and_count_every_phase_a_step_runs(monkeypatch):
    model = make_model("lstm", layers=2, V=7, E=4, H=5, dtype=np.float32)
    x, y = batch(7, T=6, B=4)
    state = model.init_state(4)
    loss, _ = model.loss_and_grad(x, y, state)
    grads = model.grad_flat.copy()

    buf = np.zeros((64, len(phase_clock.PHASES)), np.int64)
    kernels = layer.profiled_kernels(model.cell.id, phase_clock.clocked_mark(buf))
    monkeypatch.setattr(layer, "_kernels", lambda cell_id: kernels)
    loss2, _ = model.loss_and_grad(x, y, state)
    assert loss2 == loss
    np.testing.assert_array_equal(model.grad_flat, grads)
    spent = dict(zip(phase_clock.PHASES, buf.sum(axis=0)))
    for phase in ("fwd input projection", "fwd recurrent product", "fwd pointwise", "bwd pointwise",
                  "bwd recurrent product", "bwd weight-gradient GEMMs", "bwd input gradient"):
        assert spent[phase] > 0, phase
    assert (buf >= 0).all()


def test_a_clocked_mark_wants_one_int64_column_per_phase():
    with pytest.raises(ValueError):
        phase_clock.clocked_mark(np.zeros((4, 2), np.int64))
