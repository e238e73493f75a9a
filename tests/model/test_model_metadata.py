"""model_metadata.json -> ModelMetadata: every real file, plus synthetic edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from car_runtime.errors import MetadataError, ModelError
from car_runtime.model.metadata import (
    ContinuousActionSpace,
    DiscreteActionSpace,
    load_metadata,
    parse_metadata,
)

# Expected outcome per real file: (sensors, algorithm, space type, action count, version,
# runnable?). "llm" = refused at parse time naming neural_network.
D, C = "discrete", "continuous"
FFC, STEREO, OBS = "FRONT_FACING_CAMERA", "STEREO_CAMERAS", "observation"
REAL_FILES: dict[str, tuple | str] = {
    "metadata-only/autosar-popcornsar-v5-stereo-lidar-continuous.json":
        (("SECTOR_LIDAR", STEREO), "clipped_ppo", C, 2, "5", "SECTOR_LIDAR"),
    "metadata-only/aws-dpr401-front_deep_single_speed_5steering.json":
        ((FFC,), "clipped_ppo", D, 5, None, True),
    "metadata-only/aws-dpr401-front_lidar_deep_two_speed_5steering.json":
        ((FFC, "LIDAR"), "clipped_ppo", D, 10, None, "LIDAR"),
    "metadata-only/aws-dpr401-front_lidar_shallow_two_speed_5steering.json":
        ((FFC, "LIDAR"), "clipped_ppo", D, 10, None, "LIDAR"),
    "metadata-only/aws-dpr401-front_shallow_continuous_ppo.json":
        ((FFC,), "clipped_ppo", C, 2, "4", True),
    "metadata-only/aws-dpr401-front_shallow_continuous_sac.json":
        ((FFC,), "sac", C, 2, None, True),
    "metadata-only/aws-dpr401-stereo_deep_two_speed_5steering.json":
        ((STEREO,), "clipped_ppo", D, 10, None, True),
    "metadata-only/aws-dpr401-stereo_lidar_shallow_single_speed_5steering.json":
        ((STEREO, "LIDAR"), "clipped_ppo", D, 5, None, "LIDAR"),
    "metadata-only/aws-guidance-console-v5-ppo-continuous.json":
        ((FFC,), "clipped_ppo", C, 2, "5", True),
    "metadata-only/aws-guidance-reinvent2019-testmodel-v3-discrete9.json":
        ((FFC,), "clipped_ppo", D, 9, "3", True),
    "metadata-only/cdthompson-2019-legacy-discrete21.json":
        ((OBS,), "clipped_ppo", D, 21, None, True),
    "metadata-only/cdthompson-2019-legacy-discrete5.json":
        ((OBS,), "clipped_ppo", D, 5, None, True),
    "metadata-only/deepracer-analysis-console-v4.0-discrete14-lidarconfig.json":
        ((FFC,), "clipped_ppo", D, 14, "4.0", True),
    "metadata-only/deepracer-analysis-sample-model-v3-discrete12.json":
        ((FFC,), "clipped_ppo", D, 12, "3", True),
    "metadata-only/deepracer-utils-drfc1-v4-discrete14.json":
        ((FFC,), "clipped_ppo", D, 14, "4", True),
    "metadata-only/drfc-default-ppo-continuous-v5.json":
        ((FFC,), "clipped_ppo", C, 2, "5", True),
    "metadata-only/drfc-default-ppo-discrete-v5.json":
        ((FFC,), "clipped_ppo", D, 5, "5", True),
    "metadata-only/drfc-default-sac-continuous-v4.json":
        ((FFC,), "sac", C, 2, "4", True),
    "metadata-only/eswc2024-v5-stereo-continuous-asym.json":
        ((STEREO,), "clipped_ppo", C, 2, "5", True),
    "metadata-only/kunalrajpal-console-v5-discrete10.json":
        ((FFC,), "clipped_ppo", D, 10, "5", True),
    "metadata-only/on-the-spot-sac-stereo-continuous-v5.json":
        ((STEREO,), "sac", C, 2, "5", True),
    "metadata-only/simapp-llm-mistral-continuous-v5.json": "llm",
    "ir-xml-no-weights/autosar-popcornsar-stereo-lidar-cont/model_metadata.json":
        (("SECTOR_LIDAR", STEREO), "clipped_ppo", C, 2, "5", "SECTOR_LIDAR"),
    "ir-xml-no-weights/eswc2024-stereo-cont-ir11/model_metadata.json":
        ((STEREO,), "clipped_ppo", C, 2, "5", True),
}


def test_every_real_file_has_an_expectation(metadata_dir: Path):
    found = {p.relative_to(metadata_dir).as_posix() for p in metadata_dir.rglob("*.json")}
    assert found == set(REAL_FILES)


@pytest.mark.parametrize("rel", sorted(REAL_FILES))
def test_real_metadata(metadata_dir: Path, rel: str):
    expected = REAL_FILES[rel]
    if expected == "llm":
        with pytest.raises(MetadataError, match="neural_network 'LLM'"):
            load_metadata(metadata_dir / rel)
        return
    sensors, algo, space_type, size, version, runnable = expected
    meta = load_metadata(metadata_dir / rel)
    assert meta.sensors == sensors
    assert meta.training_algorithm == algo
    assert meta.input_head == ("policy" if algo == "sac" else "main")
    assert meta.action_space_type == space_type
    assert meta.action_space.size == size
    assert meta.version == version
    space_cls = DiscreteActionSpace if space_type == D else ContinuousActionSpace
    assert isinstance(meta.action_space, space_cls)
    if runnable is True:
        meta.check_runnable()
    else:
        with pytest.raises(MetadataError, match=rf"needs {runnable} input.*cannot feed"):
            meta.check_runnable()


def test_real_discrete_values_and_positions(metadata_dir: Path):
    meta = load_metadata(metadata_dir / "metadata-only/cdthompson-2019-legacy-discrete5.json")
    raw = json.loads((metadata_dir / "metadata-only/cdthompson-2019-legacy-discrete5.json").read_text())
    assert [a.index for a in meta.action_space.actions] == list(range(5))
    assert [(a.steering_deg, a.speed_mps) for a in meta.action_space.actions] == [
        (float(r["steering_angle"]), float(r["speed"])) for r in raw["action_space"]
    ]
    assert meta.action_space.max_speed_mps == max(abs(float(r["speed"])) for r in raw["action_space"])
    assert meta.action_space.max_steering_deg == 15.0


def test_real_lidar_config_kept(metadata_dir: Path):
    meta = load_metadata(
        metadata_dir / "metadata-only/deepracer-analysis-console-v4.0-discrete14-lidarconfig.json"
    )
    assert meta.lidar_config == {"num_sectors": 8, "num_values_per_sector": 8, "clipping_dist": 2.0}
    meta.check_runnable()  # a lidar_config alone does not make it a lidar model


def test_real_asymmetric_continuous(metadata_dir: Path):
    space = load_metadata(metadata_dir / "metadata-only/eswc2024-v5-stereo-continuous-asym.json").action_space
    assert (space.steering_low_deg, space.steering_high_deg) == (-18.0, 23.0)
    assert (space.speed_low_mps, space.speed_high_mps) == (0.5, 1.5)
    assert space.max_steering_deg == 23.0  # stock: high, not max |.|


# ---- synthetic -----------------------------------------------------------------------------

def disc(*actions, **extra) -> dict:
    return {"action_space": [dict(a) if isinstance(a, dict) else a for a in actions], **extra}


def cont(steer=(-30, 30), speed=(0.5, 1.0), **extra) -> dict:
    return {
        "action_space": {"steering_angle": {"low": steer[0], "high": steer[1]},
                         "speed": {"low": speed[0], "high": speed[1]}},
        "action_space_type": "continuous", **extra,
    }


A = {"steering_angle": 0, "speed": 1}


def test_missing_keys_take_stock_defaults():
    meta = parse_metadata(disc(A))
    assert meta.sensors == ("observation",)
    assert meta.training_algorithm == "clipped_ppo" and meta.input_head == "main"
    assert meta.action_space_type == "discrete"
    assert meta.neural_network is None and meta.version is None and meta.lidar_config is None
    meta.check_runnable()


@pytest.mark.parametrize(
    "version, expected",
    [("5", "5"), (5, "5"), (4.0, "4.0"), ("3.0", "3.0"), (None, None)],
)
def test_version_as_string_or_number(version, expected):
    data = disc(A, sensor=["FRONT_FACING_CAMERA"])
    if version is not None:
        data["version"] = version
    assert parse_metadata(data).version == expected


def test_list_position_wins_over_index():
    meta = parse_metadata(disc(
        {"steering_angle": 10, "speed": 1, "index": 3},
        {"steering_angle": -10, "speed": 2, "index": 0},
        {"steering_angle": 0, "speed": 3},  # index absent
    ))
    acts = meta.action_space.actions
    assert [a.index for a in acts] == [0, 1, 2]
    assert [(a.steering_deg, a.speed_mps) for a in acts] == [(10, 1), (-10, 2), (0, 3)]


def test_numbers_as_strings_are_read():
    meta = parse_metadata(disc({"steering_angle": "-15.5", "speed": "0.75"}))
    assert meta.action_space.actions[0].steering_deg == -15.5
    assert meta.action_space.actions[0].speed_mps == 0.75


def test_sensor_given_as_a_string():
    assert parse_metadata(disc(A, sensor="STEREO_CAMERAS")).sensors == ("STEREO_CAMERAS",)


def test_sac_head_and_case_tolerance():
    meta = parse_metadata(cont(training_algorithm=" SAC ", action_space_type="Continuous"))
    assert meta.training_algorithm == "sac" and meta.input_head == "policy"
    assert meta.action_space_type == "continuous"


@pytest.mark.parametrize(
    "data, message",
    [
        (disc(A, sensor=["DISCRETIZED_SECTOR_LIDAR"]), "unknown sensor DISCRETIZED_SECTOR_LIDAR"),
        (disc(A, sensor=["FRONT_CAMERA"]), "unknown sensor FRONT_CAMERA"),
        (disc(A, sensor=[]), "sensor must be a non-empty list"),
        (disc(A, sensor=7), "sensor must be a non-empty list"),
        ({"action_space": []}, "action_space is empty"),
        ({"sensor": ["FRONT_FACING_CAMERA"]}, "no action_space"),
        ([1, 2], "must be a JSON object"),
        (cont(steer=(30, -30)), r"steering_angle has high -30 <= low 30"),
        (cont(speed=(1.0, 1.0)), r"speed has high 1 <= low 1"),
        (cont(speed=(2.0, 1.0)), r"speed has high 1 <= low 2"),
        (disc({"steering_angle": "left", "speed": 1}), "action 0 steering_angle must be a number"),
        (disc(A, {"steering_angle": 0, "speed": None}), "action 1 speed must be a number"),
        (disc(A, {"steering_angle": True, "speed": 1}), "action 1 steering_angle must be a number"),
        (disc({"steering_angle": float("nan"), "speed": 1}), "must be finite"),
        (disc({"steering_angle": 0}), "action 0 must have steering_angle and speed"),
        (disc(A, "fast"), "action 1 must have steering_angle and speed"),
        (cont(steer=("a", 30)), "steering_angle.low must be a number"),
        ({"action_space": {"steering_angle": {"low": -30}, "speed": {"low": 1, "high": 2}},
          "action_space_type": "continuous"}, "steering_angle needs low and high"),
        ({"action_space": [A], "action_space_type": "continuous"}, "action_space is not"),
        ({"action_space": {"steering_angle": {}, "speed": {}}}, "discrete but action_space is not a list"),
        (disc(A, action_space_type="box"), "unknown action_space_type 'box'"),
        (disc(A, training_algorithm="ppo"), "unknown training_algorithm 'ppo'"),
        (disc(A, neural_network="LLM"), "neural_network 'LLM' is not a DeepRacer CNN"),
        (disc(A, lidar_config=[64]), "lidar_config must be an object"),
    ],
)
def test_refused_with_a_message(data, message):
    with pytest.raises(MetadataError, match=message):
        parse_metadata(data)


def test_metadata_error_is_a_model_error():
    assert issubclass(MetadataError, ModelError)


@pytest.mark.parametrize(
    "sensors, message",
    [
        (["LIDAR"], "needs LIDAR input"),
        (["FRONT_FACING_CAMERA", "SECTOR_LIDAR"], "needs SECTOR_LIDAR input"),
        (["FRONT_FACING_CAMERA", "STEREO_CAMERAS"], "needs exactly one"),
        (["LEFT_CAMERA", "FRONT_FACING_CAMERA"], "needs exactly one"),
    ],
)
def test_check_runnable_refuses(sensors, message):
    meta = parse_metadata(disc(A, sensor=sensors))
    with pytest.raises(MetadataError, match=message):
        meta.check_runnable()


@pytest.mark.parametrize("sensor", ["observation", "FRONT_FACING_CAMERA", "LEFT_CAMERA", "STEREO_CAMERAS"])
def test_check_runnable_accepts_one_camera(sensor):
    meta = parse_metadata(disc(A, sensor=[sensor]))
    meta.check_runnable()
    assert meta.camera_sensors == (sensor,)
    assert meta.is_stereo == (sensor == "STEREO_CAMERAS")


def test_load_metadata_file_errors(tmp_path: Path):
    with pytest.raises(MetadataError, match="not found"):
        load_metadata(tmp_path / "model_metadata.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"action_space": [')
    with pytest.raises(MetadataError, match="not valid JSON"):
        load_metadata(bad)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(MetadataError, match="not UTF-8 text"):
        load_metadata(binary)
