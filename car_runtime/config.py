"""Validated drive configuration. The YAML file, CLI flags and ROS parameters all land here.

Precedence: defaults < YAML file (``--config``) < CLI flags. Unknown keys and bad values raise
:class:`~car_runtime.errors.ConfigError` naming the key and the accepted values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from car_runtime.errors import ConfigError

DEFAULT_CALIBRATION = "/opt/aws/deepracer/calibration.json"


@dataclass
class RunConfig:
    """Everything ``car-runtime run`` and the ROS node need to drive."""

    model: str | None = None
    camera: str = "auto"  # auto | index | /dev/videoN | video file | image folder | rosbag folder
    fps: float | None = None  # pace an image folder (video files use their own fps)
    output: str = "sysfs"  # sysfs[:DIR] | serial:URL | record:PATH
    calibration: str = DEFAULT_CALIBRATION
    max_speed_pct: float = 50.0  # stock default of the max-speed slider
    arm: bool = False  # start armed (otherwise neutral until armed)
    deadline_ms: float = 100.0  # no fresh command within this -> neutral
    max_frame_age_ms: float = 100.0  # frames older than this are never acted on
    stall_timeout_ms: float = 2000.0  # a stage stuck this long: neutral, exit 5 (watchdog)
    device: str = "CPU"
    precision: str = "f32"
    preprocess: str = "stock"
    threads: int | None = None
    sac_squash: bool = False
    status_interval_s: float = 1.0  # live status line period (0 = off)

    def validate(self) -> "RunConfig":
        from car_runtime.model.policy import PRECISIONS
        from car_runtime.vision.preprocess import MODES

        def number(name: str, lo: float, hi: float, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if math.isnan(value) or not (lo <= value <= hi):
                raise ConfigError(f"{name} = {value!r} is outside {lo:g}..{hi:g}")

        number("max_speed_pct", 0, 100)
        number("deadline_ms", 10, 10_000)
        number("max_frame_age_ms", 1, 10_000)
        number("stall_timeout_ms", 100, 600_000)
        number("fps", 0.1, 1000, allow_none=True)
        number("threads", 1, 256, allow_none=True)
        number("status_interval_s", 0, 3600)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.preprocess not in MODES:
            raise ConfigError(f"preprocess {self.preprocess!r} is not one of {', '.join(MODES)}")
        for name in ("camera", "output", "calibration", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name} must be a non-empty string")
        if not isinstance(self.arm, bool) or not isinstance(self.sac_squash, bool):
            raise ConfigError("arm and sac_squash must be true or false")
        from car_runtime.actuation.output import parse_output_spec

        parse_output_spec(self.output)
        return self

    def replace(self, **changes: Any) -> "RunConfig":
        """A validated copy with ``changes`` applied."""
        return from_mapping({**dataclasses.asdict(self), **changes})


FIELD_NAMES = tuple(f.name for f in fields(RunConfig))


def from_mapping(values: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Build a validated config from ``values`` over ``base`` (defaults if None)."""
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; valid settings: {', '.join(FIELD_NAMES)}"
        )
    merged = dataclasses.asdict(base or RunConfig())
    merged.update({k: v for k, v in values.items()})
    for key in ("fps", "max_speed_pct", "deadline_ms", "max_frame_age_ms", "stall_timeout_ms",
                "status_interval_s"):
        if isinstance(merged[key], int) and not isinstance(merged[key], bool):
            merged[key] = float(merged[key])
    for key in ("camera",):
        if isinstance(merged[key], int) and not isinstance(merged[key], bool):
            merged[key] = str(merged[key])
    return RunConfig(**merged).validate()


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (keys may use ``-`` or ``_``)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; pass --config PATH") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def resolve(config_file: str | Path | None, overrides: Mapping[str, Any]) -> RunConfig:
    """Defaults < YAML file < ``overrides`` (CLI flags; ``None`` values are ignored)."""
    base = from_mapping(load_yaml(config_file)) if config_file else RunConfig()
    return from_mapping({k: v for k, v in overrides.items() if v is not None}, base)
