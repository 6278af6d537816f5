"""Divergence, sampling edge cases, resume refusals and determinism (library level)."""
import functools
import math
import warnings

import numpy as np
import pytest

from charlm.config import ModelConfig, TrainConfig
from charlm.data.corpus import build_corpus
from charlm.errors import CharlmError, CheckpointError, ConfigError, VocabError
from charlm.lm import checkpoint as ckpt
from charlm.lm.model import Model
from charlm.lm.sample import Sampler, generate_text
from charlm.lm.train import MAX_BAD_STEPS, CheckpointEvent, DoneEvent, StepEvent, Trainer, WarningEvent

TEXT = "".join(f"line {i % 13} says {'abc'[i % 3] * (i % 5 + 1)} to the model\n" for i in range(200))
MCFG = ModelConfig(cell="gru", embed=8, hidden=16, layers=2, dropout=0.1)
TCFG = TrainConfig(steps=12, seq_len=8, batch_size=4, eval_every=3, lr=5e-3, threads=1, seed=11, schedule="constant")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("robust") / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return build_corpus([path], val_fraction=0.1)


def builder(tokenizer, tcfg, sources):
    return build_corpus(sources, eos=tcfg.eos, val_fraction=tcfg.val_fraction, tokenizer=tokenizer)


def poison(monkeypatch, bad_calls, *, what="loss"):
    """Make Model.loss_and_grad report a non-finite loss (or gradient) on the given calls (1-based)."""
    original, calls = Model.loss_and_grad, {"n": 0}

    def loss_and_grad(self, x, y, state, rng=None):
        if x.shape == (2, 2):  # the Trainer's kernel warm-up before the budget starts: not a step
            return original(self, x, y, state, rng)
        calls["n"] += 1
        loss, new_state = original(self, x, y, state, rng)
        if calls["n"] in bad_calls:
            if what == "loss":
                return math.nan, new_state
            self.grad_flat[3] = np.inf
        return loss, new_state

    monkeypatch.setattr(Model, "loss_and_grad", loss_and_grad)
    return calls


# ---------------------------------------------------------------------------------------------
# divergence


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_non_finite_step_is_skipped_and_the_learning_rate_halved(corpus, tmp_path, monkeypatch, what):
    poison(monkeypatch, {5, 6}, what=what)
    trainer = Trainer(corpus, MCFG, TCFG, tmp_path / "run")
    before = {}
    events = []
    for event in trainer.events():
        events.append(event)
        if isinstance(event, StepEvent) and event.step == 4:
            before = trainer.model.flat.copy()
        if isinstance(event, WarningEvent) and len([e for e in events if isinstance(e, WarningEvent)]) == 2:
            np.testing.assert_array_equal(trainer.model.flat, before)  # nothing was applied
    warnings = [e for e in events if isinstance(e, WarningEvent)]
    assert len(warnings) == 2 and all("non-finite" in w.message and "halved" in w.message for w in warnings)
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.step for e in steps] == list(range(1, 13))   # training went on to its budget
    assert all(math.isfinite(e.loss) for e in steps)
    assert steps[3].lr == pytest.approx(5e-3) and steps[4].lr == pytest.approx(5e-3 / 4)
    assert events[-1].reason == "steps"
    # the reduced learning rate is part of the resumable state
    assert Trainer.resume(tmp_path / "run", builder).schedule.scale == pytest.approx(0.25)


def test_divergence_stops_with_a_message_and_leaves_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    poison(monkeypatch, set(range(8, 100)))
    run_dir = tmp_path / "run"
    trainer = Trainer(corpus, MCFG, TCFG, run_dir)
    saved = {}
    events = list(trainer.events())
    for e in events:
        if isinstance(e, CheckpointEvent):
            saved[e.path.name] = e.step
    assert saved[ckpt.LAST_FILE] == 6
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.reason == "diverged" and done.step == 7
    assert "non-finite" in done.message and "intact" in done.message
    assert sum(isinstance(e, WarningEvent) for e in events) == MAX_BAD_STEPS
    # nothing was written after the last good checkpoint: it loads and is at step 6
    last = ckpt.load_checkpoint(run_dir / ckpt.LAST_FILE)
    assert last.metadata["step"] == 6
    assert max(r["step"] for r in ckpt.read_metrics(run_dir)) == 7


def test_divergence_leaves_checkpoint_files_byte_identical(corpus, tmp_path, monkeypatch):
    poison(monkeypatch, set(range(4, 100)))
    run_dir = tmp_path / "run"
    trainer = Trainer(corpus, MCFG, TCFG, run_dir)
    snapshot = None
    for event in trainer.events():
        if isinstance(event, CheckpointEvent) and not event.best:   # last.safetensors at step 3
            snapshot = {p.name: p.read_bytes() for p in run_dir.glob("*.safetensors")}
    assert event.reason == "diverged"
    assert {p.name: p.read_bytes() for p in run_dir.glob("*.safetensors")} == snapshot


