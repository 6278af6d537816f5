"""The model chosen for a time budget: deterministic given the probe's figures; flags win."""
import pytest

from charlm.config import ModelConfig, TrainConfig, replace
from charlm.lm.autoconfig import (
    DROPOUT,
    LADDER,
    PRESSURE_FOR_DROPOUT,
    TOKENS_PER_PARAM,
    TOKENS_PER_PARAM_REGULARISED,
    WEIGHT_DECAY,
    choose,
    overfitting_pressure,
    stack_parameters,
)

MODEL = ModelConfig(cell="lstm", vocab_size=65)


def flops_rate(model):
    """A made-up machine: tokens per second inversely proportional to the parameters."""
    return 4e11 / (stack_parameters(65, 64, model.hidden, 2) * 6)


def test_the_widest_model_that_still_sees_enough_tokens_per_parameter():
    seconds = 180.0
    choice = choose(MODEL, TrainConfig(time_budget=seconds), corpus_tokens=10**9, given=set(), rate=flops_rate)
    H = choice.values["hidden"]
    assert flops_rate(ModelConfig(cell="lstm", hidden=H)) * seconds >= TOKENS_PER_PARAM * stack_parameters(65, 64, H, 2)
    wider = LADDER[LADDER.index(H) + 1]
    assert flops_rate(ModelConfig(cell="lstm", hidden=wider)) * seconds < TOKENS_PER_PARAM * stack_parameters(65, 64, wider, 2)
    assert not {"dropout", "weight_decay", "optimizer"} & set(choice.values)  # a billion tokens: not one epoch
    again = choose(MODEL, TrainConfig(time_budget=seconds), 10**9, set(), flops_rate)  # deterministic
    assert (again.values, again.reason, again.rates) == (choice.values, choice.reason, choice.rates)
    longer = choose(MODEL, TrainConfig(time_budget=10 * seconds), 10**9, set(), flops_rate)
    assert longer.values["hidden"] > H


def test_many_epochs_bring_dropout_and_given_fields_are_never_changed():
    small_corpus = 10**5
    choice = choose(MODEL, TrainConfig(time_budget=600.0), small_corpus, set(), flops_rate)
    assert choice.values["dropout"] == DROPOUT
    H = choice.values["hidden"]
    params = stack_parameters(65, 64, H, 2)
    tokens = flops_rate(ModelConfig(cell="lstm", hidden=H)) * 600
    assert overfitting_pressure(tokens, params, small_corpus) >= PRESSURE_FOR_DROPOUT
    assert (choice.values["optimizer"], choice.values["weight_decay"]) == ("adamw", WEIGHT_DECAY)
    assert f"weight decay {WEIGHT_DECAY:g}" in choice.reason
    kept = choose(MODEL, TrainConfig(time_budget=600.0), small_corpus, {"dropout"}, flops_rate)
    assert not {"dropout", "weight_decay"} & set(kept.values)  # --dropout 0 given: no regularisation
    lighter = choose(replace(MODEL, dropout=0.1), TrainConfig(time_budget=600.0), small_corpus, {"dropout"},
                     flops_rate)
    assert "dropout" not in lighter.values and lighter.values["weight_decay"] == WEIGHT_DECAY
    for given in ({"weight_decay"}, {"optimizer"}, {"optimizer", "weight_decay"}):  # either keeps both
        own = choose(MODEL, TrainConfig(time_budget=600.0), small_corpus, given, flops_rate)
        assert own.values["dropout"] == DROPOUT and not {"optimizer", "weight_decay"} & set(own.values)
    assert choose(MODEL, TrainConfig(time_budget=600.0), small_corpus, {"hidden"}, flops_rate) is None
    assert choose(MODEL, TrainConfig(steps=100), small_corpus, set(), flops_rate) is None  # no time budget
    assert choose(ModelConfig(cell="jordan", vocab_size=65), TrainConfig(time_budget=60.0), 10**6, set(),
                  flops_rate) is None  # its recurrence runs through the decoder: no rule for it
    gru = choose(ModelConfig(cell="gru", vocab_size=65), TrainConfig(time_budget=60.0), 10**6, set(), flops_rate)
    assert gru.values["hidden"] in LADDER and "GRU" in gru.reason


