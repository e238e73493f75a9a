"""The node's parameter table maps onto the same validated RunConfig as the CLI (no rclpy)."""

from __future__ import annotations

import dataclasses

import pytest

from car_runtime.config import RunConfig
from car_runtime.errors import ConfigError
from car_runtime.ros import params


def test_defaults_equal_the_cli_defaults():
    cfg = params.run_config({p.name: p.default for p in params.PARAMETERS})
    expected = dataclasses.replace(RunConfig())  # model None, fps None, threads None: "not set"
    assert cfg == expected


def test_every_config_field_but_none_is_a_parameter():
    mapped = {p.field for p in params.PARAMETERS if p.field}
    assert not mapped & params.NOT_PARAMETERS
    assert mapped | params.NOT_PARAMETERS == {f.name for f in dataclasses.fields(RunConfig)}


def test_zero_means_not_set_and_names_map():
    cfg = params.run_config({"model_path": "m.tar.gz", "fps": 15.0, "threads": 0,
                             "calibration_path": "/tmp/cal.json", "max_speed_pct": 30.0})
    assert (cfg.model, cfg.fps, cfg.threads, cfg.calibration, cfg.max_speed_pct) == (
        "m.tar.gz", 15.0, None, "/tmp/cal.json", 30.0)
    assert params.run_config({"fps": 0.0, "threads": 2}).fps is None
    assert params.run_config({"threads": 2}).threads == 2


def test_changes_apply_over_a_base():
    base = params.run_config({"model_path": "a", "max_speed_pct": 70.0})
    cfg = params.run_config({"max_speed_pct": 20.0}, base=base)
    assert (cfg.model, cfg.max_speed_pct) == ("a", 20.0)


@pytest.mark.parametrize(
    "values, words",
    [
        ({"max_speed_pct": 101.0}, ["max_speed_pct", "0..100"]),
        ({"max_speed_pct": float("nan")}, ["max_speed_pct"]),
        ({"debug_image_hz": 31.0}, ["debug_image_hz", "0..30"]),
        ({"preprocess": "magic"}, ["preprocess", "stock"]),
        ({"precision": "f64"}, ["precision", "f32"]),
        ({"output": "pwm:x"}, ["output", "record:"]),
        ({"calibration_path": ""}, ["calibration_path"]),
        ({"deadline_ms": 5.0}, ["deadline_ms", "10..10000"]),
        ({"speed": 1.0}, ["unknown parameter", "max_speed_pct"]),
    ],
)
def test_bad_values_raise_config_error_naming_the_parameter(values, words):
    with pytest.raises(ConfigError) as info:
        params.run_config(values)
    for word in words:
        assert word in str(info.value)


def test_live_and_fixed_parameters():
    live = {p.name for p in params.PARAMETERS if p.live}
    assert live == {"model_path", "max_speed_pct", "debug_image_hz"}
    for name in live:
        assert params.live_change_refusal(name) is None
    assert "restart" in params.live_change_refusal("camera")
    assert "~/enable" in params.live_change_refusal("arm")
    assert "unknown" in params.live_change_refusal("nope")


def test_ranges_hold_their_defaults():
    for p in params.PARAMETERS:
        if p.range is not None:
            assert p.range[0] <= p.default <= p.range[1], p.name
            assert type(p.range[0]) is type(p.default) or isinstance(p.default, float), p.name
