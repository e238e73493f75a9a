"""Golden test: replaying the bundled real footage through the bundled demo model logs exactly
what the stock decision and calibration formulas give for those frames (computed in conftest,
independently of car_runtime's actions/calibration/actuation code)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from replay_expect import (
    assert_log_equals,
    expected_records,
    read_actions,
    read_log,
    run_cli,
)

from car_runtime.actuation.calibration import DEFAULT_CALIBRATION_PATH


def test_golden_demo_model_on_bundled_footage(tmp_path, capsys, demo_model, demo_policy,
                                              seq_frames, footage_seq_dir):
    if DEFAULT_CALIBRATION_PATH.exists():
        pytest.skip(f"{DEFAULT_CALIBRATION_PATH} exists here; the default case needs it absent")
    log = tmp_path / "replay.jsonl"
    code, out, _ = run_cli(
        ["replay", "--model", str(demo_model), str(footage_seq_dir), "--log", str(log)], capsys
    )
    assert code == 0
    assert "calibration: stock defaults" in out
    assert "max speed 100 %" in out
    assert "at 30 fps (default for a folder" in out
    frames = [cv2.imread(str(p)) for p in seq_frames]
    want = expected_records(demo_policy, read_actions(demo_model), frames,
                            [k / 30 for k in range(len(frames))])
    got = read_log(log)
    assert len(got) == 100
    assert_log_equals(got, want)
    # the summary's action distribution is the log's
    for i in range(10):
        n = sum(1 for r in got if r["action_index"] == i)
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(f"{i}: "))
        assert line.split()[3:5] == [str(n), f"{n:.1f}"]


def test_golden_custom_calibration_speed_and_range(tmp_path, capsys, demo_model, demo_policy,
                                                   seq_frames, footage_seq_dir):
    """A non-default calibration (servo polarity flipped), 40 % max speed, --fps 30 and a frame
    range: every field still matches the stock formulas."""
    servo = (1_100_000, 1_500_000, 1_800_000, -1)
    motor = (1_300_000, 1_420_000, 1_650_000, 1)
    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps({"Calibration": {
        "Servo": dict(zip(("min", "mid", "max", "polarity"), servo)),
        "Motor": dict(zip(("min", "mid", "max", "polarity"), motor)),
        "version": 1,
    }}))
    log = tmp_path / "r.jsonl"
    code, out, _ = run_cli(
        ["replay", "--model", str(demo_model), str(footage_seq_dir), "--log", str(log),
         "--calibration", str(cal), "--max-speed-pct", "40", "--fps", "30",
         "--start", "20", "--end", "45"], capsys
    )
    assert code == 0
    assert f"calibration: {cal}" in out and "max speed 40 %" in out
    frames = [cv2.imread(str(p)) for p in seq_frames[20:45]]
    want = expected_records(demo_policy, read_actions(demo_model), frames,
                            [k / 30 for k in range(20, 45)], pct=40.0, servo=servo, motor=motor,
                            first_frame=20)
    assert_log_equals(read_log(log), want)


def test_start_end_in_seconds(tmp_path, capsys, demo_model, footage_seq_dir):
    """--start 1s --end 2.5s at 10 fps: frames 10..24 (start included, end excluded)."""
    log = tmp_path / "r.jsonl"
    code, _, _ = run_cli(
        ["replay", "--model", str(demo_model), str(footage_seq_dir), "--fps", "10",
         "--start", "1s", "--end", "2.5s", "--log", str(log)], capsys
    )
    assert code == 0
    got = read_log(log)
    assert [r["frame"] for r in got] == list(range(10, 25))
    assert got[0]["t"] == pytest.approx(1.0) and got[-1]["t"] == pytest.approx(2.4)


def test_log_is_strict_json_with_exact_keys(tmp_path, capsys, demo_model, footage_seq_dir):
    log = tmp_path / "r.jsonl"
    run_cli(["replay", "--model", str(demo_model), str(footage_seq_dir), "--end", "3",
             "--log", str(log)], capsys)
    lines = Path(log).read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        obj = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
        assert list(obj) == ["frame", "t", "action_index", "output", "steering_angle", "speed",
                             "angle", "throttle", "servo_ns", "motor_ns"]
        assert isinstance(obj["servo_ns"], int) and isinstance(obj["motor_ns"], int)
        assert len(obj["output"]) == 10