def test_overflowing_update_never_overwrites_good_checkpoints(corpus, tmp_path, monkeypatch):
    """A finite gradient can still overflow the weights (absurd lr): such weights are not saved."""
    from charlm.optim import Adam

    original, calls = Adam.step, {"n": 0}

    def step(self, param, grad, lr):
        original(self, param, grad, lr)
        calls["n"] += 1
        if calls["n"] == 6:
            param[0] = np.inf

    monkeypatch.setattr(Adam, "step", step)
    run_dir = tmp_path / "run"
    with warnings.catch_warnings():  # NumPy's overflow warnings would land on the user's terminal
        warnings.simplefilter("error")
        events = list(Trainer(corpus, MCFG, TCFG, run_dir).events())
    assert any(isinstance(e, WarningEvent) and "no longer finite" in e.message for e in events)
    assert events[-1].reason == "diverged"
    assert max(e.step for e in events if isinstance(e, CheckpointEvent)) == 3
    assert ckpt.load_checkpoint(run_dir / ckpt.LAST_FILE).metadata["step"] == 3


def test_ctrl_c_right_after_a_skipped_step_still_saves(corpus, tmp_path, monkeypatch):
    poison(monkeypatch, {5})
    run_dir = tmp_path / "run"
    trainer = Trainer(corpus, MCFG, replace_cfg(TCFG, eval_every=100, steps=50), run_dir)
    for event in trainer.events():
        if isinstance(event, WarningEvent):
            trainer.request_stop()
    assert event.reason == "stopped"
    assert ckpt.load_checkpoint(run_dir / ckpt.LAST_FILE).metadata["step"] == 4


def test_ctrl_c_on_a_sample_step_still_saves(corpus, tmp_path):
    run_dir = tmp_path / "run"
    trainer = Trainer(corpus, MCFG, replace_cfg(TCFG, eval_every=100, steps=50, sample_every=5), run_dir)
    for event in trainer.events():
        if isinstance(event, StepEvent) and event.step == 5:
            trainer.request_stop()
    assert event.reason == "stopped"
    assert ckpt.load_checkpoint(run_dir / ckpt.LAST_FILE).metadata["step"] == 5


def replace_cfg(cfg, **changes):
    from dataclasses import replace

    return replace(cfg, **changes)


# ---------------------------------------------------------------------------------------------
# resume refusals


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    list(Trainer(corpus, MCFG, TCFG, run_dir).events())
    return run_dir


@pytest.mark.parametrize("override, words", [
    ({"batch_size": 8}, "batch_size"), ({"seq_len": 4}, "seq_len"), ({"optimizer": "sgd"}, "optimizer"),
    ({"level": "word"}, "level"), ({"seed": 3}, "seed"), ({"hidden": 64}, "hidden"), ({"cell": "lstm"}, "cell"),
    ({"steps": -5}, "steps"), ({"lr": math.nan}, "lr"),
])
def test_resume_with_an_incompatible_configuration_is_refused(trained, override, words):
    with pytest.raises(ConfigError, match=words):
        Trainer.resume(trained, builder, **override)


