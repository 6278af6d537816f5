"""charlm.inspect: gradient lag curves and spectra, the memory corpus and experiment, the neuron finder."""
import numpy as np
import pytest

from charlm.config import ModelConfig, TrainConfig
from charlm.data.corpus import build_corpus
from charlm.data.tokenizer import Tokenizer
from charlm.inspect import gradients, memory, neurons
from charlm.lm import checkpoint as ckpt
from charlm.lm.model import Model
from charlm.lm.train import StepEvent, Trainer


def make_model(cell, layers=1, V=6, E=4, H=3, dtype=np.float64, seed=0):
    cfg = ModelConfig(cell=cell, vocab_size=V, embed=E, hidden=H, layers=layers)
    model = Model(cfg, dtype=dtype).init_weights(np.random.default_rng(seed))
    model.flat += 0.1 * np.random.default_rng(seed + 1).standard_normal(model.size)
    return model


# 1. gradient flow

def test_lag_curve_of_a_vanilla_rnn_decays_or_grows_with_the_recurrent_matrix():
    """Near the linear regime ∂L_t/∂h_{t-k} ≈ (s Qᵀ)^k ∂L_t/∂h_t for W_hh = s Q, Q orthogonal: the
    norm goes like s^k, vanishing for s < 1 and exploding for s > 1 (Pascanu et al. 2013)."""
    ids = np.random.default_rng(0).integers(0, 6, 200)
    ratios = {}
    for s in (0.5, 2.0):
        model = make_model("rnn", H=8)
        p = model.params
        q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((8, 8)))
        p["rnn.weight_hh_l0"][...] = s * q
        p["rnn.weight_ih_l0"][...] *= 1e-5          # tiny inputs keep tanh' ≈ 1 for 8 steps
        for name in ("rnn.bias_ih_l0", "rnn.bias_hh_l0"):
            p[name][...] = 0.0
        curves = gradients.lag_curves(model, ids, max_lag=8, samples=8, warmup=0)
        assert curves.norms.shape == (1, 9) and list(curves.lags) == list(range(9))
        ratios[s] = curves.ratio(8)[0]
        assert curves.rate()[0] == pytest.approx(s, rel=0.05)
    assert ratios[0.5] == pytest.approx(0.5 ** 8, rel=0.1)
    assert ratios[2.0] == pytest.approx(2.0 ** 8, rel=0.1)
    assert np.all(np.diff(curves.norms[0]) > 0)      # the s = 2 curve grows at every lag


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "jordan"])
def test_hidden_state_gradients_match_finite_differences(cell):
    """∂L/∂h_s for every step of a window, against central differences of the loss of the rest of
    the window run from a perturbed h_s (one layer: no path through layers above)."""
    from charlm.kernels import cross_entropy_rows

    model = make_model(cell, V=6, E=4, H=3)
    rng = np.random.default_rng(5)
    T, B = 5, 2
    x, y_last = rng.integers(0, 6, (T, B)), rng.integers(0, 6, B)
    state0 = 0.3 * rng.standard_normal(model.init_state(B).shape)
    g = gradients.hidden_state_grads(model, x, y_last, state0)
    assert g.shape == (1, T, B, 3)

    def loss_from(s, state):
        logits, _, _ = model.forward(x[s + 1:], state)
        nll = np.empty(B)
        cross_entropy_rows(np.ascontiguousarray(logits[-B:]), y_last, nll)
        return nll.sum()

    for s in range(T - 1):
        _, state, _ = model.forward(x[:s + 1], state0)   # state after step s (h, and c for LSTM)
        h = state[:, 0]                                 # a view: perturbing it perturbs the state
        numeric = np.empty_like(h)
        for idx in np.ndindex(h.shape):
            old = h[idx]
            h[idx] = old + 1e-6
            up = loss_from(s, state)
            h[idx] = old - 1e-6
            down = loss_from(s, state)
            h[idx] = old
            numeric[idx] = (up - down) / 2e-6
        np.testing.assert_allclose(g[0, s], numeric[0], rtol=1e-5, atol=1e-9, err_msg=f"step {s}")


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_two_layer_hidden_state_gradients_match_torch_autograd(cell):
    """With layers stacked, ∂L/∂h^l_s includes the path up through the layers above at step s:
    checked against PyTorch cells run step by step with every h retained."""
    torch = pytest.importorskip("torch")
    model = make_model(cell, layers=2, V=7, E=4, H=5)
    rng = np.random.default_rng(6)
    T, B = 6, 3
    x, y_last = rng.integers(0, 7, (T, B)), rng.integers(0, 7, B)
    g = gradients.hidden_state_grads(model, x, y_last, model.init_state(B))
    P = {k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()}
    cls = {"rnn": torch.nn.RNNCell, "gru": torch.nn.GRUCell, "lstm": torch.nn.LSTMCell}[cell]
    cells = []
    for l in range(2):
        c = cls(4 if l == 0 else 5, 5).double()
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(c, name).copy_(P[f"rnn.{name}_l{l}"])
        cells.append(c)
    state = [(torch.zeros(B, 5, dtype=torch.float64),) * (2 if cell == "lstm" else 1) for _ in range(2)]
    hs = [[], []]
    for t in range(T):
        inp = P["encoder.weight"][torch.tensor(x[t])]
        for l in range(2):
            out = cells[l](inp, state[l] if cell == "lstm" else state[l][0])
            state[l] = out if cell == "lstm" else (out,)
            h = state[l][0]
            h.retain_grad()
            hs[l].append(h)
            inp = h
    logits = inp @ P["decoder.weight"].T + P["decoder.bias"]
    torch.nn.functional.cross_entropy(logits, torch.tensor(y_last), reduction="sum").backward()
    for l in range(2):
        ref = np.stack([h.grad.numpy() for h in hs[l]])
        np.testing.assert_allclose(g[l], ref, rtol=1e-8, atol=1e-12, err_msg=f"layer {l}")


