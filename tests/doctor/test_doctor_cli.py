"""``car-runtime doctor`` end to end: the console script in a subprocess over a car-shaped tree
(``--root``) and a laptop-shaped one, with real OpenVINO loading and benching real models."""

from __future__ import annotations

import json
import os
import subprocess
import time

from helpers import car_runtime_cmd

from car_runtime import doctor

SYMBOLS = ("✅", "⚠️", "❌")


def run_doctor(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([*car_runtime_cmd(), "doctor", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def by_name(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["checks"]}


def test_on_a_car_tree_with_the_stock_stack_running(car, demo_model):
    car.config(model=demo_model)
    os.symlink("/dev/null", car.dev / "video0")  # a character device that is not a camera
    car.unit("deepracer-core.service", enabled=True)
    car.process(700, "/bin/bash", "/opt/aws/deepracer/start_ros.sh")
    t0 = time.perf_counter()
    proc = run_doctor("--root", car.root, "--json")
    elapsed = time.perf_counter() - t0
    print(f"doctor --json with the demo model and a 60-frame bench: {elapsed:.2f} s")
    assert proc.returncode == 1, proc.stderr  # something is ❌
    doc = json.loads(proc.stdout)
    checks = by_name(doc)
    assert list(checks) == ["machine", "python", "cpu", "openvino", "config", "camera", "pwm",
                            "calibration", "stock", "service", "access", "sandbox", "disk", "model",
                            "speed"]
    assert checks["machine"]["details"]["on_car"] is True
    cpu = checks["cpu"]
    assert cpu["details"]["model"].startswith("Intel(R) Atom(TM) Processor E3930")
    assert cpu["details"]["avx2"] is False and cpu["details"]["sse4_2"] is True
    ov = doctor.installed_openvino()
    assert cpu["level"] == ("ok" if ov.startswith("2025.") else "warn")
    assert checks["openvino"]["level"] == "ok" and "CPU" in checks["openvino"]["details"]["devices"]
    assert checks["config"]["level"] == "ok"
    camera = checks["camera"]
    assert camera["level"] == "fail" and "not a V4L2 device" in camera["summary"]
    assert checks["pwm"]["level"] == "ok" and "pwmchip0 (5 channels)" in checks["pwm"]["summary"]
    assert checks["calibration"]["level"] == "ok"
    stock = checks["stock"]
    assert stock["level"] == "fail" and "pid 700" in stock["summary"]
    assert stock["fix"] == "sudo systemctl disable --now deepracer-core"
    assert checks["service"]["level"] == "warn" and "install-service" in checks["service"]["fix"]
    model = checks["model"]
    assert model["level"] == "ok" and model["details"]["outputs"] == 10
    assert model["details"]["source"] == "archive: agent/model.pb"
    kernels = model["details"]["kernels"]
    assert "Convolution" in kernels and "FullyConnected" in kernels and "Softmax" in kernels
    speed = checks["speed"]
    assert speed["level"] in ("ok", "warn") and speed["details"]["frames"] == 60
    assert "of the 33.3 ms frame period at 30 fps" in speed["summary"]
    assert doc["ok"] is False and doc["counts"]["fail"] == 2


def test_fixing_the_problems_gives_exit_0_and_a_readable_report(car, realsize_shallow_dir):
    car.config(model=realsize_shallow_dir)
    car.unit("deepracer-core.service")  # installed but disabled and stopped: fine
    proc = run_doctor("--root", car.root, "--no-bench")
    lines = proc.stdout.strip().splitlines()
    assert all(line.startswith(SYMBOLS) for line in lines[:-1]), proc.stdout
    camera = next(line for line in lines if " camera " in line)
    assert camera.startswith("❌") and "plug the camera in" in camera
    # A car without a camera is still ❌; with the camera problem the only one, exit is 1.
    assert proc.returncode == 1 and lines[-1] == "1 problem(s), 2 warning(s)", proc.stdout
    assert any(line.startswith("⚠️ speed") and "--no-bench" in line for line in lines)
    model = next(line for line in lines if line.startswith("✅ model"))
    assert "shallow_ffc_discrete_realsize (folder: model.pb)" in model


def test_a_laptop_without_a_model_passes_with_warnings(laptop):
    proc = run_doctor("--root", laptop)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("✅ machine") and "not a DeepRacer" in lines[0]
    warned = [line.split()[1] for line in lines if line.startswith("⚠️")]
    assert warned == ["camera", "pwm", "calibration", "model"], proc.stdout
    assert not any(line.startswith("❌") for line in lines)


def test_bad_config_and_bad_model_are_reported_not_raised(car, tmp_path):
    path = car.config(max_speed_pct=400)
    proc = run_doctor("--root", car.root, "--json", "--no-bench")
    checks = by_name(json.loads(proc.stdout))
    assert proc.returncode == 1
    assert checks["config"]["level"] == "fail" and "max_speed_pct" in checks["config"]["summary"]
    assert str(path) in checks["config"]["summary"]
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tar at all")
    checks = by_name(json.loads(run_doctor("--root", car.root, "--json", "--model", broken).stdout))
    model = checks["model"]
    assert model["level"] == "fail" and "broken.tar.gz is not a readable tar.gz" in model["summary"]
    assert "speed" not in checks


def test_usage_errors_are_one_line(tmp_path):
    proc = run_doctor("--config", tmp_path / "nope.yaml")
    assert proc.returncode == 2 and proc.stderr.startswith("error: config file")
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""
