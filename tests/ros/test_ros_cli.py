"""``car-runtime ros`` at the edges: without rclpy, and with bad parameters.

Without rclpy: a real subprocess whose interpreter cannot import rclpy (``sys.modules['rclpy'] =
None`` before ``car_runtime`` is imported, which makes ``import rclpy`` raise ImportError exactly
as when it is not installed). Bad parameters: the real node process, over real rclpy.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BLOCK_RCLPY = (
    "import sys; sys.modules['rclpy'] = None; "
    "from car_runtime.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


def run_without_rclpy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_RCLPY, *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_without_rclpy_ros_says_how_to_install_and_exits_2():
    proc = run_without_rclpy("ros", "--ros-args", "-p", "model_path:=x")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "pip install 'car-runtime[ros]'" in lines[0] and "source" in lines[0]
    assert "Traceback" not in proc.stderr


def test_without_rclpy_everything_else_still_works():
    proc = run_without_rclpy("ros", "--help")
    assert proc.returncode == 0 and "--ros-args" in proc.stdout, proc.stderr
    proc = run_without_rclpy("--help")
    assert proc.returncode == 0 and "ros" in proc.stdout, proc.stderr


@pytest.mark.ros
@pytest.mark.parametrize(
    "params, expected",
    [
        ({}, "no model given"),
        ({"model_path": "MODEL", "max_speed_pct": "150.0"}, "max_speed_pct"),
        ({"model_path": "MODEL", "max_speed_pct": "50"}, "double"),
        ({"model_path": "MODEL", "preprocess": "magic"}, "preprocess"),
        ({"model_path": "MODEL", "output": "pwm:/dev/null"}, "output"),
        ({"model_path": "/no/such/model.tar.gz", "output": "record:x.jsonl"}, "not found"),
        ({"model_path": "MODEL", "output": "record:"}, "ROS arguments"),  # YAML reads a mapping
    ],
)
def test_bad_parameters_exit_2_with_one_line(
    params, expected, demo_model, tmp_path, car_runtime_cmd, ros_env
):
    pytest.importorskip("rclpy")
    cmd = [*car_runtime_cmd, "ros", "--ros-args"]
    for key, value in params.items():
        cmd += ["-p", f"{key}:={str(demo_model) if value == 'MODEL' else value}"]
    cmd += ["-p", f"calibration_path:={tmp_path / 'none.json'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=ros_env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_launch_file_path_without_rclpy():
    """``ros2 launch $(car-runtime ros --launch-file)``: the installed file, no rclpy needed."""
    from car_runtime import data

    proc = run_without_rclpy("ros", "--launch-file")
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip()
    assert path == str(data.LAUNCH / "car_runtime.launch.py") and "LaunchDescription" in open(path).read()