def test_two_layer_jordan_hidden_state_gradients_match_torch_autograd():
    torch = pytest.importorskip("torch")
    model = make_model("jordan", layers=2, V=7, E=4, H=5)
    rng = np.random.default_rng(7)
    T, B = 6, 3
    x, y_last = rng.integers(0, 7, (T, B)), rng.integers(0, 7, B)
    state0 = 0.3 * rng.standard_normal(model.init_state(B).shape)
    g = gradients.hidden_state_grads(model, x, y_last, state0)
    P = {k: torch.tensor(np.array(v), requires_grad=True) for k, v in model.state_dict().items()}
    h = [torch.tensor(state0[l, 0]) for l in range(2)]
    hs = [[], []]
    for t in range(T):
        p_prev = torch.softmax(h[1] @ P["decoder.weight"].T + P["decoder.bias"], dim=1)
        inp = P["encoder.weight"][torch.tensor(x[t])]
        for l in range(2):
            h[l] = torch.tanh(inp @ P[f"rnn.weight_ih_l{l}"].T + P[f"rnn.bias_ih_l{l}"]
                              + p_prev @ P[f"rnn.weight_yh_l{l}"].T + P[f"rnn.bias_yh_l{l}"])
            h[l].retain_grad()
            hs[l].append(h[l])
            inp = h[l]
    logits = h[1] @ P["decoder.weight"].T + P["decoder.bias"]
    torch.nn.functional.cross_entropy(logits, torch.tensor(y_last), reduction="sum").backward()
    for l in range(2):
        np.testing.assert_allclose(g[l], np.stack([v.grad.numpy() for v in hs[l]]), rtol=1e-8, atol=1e-12)


def test_spectra_blocks_and_comparison_models():
    model = make_model("lstm", layers=2, H=4)
    spectra = gradients.recurrent_spectra(model, top=3)
    assert [(s.layer, s.block) for s in spectra] == [(l, b) for l in (0, 1) for b in ("all", "i", "f", "g", "o")]
    W = model.params["rnn.weight_hh_l1"]
    np.testing.assert_allclose(spectra[8].values, np.linalg.svd(W[8:12], compute_uv=False)[:3])
    fresh = gradients.comparison_models(model.config, cells=("rnn", "gru", "lstm", "jordan"))
    assert {c: m.config.hidden for c, m in fresh.items()} == {"rnn": 4, "gru": 4, "lstm": 4, "jordan": 4}
    W = fresh["gru"].params["rnn.weight_hh_l0"]
    for block in gradients.recurrent_spectra(fresh["gru"])[:4]:   # layer 0: all, r, z, n
        part = W if block.block == "all" else W[4 * "rzn".index(block.block):4 * "rzn".index(block.block) + 4]
        np.testing.assert_allclose(block.values, np.linalg.svd(part, compute_uv=False)[:len(block.values)])
    assert [s.block for s in gradients.recurrent_spectra(fresh["jordan"])] == ["yh·dec", "yh·dec"]
    ids = np.random.default_rng(0).integers(0, 6, 100)
    reports = gradients.compare(model.config, ids, max_lag=4, samples=2, warmup=2)
    assert [r.curves.label for r in reports] == ["rnn (fresh)", "gru (fresh)", "lstm (fresh)"]
    assert all(r.curves.norms.shape == (2, 5) and np.all(r.curves.norms > 0) for r in reports)


