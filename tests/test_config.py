"""Configuration values are validated into one clear ConfigError; settings are declared once."""
import pytest
from click.testing import CliRunner


@pytest.mark.parametrize("field,value", [("seed", -1), ("seed", 1.5), ("val_fraction", None),
                                         ("val_fraction", 1.0), ("lr", 0.0), ("steps", -3)])
def test_train_config_refuses_bad_values_with_config_error(field, value):
    from charlm.config import TrainConfig
    from charlm.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value}).validate()


@pytest.mark.parametrize("field,value,message", [
    ("cell", "tree", "cell must be one of"), ("hidden", 0, "hidden must be an integer >= 1"),
    ("dropout", 1.0, r"dropout must be in \[0, 1\)"), ("tie_weights", "yes", "tie_weights must be true or false")])
def test_checks_are_derived_from_the_declared_settings(field, value, message):
    from charlm.config import ModelConfig
    from charlm.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        ModelConfig(vocab_size=65, **{field: value}).validate()


@pytest.mark.parametrize("command, classes", [
    (["train"], ("ModelConfig", "TrainConfig")), (["classify", "train"], ("SeqModelConfig", "SeqTrainConfig"))])
def test_every_declared_setting_is_an_option_with_its_default_in_the_help(command, classes):
    from charlm import config
    from charlm.cli import main
    from charlm.seqtask import config as seq_config
    from charlm.settings import specs

    cmd = main.commands[command[0]]
    cmd = cmd.commands[command[1]] if len(command) > 1 else cmd
    options = {p.name: p for p in cmd.params}
    for cls in (getattr(config, n, None) or getattr(seq_config, n) for n in classes):
        for spec in specs(cls):
            assert (spec.name in options) == spec.meta.option, spec.name
            if spec.meta.option:
                assert spec.option in options[spec.name].opts and options[spec.name].default is None
                assert f"[default: {spec.default_text}]" in options[spec.name].help
    assert CliRunner().invoke(main, [*command, "-h"]).exit_code == 0


def test_resume_refuses_model_settings_and_keeps_only_the_given_ones():
    from charlm.config import resume_overrides
    from charlm.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot change the model when resuming"):
        resume_overrides({"hidden": 64, "steps": 10})
    assert resume_overrides({"steps": 10, "time_budget": "2m", "lr": None}).changes() == {"steps": 10,
                                                                                         "time_budget": 120.0}