def test_resume_refusals_for_changed_text_and_missing_checkpoints(trained, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(TEXT + "more text\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="changed"):
        Trainer.resume(trained, lambda tok, t, s: build_corpus([other], val_fraction=t.val_fraction, tokenizer=tok))
    with pytest.raises(CheckpointError, match="no such run"):
        Trainer.resume(tmp_path / "nope", builder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a run directory"):
        Trainer.resume(tmp_path / "empty", builder)
    half = tmp_path / "half"
    half.mkdir()
    (half / ckpt.MODEL_FILE).write_bytes((trained / ckpt.MODEL_FILE).read_bytes())
    with pytest.raises(CheckpointError, match="first full checkpoint"):
        Trainer.resume(half, builder)
    assert Trainer.resume(trained, builder, steps=20).tcfg.steps == 20  # extending the budget is fine


# ---------------------------------------------------------------------------------------------
# sampling never fails with an invalid distribution


def _sample_counts(logits, temperature, n=2000, top_k=0, top_p=1.0, loop="kernel"):
    """Frequencies of each id over n evenly spaced uniforms, by the sampling rule compiled (as the
    kernel runs it) or as the NumPy loop calls it, uncompiled."""
    from charlm.kernels.generate import draw
    from charlm.kernels.sampling_rule import sample_id

    rule = draw if loop == "kernel" else sample_id
    logits = np.asarray(logits)
    scratch = np.empty(len(logits), np.float64)
    ids = [rule(logits, (i + 0.5) / n, temperature, top_k, top_p, scratch) for i in range(n)]
    return np.bincount(ids, minlength=len(logits)) / n


@pytest.fixture(params=["kernel", "numpy"])
def sample_counts(request):
    return functools.partial(_sample_counts, loop=request.param)


def test_sampling_kernel_handles_extreme_logits_and_temperatures(sample_counts):
    _sample_counts = sample_counts  # the same checks for both sampling loops
    big = np.array([800.0, 799.5, -1e4, 0.0], np.float32)   # naive exp() overflows float32 and float64
    want = np.exp(np.float64(big) - 800.0)
    want /= want.sum()
    np.testing.assert_allclose(_sample_counts(big, 1.0), want, atol=2e-3)
    extreme = np.array([3e38, -3e38, 0.0, 1e30], np.float32)
    np.testing.assert_array_equal(_sample_counts(extreme, 1.0), [1, 0, 0, 0])
    np.testing.assert_array_equal(_sample_counts(extreme, 100.0), [1, 0, 0, 0])
    flat = np.array([1.0, 2.0, 3.0, 4.0], np.float64)
    np.testing.assert_array_equal(_sample_counts(flat, 0.0), [0, 0, 0, 1])      # greedy
    np.testing.assert_array_equal(_sample_counts(flat, 1e-12), [0, 0, 0, 1])    # -> 0 is greedy
    assert np.abs(_sample_counts(flat, 100.0) - 0.25).max() < 0.01              # huge: near uniform
    np.testing.assert_array_equal(_sample_counts(flat, 1.0, top_k=1), [0, 0, 0, 1])
    assert _sample_counts(flat, 1.0, top_p=1e-9)[3] == 1


def test_sampling_kernel_with_an_infinite_logit_picks_it(sample_counts):
    np.testing.assert_array_equal(sample_counts(np.array([1.0, 2.0, np.inf], np.float32), 1.0), [0, 0, 1])


def test_nan_logits_give_eos_in_both_loops():
    from charlm.kernels.generate import draw
    from charlm.kernels.sampling_rule import sample_id

    logits = np.array([np.nan, 1.0, np.nan], np.float32)
    assert sample_id(logits, 0.5, 1.0, 0, 1.0, np.empty(3)) == draw(logits, 0.5, 1.0, 0, 1.0, np.empty(3)) == 0


@pytest.fixture(scope="module")
def checkpoint(trained):
    return ckpt.load_checkpoint(trained)


@pytest.mark.parametrize("temperature", [0, 1e-9, 0.5, 1.0, 100])
def test_sampling_at_any_allowed_temperature(checkpoint, temperature):
    text = generate_text(checkpoint, "line", temperature=temperature, max_length=40, seed=1)
    assert text.startswith("line")
    if temperature <= 1e-9:
        assert text == generate_text(checkpoint, "line", temperature=0, max_length=40, seed=2)


@pytest.mark.parametrize("options", [
    {"temperature": -1}, {"temperature": math.nan}, {"temperature": math.inf}, {"temperature": 1e6},
    {"top_p": 0}, {"top_p": 1.5}, {"top_p": math.nan}, {"top_p": -0.1}, {"top_k": -1}, {"top_k": 1.5},
    {"max_length": 0}, {"max_length": -3}, {"seed": -1}, {"seed": "abc"}, {"temperature": "hot"},
])
def test_invalid_sampling_options_are_config_errors(checkpoint, options):
    with pytest.raises(ConfigError):
        generate_text(checkpoint, **options)


def test_prime_outside_the_vocabulary_is_a_vocab_error(checkpoint):
    with pytest.raises(VocabError, match="Z"):
        generate_text(checkpoint, "line Z", max_length=5, seed=0)


def test_nan_weights_give_a_clear_error(checkpoint):
    model = checkpoint.build_model()
    model.params["rnn.weight_hh_l1"][0, 0] = np.nan
    with pytest.raises(CheckpointError, match="NaN") as e:
        Sampler(model, checkpoint.tokenizer)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, CharlmError)


# ---------------------------------------------------------------------------------------------
# determinism


def _losses(corpus, tmp_path, name, **changes):
    trainer = Trainer(corpus, MCFG, replace_cfg(TCFG, **changes), tmp_path / name)
    losses = [e.loss for e in trainer.events() if isinstance(e, StepEvent)]
    return losses, trainer.model.flat.copy()


def test_same_seed_and_threads_give_identical_losses_and_weights(corpus, tmp_path):
    a, wa = _losses(corpus, tmp_path, "a")
    b, wb = _losses(corpus, tmp_path, "b")
    assert a == b
    np.testing.assert_array_equal(wa, wb)
    c, _ = _losses(corpus, tmp_path, "c", seed=12)
    assert c != a


def test_same_seed_gives_identical_samples(checkpoint):
    a = generate_text(checkpoint, "line", temperature=1.0, top_p=0.9, max_length=150, seed=5)
    assert a == generate_text(checkpoint, "line", temperature=1.0, top_p=0.9, max_length=150, seed=5)
    # generation is streamed in chunks, yet a shorter sample is exactly a prefix of a longer one
    assert a.startswith(generate_text(checkpoint, "line", temperature=1.0, top_p=0.9, max_length=70, seed=5))
    others = {generate_text(checkpoint, "line", temperature=1.0, max_length=150, seed=s) for s in range(6, 10)}
    assert len(others) > 1
