"""The ``car_runtime`` node's ROS parameters: names, defaults, ranges, and their mapping onto
:class:`~car_runtime.config.RunConfig` (the same validation as the CLI and the YAML file).

No rclpy import here: the launch-file test and the docs read this table without ROS installed.

ROS parameters cannot be "unset", so two settings use 0 for "not set": ``fps`` (0 = the source's
own rate) and ``threads`` (0 = all cores). Names differ from the CLI in two places, following
ROS habits: ``model_path`` (``--model``) and ``calibration_path`` (``--calibration``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from car_runtime.config import DEFAULT_CALIBRATION, RunConfig, from_mapping
from car_runtime.errors import ConfigError

NODE_NAME = "car_runtime"
#: The console script and subcommand a launch file runs (``car-runtime ros``).
EXECUTABLE = "car-runtime"
EXECUTABLE_ARGS = ("ros",)

Value = bool | int | float | str


@dataclass(frozen=True)
class RosParam:
    """One declared parameter. ``field`` is the RunConfig field (None: node-only setting);
    ``live`` = may change while the node runs; ``range`` = inclusive numeric bounds."""

    name: str
    default: Value
    description: str
    field: str | None = None
    live: bool = False
    range: tuple[float, float] | None = None
    unset_zero: bool = False  # 0 means "not set" (None in RunConfig)


_FIXED = "fixed at start-up: restart the node to change it"

PARAMETERS: tuple[RosParam, ...] = (
    RosParam("model_path", "", "model.tar.gz, model folder or model.xml (required). Changing it "
             "loads the new model at neutral; a model that fails to load is refused and the old "
             "one kept", field="model", live=True),
    RosParam("camera", "auto", "auto | camera index | /dev/videoN | video file | image folder | "
             "rosbag2 folder", field="camera"),
    RosParam("fps", 0.0, "pace an image folder / override a video's rate (0 = the source's own)",
             field="fps", range=(0.0, 1000.0), unset_zero=True),
    RosParam("output", "sysfs", "sysfs[:PWM_DIR] | serial:URL | record:PATH (JSON lines)",
             field="output"),
    RosParam("calibration_path", DEFAULT_CALIBRATION, "stock calibration.json (stock defaults if "
             "the file does not exist)", field="calibration"),
    RosParam("max_speed_pct", 50.0, "throttle scale 0-100, like the stock max-speed slider; "
             "applies live", field="max_speed_pct", live=True, range=(0.0, 100.0)),
    RosParam("arm", False, "start armed (drive at once); otherwise neutral until "
             "~/enable true", field="arm"),
    RosParam("deadline_ms", 100.0, "neutral if no fresh command within this", field="deadline_ms",
             range=(10.0, 10_000.0)),
    RosParam("max_frame_age_ms", 100.0, "never act on a frame older than this",
             field="max_frame_age_ms", range=(1.0, 10_000.0)),
    RosParam("stall_timeout_ms", 2000.0, "a stage stuck this long: neutral and exit 5",
             field="stall_timeout_ms", range=(100.0, 600_000.0)),
    RosParam("device", "CPU", "OpenVINO device: CPU, GPU, AUTO", field="device"),
    RosParam("precision", "f32", "inference precision: f32 | f16 | bf16", field="precision"),
    RosParam("preprocess", "stock", "stock (identical to the car) | training | fast",
             field="preprocess"),
    RosParam("threads", 0, "inference threads (0 = all cores)", field="threads",
             range=(0, 256), unset_zero=True),
    RosParam("sac_squash", False, "SAC models: tanh-squash outputs as in training",
             field="sac_squash"),
    RosParam("status_interval_s", 1.0, "period of ~/status diagnostics (0 = off)",
             field="status_interval_s", range=(0.0, 3600.0)),
    RosParam("record_dir", "", "flight recorder: record each driving session as a rosbag2 in "
             "this folder ('' = off)", field="record_dir"),
    RosParam("record_storage", "mcap", "flight recorder storage: mcap | sqlite3",
             field="record_storage"),
    RosParam("record_min_free_mb", 200.0, "stop recording (keep driving) below this much free "
             "space", field="record_min_free_mb", range=(0.0, 1_000_000.0)),
    RosParam("debug_image_hz", 0.0, "rate of ~/debug_image, the mono8 model input (0 = off); "
             "applies live", live=True, range=(0.0, 30.0)),
)

#: RunConfig fields the node does not serve (``car-runtime run`` only): the web cockpit.
NOT_PARAMETERS: frozenset[str] = frozenset({
    "web", "web_password_file", "web_deadman_ms", "web_video_fps", "models_dir",
    "guardian",
})

BY_NAME: dict[str, RosParam] = {p.name: p for p in PARAMETERS}
NAMES: tuple[str, ...] = tuple(p.name for p in PARAMETERS)


def _check_range(p: RosParam, value: Any) -> None:
    if p.range is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"parameter {p.name} must be a number, got {value!r}")
    lo, hi = p.range
    if not lo <= value <= hi:
        raise ConfigError(f"parameter {p.name} = {value!r} is outside {lo:g}..{hi:g}")


def run_config(values: Mapping[str, Value], base: RunConfig | None = None) -> RunConfig:
    """Map ROS parameter values onto a validated RunConfig (over ``base``); node-only
    parameters are range-checked and otherwise ignored. Raises ConfigError naming the fix."""
    unknown = sorted(set(values) - set(NAMES))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(NAMES)}")
    fields: dict[str, Any] = {}
    for name, value in values.items():
        p = BY_NAME[name]
        _check_range(p, value)
        if p.field is None:
            continue
        if p.unset_zero and value == 0:
            value = None
        elif p.field in ("model", "record_dir") and value == "":
            value = None
        fields[p.field] = value
    try:
        return from_mapping(fields, base)
    except ConfigError as exc:
        raise ConfigError(f"{_ros_names(str(exc))}") from None


def _ros_names(message: str) -> str:
    """Say ``model_path``/``calibration_path`` where the config speaks of model/calibration."""
    for p in PARAMETERS:
        if p.field and p.field != p.name and message.startswith(f"{p.field} "):
            return f"{p.name}{message[len(p.field):]}"
    return message


def live_change_refusal(name: str) -> str | None:
    """Why parameter ``name`` cannot change while running (None if it can)."""
    p = BY_NAME.get(name)
    if p is None:
        return f"unknown parameter {name}; valid: {', '.join(NAMES)}"
    if p.live:
        return None
    if name == "arm":
        return "arm only sets the start-up state; call ~/enable (std_srvs/SetBool) to arm or disarm"
    return f"{name} is {_FIXED} (--ros-args -p {name}:=...)"
