"""``model_metadata.json`` -> typed :class:`ModelMetadata`, with the stock car's defaults.

Stock rules (webserver_pkg/models.py, navigation_pkg): missing ``sensor`` -> ``["observation"]``,
missing ``training_algorithm`` -> ``clipped_ppo``, missing ``action_space_type`` ->
``discrete``; the list position of a discrete action is its id (``index`` is ignored);
continuous spaces need ``high > low``. ``neural_network`` and ``version`` are informational.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from car_runtime.errors import MetadataError
from car_runtime.safe_files import show

log = logging.getLogger(__name__)

MAX_METADATA_BYTES = 1024 * 1024  # real files are under 10 kB
#: Sanity bounds: the console allows +-30 degrees and 0.1..4 m/s; beyond these it is not a
#: DeepRacer action space (a typo or damage), and the car would not do anything sensible.
MAX_ABS_STEERING_DEG = 360.0
MAX_ABS_SPEED_MPS = 1000.0
MAX_ACTIONS = 1000

#: Sensors the stock car knows, with the camera channel count (None: not a camera).
SENSOR_CHANNELS: dict[str, int | None] = {
    "observation": 1,
    "FRONT_FACING_CAMERA": 1,
    "LEFT_CAMERA": 1,
    "STEREO_CAMERAS": 2,
    "LIDAR": None,
    "SECTOR_LIDAR": None,
}
CAMERA_SENSORS = tuple(name for name, ch in SENSOR_CHANNELS.items() if ch is not None)
LIDAR_SENSORS = ("LIDAR", "SECTOR_LIDAR")
TRAINING_ALGORITHMS = ("clipped_ppo", "sac")
NEURAL_NETWORKS = (
    "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
    "DEEP_CONVOLUTIONAL_NETWORK",
    "DEEP_CONVOLUTIONAL_NETWORK_DEEP",
)
#: Input head name per algorithm (model_optimizer_pkg INPUT_HEAD_NAME_MAPPING).
INPUT_HEAD = {"clipped_ppo": "main", "sac": "policy"}


@dataclass(frozen=True)
class DiscreteAction:
    index: int
    steering_deg: float
    speed_mps: float


@dataclass(frozen=True)
class DiscreteActionSpace:
    actions: tuple[DiscreteAction, ...]

    @property
    def size(self) -> int:
        return len(self.actions)

    @property
    def max_steering_deg(self) -> float:
        """Stock scale: max |steering_angle| over the actions."""
        return max(abs(a.steering_deg) for a in self.actions)

    @property
    def max_speed_mps(self) -> float:
        """Stock scale: max |speed| over the actions."""
        return max(abs(a.speed_mps) for a in self.actions)


@dataclass(frozen=True)
class ContinuousActionSpace:
    steering_low_deg: float
    steering_high_deg: float
    speed_low_mps: float
    speed_high_mps: float

    size = 2  # model outputs: (steering, speed)

    @property
    def max_steering_deg(self) -> float:
        """Stock scale: ``high`` (not max |.|)."""
        return self.steering_high_deg

    @property
    def max_speed_mps(self) -> float:
        return self.speed_high_mps


ActionSpace = Union[DiscreteActionSpace, ContinuousActionSpace]


@dataclass(frozen=True)
class ModelMetadata:
    sensors: tuple[str, ...]
    training_algorithm: str
    action_space_type: str
    action_space: ActionSpace
    neural_network: str | None = None
    version: str | None = None
    lidar_config: dict | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def camera_sensors(self) -> tuple[str, ...]:
        return tuple(s for s in self.sensors if s in CAMERA_SENSORS)

    @property
    def input_head(self) -> str:
        return INPUT_HEAD[self.training_algorithm]

    @property
    def is_stereo(self) -> bool:
        return "STEREO_CAMERAS" in self.sensors

    def check_runnable(self) -> None:
        """Raise :class:`MetadataError` if car-runtime cannot feed this sensor set."""
        lidar = [s for s in self.sensors if s in LIDAR_SENSORS]
        if lidar:
            raise MetadataError(
                f"this model needs {' and '.join(lidar)} input, which car-runtime cannot feed "
                "(camera-only runtime; it never feeds zeros in place of a sensor): "
                "train a camera-only model (sensor FRONT_FACING_CAMERA or STEREO_CAMERAS)"
            )
        cams = self.camera_sensors
        if len(cams) != 1:
            raise MetadataError(
                f"model lists camera sensors {list(cams) or 'none'}; car-runtime needs exactly one "
                "of observation, FRONT_FACING_CAMERA, LEFT_CAMERA, STEREO_CAMERAS"
            )


def _number(value: Any, what: str, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MetadataError(f"{what} must be a number, got {show(value)}; fix model_metadata.json")
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise MetadataError(
            f"{what} must be a number, got {show(value)}; fix model_metadata.json"
        ) from None
    if not math.isfinite(out):
        raise MetadataError(f"{what} must be finite, got {show(value)}; fix model_metadata.json")
    if abs(out) > limit:
        raise MetadataError(f"{what} = {out:g} is beyond +-{limit:g}: not a DeepRacer action "
                            "space; fix model_metadata.json")
    return out


def _parse_discrete(items: Any) -> DiscreteActionSpace:
    if not isinstance(items, list):
        raise MetadataError(
            "action_space_type is discrete but action_space is not a list of "
            '{"steering_angle", "speed"}; fix action_space or action_space_type'
        )
    if not items:
        raise MetadataError("action_space is empty; the model needs at least one action")
    if len(items) > MAX_ACTIONS:
        raise MetadataError(f"action_space has {len(items)} actions (more than {MAX_ACTIONS}); "
                            "fix model_metadata.json")
    actions = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "steering_angle" not in item or "speed" not in item:
            raise MetadataError(
                f"action {i} must have steering_angle and speed, got {show(item)}; "
                "fix model_metadata.json"
            )
        actions.append(
            DiscreteAction(
                index=i,  # list position is the action id, as on the car
                steering_deg=_number(item["steering_angle"], f"action {i} steering_angle",
                                     MAX_ABS_STEERING_DEG),
                speed_mps=_number(item["speed"], f"action {i} speed", MAX_ABS_SPEED_MPS),
            )
        )
    return DiscreteActionSpace(tuple(actions))


def _parse_continuous(space: Any) -> ContinuousActionSpace:
    if not isinstance(space, dict):
        raise MetadataError(
            "action_space_type is continuous but action_space is not "
            '{"steering_angle": {"low", "high"}, "speed": {"low", "high"}}; fix model_metadata.json'
        )
    bounds = {}
    for key in ("steering_angle", "speed"):
        rng = space.get(key)
        if not isinstance(rng, dict) or "low" not in rng or "high" not in rng:
            raise MetadataError(
                f"continuous action_space.{key} needs low and high, got {show(rng)}; "
                "fix model_metadata.json"
            )
        limit = MAX_ABS_STEERING_DEG if key == "steering_angle" else MAX_ABS_SPEED_MPS
        low = _number(rng["low"], f"action_space.{key}.low", limit)
        high = _number(rng["high"], f"action_space.{key}.high", limit)
        if high <= low:
            raise MetadataError(
                f"continuous action_space.{key} has high {high:g} <= low {low:g}; "
                "high must be greater than low"
            )
        bounds[key] = (low, high)
    return ContinuousActionSpace(*bounds["steering_angle"], *bounds["speed"])


def parse_metadata(data: Any) -> ModelMetadata:
    """Validate a decoded ``model_metadata.json``; raise :class:`MetadataError` naming the fix."""
    if not isinstance(data, dict):
        raise MetadataError("model_metadata.json must be a JSON object")
    if "action_space" not in data:
        raise MetadataError("model_metadata.json has no action_space; re-export the model")

    sensors_raw = data.get("sensor", ["observation"])
    if isinstance(sensors_raw, str):
        sensors_raw = [sensors_raw]
    if not isinstance(sensors_raw, list) or not sensors_raw:
        raise MetadataError(f"sensor must be a non-empty list, got {show(sensors_raw)}")
    if not all(isinstance(x, str) for x in sensors_raw):
        raise MetadataError(f"sensor must list names, got {show(sensors_raw)}")
    sensors = tuple(x.strip() for x in sensors_raw)
    unknown = [s for s in sensors if s not in SENSOR_CHANNELS]
    if unknown:
        raise MetadataError(
            f"unknown sensor {', '.join(u[:40] for u in unknown[:5])}: the car's sensors are "
            f"{', '.join(SENSOR_CHANNELS)} (the sensor configurations of the vehicle and the "
            "trained model must match)"
        )

    algo = str(data.get("training_algorithm", "clipped_ppo")).strip().lower()
    if algo not in TRAINING_ALGORITHMS:
        raise MetadataError(
            f"unknown training_algorithm {show(data.get('training_algorithm'))}; "
            f"expected one of {', '.join(TRAINING_ALGORITHMS)}"
        )

    network = data.get("neural_network")
    if network is not None:
        network = str(network).strip()
        if network not in NEURAL_NETWORKS:
            raise MetadataError(
                f"neural_network {show(network)} is not a DeepRacer CNN "
                f"({', '.join(NEURAL_NETWORKS)}); car-runtime runs only CNN policies exported as "
                "model.pb"
            )

    space_raw = data["action_space"]
    if "action_space_type" in data:
        space_type = str(data["action_space_type"]).strip().lower()
    else:
        space_type = "discrete"
    if space_type == "discrete":
        space: ActionSpace = _parse_discrete(space_raw)
    elif space_type == "continuous":
        space = _parse_continuous(space_raw)
    else:
        raise MetadataError(
            f"unknown action_space_type {show(data['action_space_type'])}; "
            "expected discrete or continuous"
        )

    speeds = ([a.speed_mps for a in space.actions] if isinstance(space, DiscreteActionSpace)
              else [space.speed_high_mps])
    if max(speeds) <= 0:
        log.warning("every speed in the action space is <= 0 (max %g m/s): the car will reverse "
                    "or not move at all; the stock car accepts this, so it runs -- check "
                    "model_metadata.json if that is not what you trained", max(speeds))
    version = data.get("version")
    lidar = data.get("lidar_config")
    if lidar is not None and not isinstance(lidar, dict):
        raise MetadataError(f"lidar_config must be an object, got {show(lidar)}")
    return ModelMetadata(
        sensors=sensors,
        training_algorithm=algo,
        action_space_type=space_type,
        action_space=space,
        neural_network=network,
        version=None if version is None else str(version),
        lidar_config=lidar,
        raw=data,
    )


def load_metadata(path: str | Path) -> ModelMetadata:
    """Read and validate a ``model_metadata.json`` file (a regular file of at most
    :data:`MAX_METADATA_BYTES`, strict UTF-8 JSON, bounded nesting and integers)."""
    from car_runtime.safe_files import load_json, read_small_file

    path = Path(path)
    try:
        raw = read_small_file(path, MAX_METADATA_BYTES)
    except FileNotFoundError:
        raise MetadataError(
            f"{path} not found; put model_metadata.json next to the model (archive root)"
        ) from None
    except (OSError, ValueError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MetadataError(f"cannot read {path}: {detail}") from None
    try:
        data = load_json(raw, str(path))
    except ValueError as exc:
        raise MetadataError(f"{exc}; re-export the model") from None
    return parse_metadata(data)
