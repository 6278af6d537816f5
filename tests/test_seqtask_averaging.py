"""The moving average of the weights: its formula, what is evaluated and saved, exact resume
(the average travels in last.safetensors), and bad settings."""
import numpy as np
import pytest

from charlm.errors import ConfigError
from charlm.seqtask import store
from charlm.seqtask.averaging import WeightAverage
from charlm.seqtask.config import SeqModelConfig, SeqTrainConfig
from charlm.seqtask.train import SeqTrainer

from test_classify import FAST, FAST_TRAIN, toy_examples


def test_the_average_follows_the_formula_and_lends_its_weights():
    flat = np.array([1.0, -2.0])
    average = WeightAverage(0.9, flat)
    expected = flat.copy()
    for step, w in enumerate([[3.0, 0.0], [5.0, 1.0], [0.0, 0.0]] + [[1.0, 1.0]] * 20):
        flat[...] = w
        average.update(flat, step)
        d = min(0.9, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * np.array(w)
    np.testing.assert_allclose(average.average, expected, rtol=1e-12)
    with average.applied(flat):
        np.testing.assert_array_equal(flat, expected)
    np.testing.assert_array_equal(flat, [1.0, 1.0])
    off = WeightAverage(0.0, flat)
    off.update(flat * 2, 0)
    with off.applied(flat):
        np.testing.assert_array_equal(flat, [1.0, 1.0])
    assert off.state() == {}


def trainer(run_dir, epochs=2):
    return SeqTrainer(toy_examples(200), toy_examples(60, 1), SeqModelConfig(**(FAST | {"dropout": 0.3})),
                      SeqTrainConfig(epochs=epochs, ema=0.95, **FAST_TRAIN), run_dir)


def test_the_average_is_scored_and_saved_and_resumes_exactly(tmp_path):
    straight = trainer(tmp_path / "a")
    events = list(straight.events())
    best = store.load(tmp_path / "a" / store.MODEL_FILE)
    last = store.load(tmp_path / "a" / store.LAST_FILE)
    assert best.metadata["step"] == last.metadata["step"]        # improved to the end on this task
    for name, raw in straight.model.state_dict().items():
        np.testing.assert_array_equal(last.tensors[name], raw)                  # training goes on from these
        assert not np.array_equal(best.tensors[name], raw), name                # the model kept: the average
    np.testing.assert_array_equal(np.concatenate([best.tensors[n].ravel() for n, _ in straight.model.shapes]),
                                  straight.average.average)
    assert events[-1].best_accuracy == best.metadata["scores"]["accuracy"]

    first = trainer(tmp_path / "b")
    for event in first.events():
        if getattr(event, "step", 0) == 7:
            first.request_stop()
    resumed = SeqTrainer.resume(tmp_path / "b", toy_examples(200), toy_examples(60, 1))
    assert resumed.pos.step == 7
    list(resumed.events())
    np.testing.assert_array_equal(resumed.model.flat, straight.model.flat)
    np.testing.assert_array_equal(resumed.average.average, straight.average.average)


@pytest.mark.parametrize("ema", [1.0, -0.1, float("nan")])
def test_bad_decay_is_one_clear_error(ema):
    with pytest.raises(ConfigError, match="ema must be"):
        SeqTrainConfig(ema=ema).validate()
