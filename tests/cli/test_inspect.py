"""``car-runtime inspect``, run as a real subprocess through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import car_runtime_cmd

import modelgen
from car_runtime.model.policy import load_model

TOP_KEYS = {"sensors", "training_algorithm", "action_space_type", "inputs", "outputs", "load_s"}
ACTION_KEYS = {"index", "steering_angle", "speed", "angle", "throttle"}
DECISION_KEYS = {"image", "output", "action_index", "steering_angle", "speed", "angle", "throttle"}


def inspect(*args: object, expect: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*car_runtime_cmd(), "inspect", *map(str, args)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == expect, proc.stderr
    return proc


def inspect_json(*args: object) -> dict:
    return json.loads(inspect(*args, "--json").stdout)


def stock_grey(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return cv2.cvtColor(cv2.resize(bgr, (160, 120), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2GRAY)


def stock_throttle(speed: float, max_speed: float, pct: float) -> float:
    a, b = -1.2 / max_speed**2, 2.2 / max_speed
    return pct / 100 * max(-1.0, min(1.0, a * speed**2 + b * speed))


@pytest.fixture(scope="module")
def images(footage_dir: Path, footage_seq_dir: Path) -> list[Path]:
    return [footage_dir / "sim-demo-stills-640x480" / "dr-demo-1.jpg",
            footage_dir / "sim-demo-stills-640x480" / "png-rgba" / "dr-demo-2.png",
            footage_seq_dir / "000042.jpg"]


def test_json_shape_and_values_discrete(demo_model: Path, images: list[Path]):
    args = [demo_model]
    for img in images:
        args += ["--image", img]
    out = inspect_json(*args)
    assert set(out) == TOP_KEYS | {"actions", "decisions"}
    assert out["sensors"] == ["FRONT_FACING_CAMERA"]
    assert out["training_algorithm"] == "clipped_ppo" and out["action_space_type"] == "discrete"
    assert isinstance(out["load_s"], float) and 0 < out["load_s"] < 60
    (inp,) = out["inputs"]
    assert set(inp) == {"name", "shape", "layout"}
    assert inp["name"].startswith("main_level/agent/main/online/network_0/FRONT_FACING_CAMERA/")
    assert inp["shape"] == [1, 120, 160, 1] and inp["layout"] == "NHWC"
    (outp,) = out["outputs"]
    assert set(outp) == {"name", "shape"} and outp["shape"] == [1, 10]
    assert "ppo_head_0/policy" in outp["name"]

    loaded = load_model(demo_model)  # the same model in-process, for independent expectations
    actions = loaded.metadata.action_space.actions
    max_steer = max(abs(a.steering_deg) for a in actions)
    max_speed = max(abs(a.speed_mps) for a in actions)
    assert [set(a) for a in out["actions"]] == [ACTION_KEYS] * 10
    for row, act in zip(out["actions"], actions, strict=True):
        assert row["index"] == act.index
        assert (row["steering_angle"], row["speed"]) == (act.steering_deg, act.speed_mps)
        assert row["angle"] == pytest.approx(act.steering_deg / max_steer, abs=1e-12)
        assert row["throttle"] == pytest.approx(stock_throttle(act.speed_mps, max_speed, 100), abs=1e-12)

    assert len(out["decisions"]) == len(images)
    for dec, img in zip(out["decisions"], images, strict=True):
        assert set(dec) == DECISION_KEYS and dec["image"] == str(img)
        expected = loaded.policy.run(stock_grey(img)[None, :, :, None])
        np.testing.assert_allclose(dec["output"], expected, atol=1e-6)
        i = int(np.argmax(expected))
        assert dec["action_index"] == i
        assert dec["steering_angle"] == actions[i].steering_deg and dec["speed"] == actions[i].speed_mps
        assert dec["angle"] == pytest.approx(actions[i].steering_deg / max_steer, abs=1e-12)
        expected_throttle = stock_throttle(actions[i].speed_mps, max_speed, 100)
        assert dec["throttle"] == pytest.approx(expected_throttle, abs=1e-12)


def test_json_continuous_has_no_action_table(slim_models, images):
    folder = slim_models["shallow_ffc_continuous_slim"]
    out = inspect_json(folder, "--image", images[0], "--max-speed-pct", "40", "--preprocess", "fast")
    assert set(out) == TOP_KEYS | {"decisions"}
    assert out["action_space_type"] == "continuous" and out["outputs"][0]["shape"] == [1, 2]
    (dec,) = out["decisions"]
    assert dec["action_index"] is None and len(dec["output"]) == 2
    loaded = load_model(folder)
    grey = cv2.imdecode(np.fromfile(images[0], np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_4)
    raw = loaded.policy.run(grey[None, :, :, None])
    np.testing.assert_allclose(dec["output"], raw, atol=1e-6)
    space = loaded.metadata.action_space
    v0, v1 = (float(np.clip(v, -1, 1)) for v in raw)
    steer = space.steering_low_deg + (v0 + 1) / 2 * (space.steering_high_deg - space.steering_low_deg)
    speed = space.speed_low_mps + (v1 + 1) / 2 * (space.speed_high_mps - space.speed_low_mps)
    assert dec["steering_angle"] == pytest.approx(steer, abs=1e-5)
    assert dec["angle"] == pytest.approx(steer / space.steering_high_deg, abs=1e-6)
    assert dec["throttle"] == pytest.approx(stock_throttle(speed, space.speed_high_mps, 40), abs=1e-6)


def test_max_speed_pct_scales_the_table(demo_model):
    full = inspect_json(demo_model)["actions"]
    part = inspect_json(demo_model, "--max-speed-pct", "40")["actions"]
    for a, b in zip(full, part, strict=True):
        assert b["throttle"] == pytest.approx(0.4 * a["throttle"], abs=1e-12)
        assert b["angle"] == a["angle"]


def test_nchw_ir_and_stereo_pair(tmp_path, images):
    net = modelgen.TinyNet(sensor="STEREO_CAMERAS", seed=31)
    folder = net.write_model_dir(tmp_path / "stereo-ir", fmt="ir_nchw")
    pair = f"{images[0]},{images[1]}"
    out = inspect_json(folder, "--image", pair)
    assert out["inputs"][0]["layout"] == "NCHW" and out["inputs"][0]["shape"] == [1, 2, 120, 160]
    assert out["sensors"] == ["STEREO_CAMERAS"]
    png = cv2.imread(str(images[1]), cv2.IMREAD_COLOR)
    right = cv2.cvtColor(cv2.resize(png, (160, 120), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2GRAY)
    x = np.stack([stock_grey(images[0]), right], axis=-1)[None]
    (dec,) = out["decisions"]
    assert dec["image"] == pair
    np.testing.assert_allclose(dec["output"], net.reference_output(x).ravel(), atol=1e-5)
    assert dec["action_index"] == int(np.argmax(net.reference_output(x)))


def test_readable_summary(demo_model, images):
    text = inspect(demo_model, "--image", images[0], "--max-speed-pct", "50").stdout
    assert "sensors     FRONT_FACING_CAMERA" in text
    assert "algorithm   clipped_ppo" in text
    assert "network     DEEP_CONVOLUTIONAL_NETWORK_DEEP" in text
    assert "FRONT_FACING_CAMERA:0  [1,120,160,1] NHWC" in text
    assert "ppo_head_0/policy:0  [1,10]" in text
    assert "ms archive -> ready (read" in text and "compile" in text
    assert "action table at max speed 50 %:" in text
    rows = [ln for ln in text.splitlines() if ln.strip()[:1].isdigit() and len(ln.split()) == 5]
    assert [int(r.split()[0]) for r in rows] == list(range(10))
    assert f"{images[0]}: action " in text


@pytest.fixture
def bad_inputs(tmp_path, demo_model, slim_models, images) -> dict[str, tuple[list, str]]:
    net = modelgen.TinyNet(seed=2)
    evil = modelgen.hostile_archive(
        tmp_path / "evil.tar.gz", "traversal", net.graph_def_bytes(), net.metadata()
    )
    lidar = modelgen.TinyNet(lidar="SECTOR_LIDAR").write_model_dir(tmp_path / "lidar")
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    return {
        "missing": ([tmp_path / "missing.tar.gz"], "not found"),
        "traversal": ([evil], "escapes the archive folder"),
        "lidar": ([lidar], "needs SECTOR_LIDAR input"),
        "no-image": ([demo_model, "--image", tmp_path / "nope.jpg"], "cannot read image"),
        "not-image": ([demo_model, "--image", not_image], "could not be decoded"),
        "speed": ([demo_model, "--max-speed-pct", "150"], "outside 0..100"),
        "stereo": ([slim_models["shallow_stereo_discrete_slim"], "--image", images[0]], "needs two images"),
        "device": ([demo_model, "--device", "NOPE"], "cannot compile the model for NOPE"),
    }


def assert_one_error_line(stderr: str, message: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and message in lines[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("case", ["missing", "traversal", "not-image"])
def test_user_errors_exit_2_with_one_line_subprocess(bad_inputs, case):
    args, message = bad_inputs[case]
    proc = inspect(*args, expect=2)
    assert_one_error_line(proc.stderr, message)
    assert proc.stdout == ""


def test_user_errors_exit_2_with_one_line_in_process(bad_inputs, capsys):
    """Every case through the same ``main()`` (in-process: no interpreter start per case)."""
    from car_runtime.cli.main import main

    for args, message in bad_inputs.values():
        assert main(["inspect", *map(str, args)]) == 2
        captured = capsys.readouterr()
        assert_one_error_line(captured.err, message)
        assert captured.out == ""
