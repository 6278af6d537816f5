"""Configuration values are validated into one clear ConfigError."""
import pytest


@pytest.mark.parametrize("field,value", [("seed", -1), ("seed", 1.5), ("val_fraction", None),
                                         ("val_fraction", 1.0), ("lr", 0.0), ("steps", -3)])
def test_train_config_refuses_bad_values_with_config_error(field, value):
    from charlm.config import TrainConfig
    from charlm.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value}).validate()
