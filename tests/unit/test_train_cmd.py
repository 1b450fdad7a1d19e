"""``detpose train``'s config flags: presets and ``--set`` overrides."""

from __future__ import annotations

import argparse

import pytest

from jobs.train_cmd import _config_override, training_config


def test_set_overrides_parse_yaml_values_and_keep_mode_names() -> None:
    assert _config_override("alpha2=0.25") == ("alpha2", 0.25)
    assert _config_override("supervision_strides=[16, 4]") == ("supervision_strides", (16, 4))
    assert _config_override("msr=off") == ("msr", "off")  # not YAML 1.1's False
    with pytest.raises(argparse.ArgumentTypeError, match="FIELD=VALUE"):
        _config_override("alpha2")


def test_training_config_applies_overrides_and_names_bad_fields() -> None:
    cfg = training_config(
        "refiner", "tiny", [("msr", "off"), ("supervision_strides", (4,))], batch_size=5
    )
    assert (cfg.msr, cfg.supervision_strides, cfg.batch_size) == ("off", (4,), 5)
    assert training_config("refiner", "coco-recipe-384x384", [], None).input_hw == (384, 384)
    with pytest.raises(ValueError, match="bogus"):
        training_config("refiner", "tiny", [("bogus", 1)], None)
    with pytest.raises(ValueError, match="trains with --config tiny or coco-recipe"):
        training_config("stage1", "coco-recipe-256x256", [], None)
