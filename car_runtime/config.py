"""Validated drive configuration. The YAML file, CLI flags and ROS parameters all land here.

Precedence: defaults < YAML file (``--config``) < CLI flags. Unknown keys and bad values raise
:class:`~car_runtime.errors.ConfigError` naming the key and the accepted values; every key is
type-checked before anything copies or prints the value (error messages show a bounded repr).
The YAML file is read with :mod:`car_runtime.safe_files`: a regular file of at most
:data:`MAX_CONFIG_BYTES`, strict UTF-8, no aliases to lists/mappings, bounded nesting and
integers -- a bad file is one ``error:`` line, never a traceback or a hang.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from car_runtime.errors import ConfigError
from car_runtime.safe_files import show

DEFAULT_CALIBRATION = "/opt/aws/deepracer/calibration.json"
MAX_CONFIG_BYTES = 64 * 1024


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
    # the fail-safe guardian process (real outputs only)
    guardian: bool = True
    # the race-day web cockpit
    web: str | None = None  # "[HOST:]PORT" to serve the cockpit; None = off
    web_password_file: str = "/var/lib/car-runtime/web-password"
    web_deadman_ms: float = 500.0  # armed only while the controlling page's heartbeats arrive; 0 = off
    web_video_fps: float = 15.0  # live view rate cap
    models_dir: str = "/opt/car-runtime/models"  # models the cockpit lists, uploads to, loads
    # the flight recorder
    record_dir: str | None = None  # record each driving session as a rosbag2 here; None = off
    record_storage: str = "mcap"  # mcap | sqlite3
    record_min_free_mb: float = 200.0  # stop recording (keep driving) below this much free space

    def validate(self) -> "RunConfig":
        from car_runtime.model.policy import PRECISIONS
        from car_runtime.vision.preprocess import MODES

        def number(name: str, lo: float, hi: float, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number, got {show(value)}")
            if (isinstance(value, float) and math.isnan(value)) or not (lo <= value <= hi):
                raise ConfigError(f"{name} = {show(value)} is outside {lo:g}..{hi:g}")

        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ConfigError(f"model must be the path of a model (a string), got "
                              f"{show(self.model)}")
        for name in ("camera", "output", "calibration", "device", "precision", "preprocess",
                     "record_storage", "web_password_file", "models_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name} must be a non-empty string, got "
                                  f"{show(getattr(self, name))}")
        if self.threads is not None and (isinstance(self.threads, bool)
                                         or not isinstance(self.threads, int)):
            raise ConfigError(f"threads must be a whole number, got {show(self.threads)}")

        number("max_speed_pct", 0, 100)
        number("deadline_ms", 10, 10_000)
        number("max_frame_age_ms", 1, 10_000)
        number("stall_timeout_ms", 100, 600_000)
        number("fps", 0.1, 1000, allow_none=True)
        number("threads", 1, 256, allow_none=True)
        number("status_interval_s", 0, 3600)
        number("web_deadman_ms", 0, 60_000)
        if 0 < self.web_deadman_ms < 50:
            raise ConfigError(f"web_deadman_ms = {self.web_deadman_ms:g} is too short; use 50 or "
                              "more (default 500), or 0 to turn the deadman off")
        number("web_video_fps", 0, 60)
        number("record_min_free_mb", 0, 1_000_000)
        if self.record_storage not in ("mcap", "sqlite3"):
            raise ConfigError(f"record_storage {self.record_storage!r} is not one of mcap, sqlite3")
        for name in ("web", "record_dir"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{name} must be a non-empty string, or left out to turn it off")
        if self.web is not None:
            parse_web_address(self.web)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.preprocess not in MODES:
            raise ConfigError(f"preprocess {self.preprocess!r} is not one of {', '.join(MODES)}")
        for name in ("arm", "sac_squash", "guardian"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {show(getattr(self, name))}")
        from car_runtime.actuation.output import parse_output_spec

        parse_output_spec(self.output)
        return self

    def replace(self, **changes: Any) -> "RunConfig":
        """A validated copy with ``changes`` applied."""
        return from_mapping({**dataclasses.asdict(self), **changes})


#: Each command's default max speed: run (and the service, the ROS node) starts like the stock
#: slider; replay and inspect show the model's full range; bench keeps the motor at neutral.
MAX_SPEED_DEFAULTS = {"run": RunConfig.max_speed_pct, "ros": RunConfig.max_speed_pct,
                      "replay": 100.0, "inspect": 100.0, "bench": 0.0}
_MAX_SPEED_WHY = {"run": "like the stock slider", "ros": "like the stock slider",
                  "replay": "the model's full speed", "inspect": "the model's full speed",
                  "bench": "the motor stays at neutral"}


def describe_max_speed(pct: float, command: str) -> str:
    """``max speed 50 % (run's default, like the stock slider; ...)``: every command says
    which max speed is in force and, when it is that command's default, that it is."""
    text = f"max speed {pct:g} %"
    if pct == MAX_SPEED_DEFAULTS[command]:
        change = "-p max_speed_pct:=P" if command == "ros" else "--max-speed-pct"
        text += f" ({command}'s default, {_MAX_SPEED_WHY[command]}; {change} to change)"
    return text


FIELD_NAMES = tuple(f.name for f in fields(RunConfig))
_FLOAT_FIELDS = tuple(f.name for f in fields(RunConfig) if str(f.type).startswith("float"))
DEFAULT_WEB_HOST = "0.0.0.0"
DEFAULT_WEB_PORT = 8080


def parse_web_address(spec: str | int) -> tuple[str, int]:
    """``"[HOST:]PORT"`` (or a bare port number) -> ``(host, port)``; host defaults to all
    interfaces. ConfigError naming the fix otherwise."""
    text = str(spec).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = DEFAULT_WEB_HOST
    host = host.strip("[]") or DEFAULT_WEB_HOST
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(
            f"web address {text!r} is not [HOST:]PORT; e.g. web: {DEFAULT_WEB_PORT} or "
            f"web: 127.0.0.1:{DEFAULT_WEB_PORT}"
        )
    return host, int(port_text)


def from_mapping(values: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Build a validated config from ``values`` over ``base`` (defaults if None)."""
    bad_keys = [k for k in values if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError(f"setting names must be words, got {show(bad_keys[0])}")
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        names = ", ".join(show(k) for k in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise ConfigError(
            f"unknown setting(s) {names}; valid settings: {', '.join(FIELD_NAMES)}"
        )
    merged = dataclasses.asdict(base or RunConfig())
    merged.update({k: v for k, v in values.items()})
    for key in _FLOAT_FIELDS:
        if isinstance(merged[key], int) and not isinstance(merged[key], bool):
            try:
                merged[key] = float(merged[key])
            except OverflowError:
                raise ConfigError(f"{key} = {show(merged[key])} is far too large") from None
    for key in ("camera", "web"):
        if isinstance(merged[key], int) and not isinstance(merged[key], bool):
            merged[key] = str(merged[key])
    return RunConfig(**merged).validate()


def load_yaml(path: str | Path, *, max_bytes: int = MAX_CONFIG_BYTES) -> dict[str, Any]:
    """Read a YAML config file into a dict (keys may use ``-`` or ``_``); ConfigError (one line
    naming the fix) for anything unusable -- see the module docstring."""
    from car_runtime.safe_files import decode_utf8, load_yaml_text, read_small_file

    path = Path(path)
    try:
        text = decode_utf8(read_small_file(path, max_bytes), f"config file {path}")
        data = load_yaml_text(text, f"config file {path}")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; pass --config PATH") from None
    except PermissionError:
        raise ConfigError(f"cannot read config file {path}: permission denied; make it "
                          "readable by this user") from None
    except ValueError as exc:  # the message names the file and the problem
        raise ConfigError(f"{exc}; fix it (see systemd/config.example.yaml)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}; fix it "
                          "(see systemd/config.example.yaml)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting: value")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"config file {path}: setting names must be words, got {show(bad[0])}")
    return {k.replace("-", "_"): v for k, v in data.items()}


def resolve(config_file: str | Path | None, overrides: Mapping[str, Any]) -> RunConfig:
    """Defaults < YAML file < ``overrides`` (CLI flags; ``None`` values are ignored)."""
    base = from_mapping(load_yaml(config_file)) if config_file else RunConfig()
    return from_mapping({k: v for k, v in overrides.items() if v is not None}, base)