def test_track_gradients_logs_records_without_changing_training(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abcabd, the cat sat on the mat.\n" * 20, encoding="utf-8")
    corpus = build_corpus([path], eos="none", val_fraction=0.1)
    mcfg = ModelConfig(cell="gru", embed=4, hidden=8, layers=2)
    losses = {}
    for track in (False, True):
        tcfg = TrainConfig(steps=4, seq_len=8, batch_size=2, eval_every=2, track_gradients=track)
        events = Trainer(corpus, mcfg, tcfg, tmp_path / f"run{track}").events()
        losses[track] = [e.loss for e in events if isinstance(e, StepEvent)]
    assert losses[True] == losses[False]
    history = gradients.gradient_history(ckpt.read_metrics(tmp_path / "runTrue"))
    assert [step for step, _ in history] == [2, 4]
    curves = history[-1][1]
    assert curves.cell == "gru" and curves.norms.shape[0] == 2 and np.all(np.isfinite(curves.norms))
    assert gradients.gradient_history(ckpt.read_metrics(tmp_path / "runFalse")) == []


# 2. long-range memory

def test_memory_dependency_is_exactly_at_distance_d():
    lines = memory.memory_lines([2, 3, 5, 17, 40] * 20, seed=3)
    for line in lines:
        d = len(line) - 1
        k = memory.OPENERS.index(line[0])
        assert line[d] == memory.CLOSERS[k] and line[d - 1] == memory.CUE
        assert set(line[1:d - 1]) <= set(memory.FILLER)   # the filler says nothing about the opener
    assert sorted(len(line) - 1 for line in lines) == sorted([2, 3, 5, 17, 40] * 20)
    assert {line[0] for line in lines} == set(memory.OPENERS)
    text = memory.memory_text(300, distances=(4, 9), seed=1)
    assert {len(line) - 1 for line in text.splitlines()} == {4, 9}
    tok = Tokenizer.fit([text], "char")
    ids = tok.encode(text)
    positions, dists, expected = memory.dependency_positions(ids, tok)
    assert len(positions) == 300 and set(dists.tolist()) == {4, 9}
    np.testing.assert_array_equal(ids[positions], expected)
    openers = ids[positions - dists]
    assert [memory.OPENERS.index(tok.tokens[o]) for o in openers] == \
        [memory.CLOSERS.index(tok.tokens[c]) for c in expected]


def test_memory_experiment_runs_and_fills_its_table(tmp_path):
    calls = []
    result = memory.run_memory_experiment(
        cells=("rnn", "jordan"), distances=(2, 5), hidden=4, embed=4, steps=2, seq_len=8, batch_size=2,
        train_lines=30, eval_lines=4, run_root=tmp_path, progress=lambda c, d, e: calls.append(c))
    assert result.accuracy.shape == result.prob.shape == (2, 2)
    assert list(result.distances) == [2, 5] and result.chance == 0.25
    assert np.all((0 <= result.accuracy) & (result.accuracy <= 1)) and np.all(result.prob > 0)
    assert [row[0] for row in result.table()] == ["rnn", "jordan"] and set(calls) == {"rnn", "jordan"}
    per_d = memory.run_memory_experiment(cells=("gru",), distances=(3, 4), hidden=4, embed=4, steps=1,
                                         seq_len=8, batch_size=2, train_lines=20, eval_lines=2,
                                         per_distance=True)
    assert per_d.accuracy.shape == (1, 2)


# 3. neurons

QUOTED = 'he said "go now" and left. "why?" (she asked)\nso "we" went on\n' * 6


def planted_quote_lstm(tokenizer, u=2, H=4):
    """An LSTM whose unit u flips its cell state at every '"': c = +1 inside quotes, -1 outside.
    At a quote f = 0, i = 1 and g = tanh(-10 h_prev + 2) (so outside -> +1, inside -> -1); at any
    other character f = 1, i = 0 and the cell holds. Everything else is random."""
    V = len(tokenizer)
    model = Model(ModelConfig(cell="lstm", vocab_size=V, embed=V, hidden=H, layers=1), np.float32)
    model.init_weights(np.random.default_rng(0))
    p = model.params
    p["encoder.weight"][...] = np.eye(V)                        # one-hot: W_ih columns are per-token
    W_ih, W_hh = p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"]
    b_ih, b_hh = p["rnn.bias_ih_l0"], p["rnn.bias_hh_l0"]
    q = tokenizer.encode('"')[0]
    rows = [g * H + u for g in range(4)]                         # unit u's i, f, g, o rows
    W_ih[rows], W_hh[rows], b_ih[rows], b_hh[rows] = 0, 0, 0, 0
    i, f, g, o = rows
    W_ih[i], W_ih[i, q] = -10, 10
    W_ih[f], W_ih[f, q] = 10, -10
    W_hh[g, u], b_ih[g] = -10, 2
    b_ih[o] = 10
    return model


def test_text_properties():
    props = neurons.text_properties(list('a "b(c)" d\nxy'))
    assert props["in_quotes"].tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert props["in_brackets"].tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert props["line_position"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2]
    assert props["after_newline"].tolist() == [0] * 10 + [1, 0, 0]
    assert props["after_space"][1] == 1 and props["in_word"][0] == 1 and props["uppercase"].sum() == 0


@pytest.mark.parametrize("kind", ["c", "h"])
def test_neuron_finder_recovers_a_planted_quote_unit(tmp_path, kind):
    text_path = tmp_path / "quoted.txt"
    text_path.write_text(QUOTED, encoding="utf-8")
    tok = Tokenizer.fit([QUOTED], "char")
    model = planted_quote_lstm(tok)
    run = tmp_path / "planted.safetensors"
    ckpt.save_checkpoint(run, model.config, tok, model.state_dict(), metadata={"eos": "none"})
    report = neurons.inspect_neurons(ckpt.load_checkpoint(run), [text_path], kind=kind, top=2)
    assert "".join(report.tokens) == QUOTED
    best = report.best("in_quotes")
    assert (best.layer, best.unit) == (0, 2) and best.r > 0.95
    planted = report.unit(0, 2)
    inside = report.properties["in_quotes"] == 1
    assert planted[inside].min() > 0.5 and planted[~inside & (np.arange(len(planted)) > 10)].max() < -0.5
    assert {m.property for m in report.matches} >= {"in_quotes", "in_brackets", "line_position"}
    assert "uppercase" not in {m.property for m in report.matches}   # constant over this text


def test_activations_are_those_of_one_long_forward():
    model = make_model("lstm", layers=2, V=6, H=3)
    ids = np.random.default_rng(2).integers(0, 6, 23)
    for kind, s in (("h", 0), ("c", 1)):
        a = neurons.activations(model, ids, kind=kind, seq_len=5)      # 5 windows, state carried
        _, state, _ = model.forward(ids[:, None], model.init_state(1))
        assert a.shape == (2, 23, 3)
        np.testing.assert_allclose(a[:, -1], state[:, s, 0], rtol=1e-6)
    with pytest.raises(Exception, match="cell state"):
        neurons.activations(make_model("gru"), ids, kind="c")


# 4. the command line (thin: parse, one library call, render)

def test_cli_inspect_commands(tmp_path):
    import json

    from click.testing import CliRunner

    from charlm.cli import main

    text = tmp_path / "quoted.txt"
    text.write_text(QUOTED, encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(main, ["inspect", "gradients", "--fresh", str(text), "--cells", "rnn,jordan",
                                  "--max-lag", "3", "--samples", "2", "--warmup", "1", "--hidden", "4",
                                  "--layers", "1", "--embed", "4", "--json"])
    assert result.exit_code == 0, result.output
    reports = json.loads(result.output)["reports"]
    assert [r["cell"] for r in reports] == ["rnn", "jordan"] and len(reports[0]["norms"][0]) == 4
    result = runner.invoke(main, ["inspect", "gradients", "--fresh", str(text), "--max-lag", "3",
                                  "--samples", "2", "--hidden", "4", "--layers", "2"], terminal_width=100)
    assert result.exit_code == 0 and "lstm (fresh)" in result.output and "σ₁" in result.output

    tok = Tokenizer.fit([QUOTED], "char")
    model = planted_quote_lstm(tok)
    run = tmp_path / "planted.safetensors"
    ckpt.save_checkpoint(run, model.config, tok, model.state_dict(), metadata={"eos": "none"})
    result = runner.invoke(main, ["inspect", "neurons", str(run), str(text), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["unit"] == {"layer": 1, "unit": 2} and data["kind"] == "c"
    result = runner.invoke(main, ["inspect", "neurons", str(run), str(text), "--unit", "1:0", "--chars", "40"])
    assert result.exit_code == 0 and "unit L1:0" in result.output
    result = runner.invoke(main, ["inspect", "neurons", str(run), str(text), "--unit", "1:9"])
    assert result.exit_code == 2 and "units 0..3" in result.output

    result = runner.invoke(main, ["inspect", "memory", "--cells", "rnn", "--distances", "2,3", "--steps", "2",
                                  "--hidden", "4", "--seq-len", "8", "--batch-size", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["distances"] == [2, 3]
    result = runner.invoke(main, ["inspect", "memory", "--cells", "tree"])
    assert result.exit_code == 2 and "cells must be among" in result.output