def test_dropout_lets_a_wider_model_train_on_fewer_tokens_per_parameter():
    """Where the budget would memorise the corpus, the wider model wins once regularised; the
    same budget without dropout (the user said --dropout 0) keeps the narrower one."""
    corpus, seconds = 2 * 10**5, 600.0
    regularised = choose(MODEL, TrainConfig(time_budget=seconds), corpus, set(), flops_rate)
    plain = choose(MODEL, TrainConfig(time_budget=seconds), corpus, {"dropout"}, flops_rate)
    assert regularised.values["dropout"] == DROPOUT and "dropout" not in plain.values
    assert "weight_decay" not in plain.values  # --dropout 0 at low pressure: not regularised
    assert regularised.values["hidden"] > plain.values["hidden"]
    for choice, k in ((regularised, TOKENS_PER_PARAM_REGULARISED), (plain, TOKENS_PER_PARAM)):
        H = choice.values["hidden"]
        assert flops_rate(ModelConfig(cell="lstm", hidden=H)) * seconds >= k * stack_parameters(65, 64, H, 2)


def test_a_slow_machine_gets_the_narrowest_model():
    choice = choose(MODEL, TrainConfig(time_budget=1.0), 10**6, set(), lambda m: 10.0)
    assert choice.values["hidden"] == LADDER[0] and list(choice.rates) == [LADDER[0]]


def test_the_parameter_count_is_pytorchs(tmp_path):
    torch = pytest.importorskip("torch")
    net = [torch.nn.Embedding(65, 64), torch.nn.LSTM(64, 96, num_layers=2), torch.nn.Linear(96, 65)]
    assert stack_parameters(65, 64, 96, 2) == sum(p.numel() for m in net for p in m.parameters())


def test_train_with_only_a_time_budget_prints_and_stores_its_choice(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from charlm.cli import main
    from charlm.lm import checkpoint as ckpt

    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"line {i % 31}: a small text to train on\n" for i in range(300)), encoding="utf-8")
    result = CliRunner().invoke(main, ["train", str(corpus), "--time", "2s", "--batch-size", "4", "--seq-len", "16",
                                       "--run-dir", str(tmp_path / "auto")])
    assert result.exit_code == 0, result.output
    assert "chosen" in result.output and ModelConfig().row.torch_module in result.output  # the default cell
    meta = ckpt.load_checkpoint(tmp_path / "auto" / ckpt.LAST_FILE).metadata
    chosen = meta["auto_choice"]["values"]["hidden"]
    assert chosen in LADDER and ckpt.load_checkpoint(tmp_path / "auto").config.hidden == chosen
    trained = meta["train_config"]  # a chosen weight decay reaches the optimiser the run used
    picked = meta["auto_choice"]["values"]
    assert (trained["optimizer"], trained["weight_decay"]) == (picked.get("optimizer", "adam"),
                                                               picked.get("weight_decay", 0.0))
    given = CliRunner().invoke(main, ["train", str(corpus), "--time", "2s", "--batch-size", "4", "--seq-len", "16",
                                      "--hidden", "24", "--run-dir", str(tmp_path / "given")])
    assert given.exit_code == 0 and "chosen" not in given.output
    assert ckpt.load_checkpoint(tmp_path / "given").config.hidden == 24


def test_widths_that_do_not_fit_in_memory_are_never_probed():
    probed = []

    def rate(model):
        probed.append(model.hidden)
        return 1e12  # so fast that, memory aside, the widest width would win

    choice = choose(MODEL, TrainConfig(time_budget=600.0), 10**9, set(), rate, fits=lambda m: m.hidden <= 384)
    assert choice.values["hidden"] == 384 and max(probed) == 384
    assert choose(MODEL, TrainConfig(time_budget=600.0), 10**9, set(), rate, fits=lambda m: False) is None
