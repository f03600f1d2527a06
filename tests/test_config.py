import pytest

from streamstyle.model.config import PRESETS, ModelConfig, preset
from streamstyle.model.errors import ConfigError
from streamstyle.model.info import count_parameters


def test_presets_validate_and_round_trip_through_json():
    for name in PRESETS:
        cfg = preset(name)
        assert cfg.name == name
        assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_default_preset_is_in_the_shipping_range_and_large_is_sana_class():
    default = sum(count_parameters(preset("default")).values())
    large = sum(count_parameters(preset("large")).values())
    assert 10e6 <= default <= 30e6
    assert 450e6 <= large <= 750e6


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError, match="tiny, default, large"):
        preset("huge")


@pytest.mark.parametrize("kwargs, words", [
    ({"width": 100, "heads": 3}, "multiple of heads"),
    ({"patch": 10, "latent_stride": 4}, "multiple of latent_stride"),
    ({"cond_channels": ("color", "sheen")}, "unknown channel 'sheen'"),
    ({"guide_channels": ("motion",)}, "cannot use 'motion'"),
    ({"state_decay": 1.0}, "state_decay"),
    ({"depth": 0}, "depth must be a positive integer"),
])
def test_inconsistent_configs_are_rejected(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        ModelConfig(**kwargs).validate()


def test_config_json_rejects_unknown_fields_and_versions():
    text = preset("tiny").to_json()
    with pytest.raises(ConfigError, match="unknown fields: colour"):
        ModelConfig.from_json(text.replace('"width"', '"colour": 1, "width"'))
    with pytest.raises(ConfigError, match="version"):
        ModelConfig.from_json(text.replace('"config_version": 1', '"config_version": 99'))
