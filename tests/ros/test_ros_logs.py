"""``car-runtime ros`` prints one log format: the drive loop's and the stages' Python log records
go through rclpy, like the node's own lines (real node process over real rclpy)."""

from __future__ import annotations

import re
import subprocess

import pytest

ROS_LINE = re.compile(r"^\[(DEBUG|INFO|WARN|ERROR|FATAL)\] \[\d+\.\d+\] \[[\w.]+\]: ")


@pytest.mark.ros
def test_one_log_format(demo_model, footage_seq_dir, tmp_path, car_runtime_cmd, ros_env):
    pytest.importorskip("rclpy")
    cmd = [*car_runtime_cmd, "ros", "--ros-args", "-p", f"model_path:={demo_model}",
           "-p", f"camera:={footage_seq_dir}", "-p", "fps:=100.0",
           "-p", f"output:=record:{tmp_path / 'r.jsonl'}",
           "-p", f"calibration_path:={tmp_path / 'absent.json'}"]  # -> a Python WARNING
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=ros_env)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert lines and all(ROS_LINE.match(line) for line in lines), lines
    # The Python records are there, in ROS's format, under their logger names.
    assert any(line.startswith("[WARN]") and "[car_runtime.actuation.calibration]" in line
               and "not found" in line for line in lines), lines
    assert any("[car_runtime.runtime]" in line and "drive loop ended" in line for line in lines)
    start = next(line for line in lines if "[car_runtime]: model demo-untrained" in line)
    assert "disarmed (arm: call ~/enable)" in start  # how to arm
    assert "max speed 50 % (ros's default, like the stock slider; -p max_speed_pct:=P" in start
