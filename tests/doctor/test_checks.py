"""Each doctor check's ✅/⚠️/❌ paths: the pure checks over facts, and the gatherers over a
car-shaped tree in a temp dir (real files, real symlinks, real permission bits)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from car_tree import ATOM_CPUINFO

from car_runtime import doctor
from car_runtime.doctor import Check, Identity, Level, Roots
from car_runtime.vision.v4l2 import CameraInfo, Format, Mode

OK, WARN, FAIL = Level.OK, Level.WARN, Level.FAIL
NOBODY = Identity("someone", 54321, frozenset({54321}))  # not root, in no group of ours


# -- python / glibc ----------------------------------------------------------------------------
@pytest.mark.parametrize("version, glibc, level", [
    ((3, 11, 7), "2.36", OK),
    ((3, 10, 0), "2.31", OK),  # the stock 20.04 image with a uv-managed Python
    ((3, 12, 3), "2.39", OK),  # the community 24.04 image
    ((3, 8, 10), "2.31", FAIL),  # the stock image's own Python
    ((3, 11, 0), "2.27", FAIL),  # glibc older than the wheels need
    ((3, 11, 0), None, WARN),  # not glibc
    ((3, 14, 0), "2.41", WARN),  # newer than tested
])
def test_python(version, glibc, level):
    check = doctor.check_python(version, glibc)
    assert check.level is level, check
    assert (check.fix == "") is (level is OK)


# -- cpu -----------------------------------------------------------------------------------------
def test_parse_cpuinfo_of_the_cars_atom():
    model, flags = doctor.parse_cpuinfo(ATOM_CPUINFO)
    assert model == "Intel(R) Atom(TM) Processor E3930 @ 1.30GHz"
    assert "sse4_2" in flags and "avx" not in flags and "avx2" not in flags
    assert "fpu" in flags and len(flags) > 50  # the first CPU's line, not the second's


@pytest.mark.parametrize("flags, ov, level, words", [
    ({"sse4_2"}, "2025.4.1", OK, ["no AVX2", "2025.4 is the last line", "do not upgrade"]),
    ({"sse4_2"}, "2026.4.1", WARN, ["officially needs AVX2"]),
    ({"sse4_2", "avx", "avx2"}, "2026.4.1", OK, ["AVX2", "supported by OpenVINO 2026.4.1"]),
    ({"sse4_1"}, "2025.4.1", FAIL, ["no SSE4.2"]),
    (set(), "2025.4.1", WARN, ["cannot read"]),
])
def test_cpu(flags, ov, level, words):
    check = doctor.check_cpu("CPU X", flags, ov)
    assert check.level is level, check
    for word in words:
        assert word in check.summary, check.summary
    if level is WARN and flags:
        assert "openvino>=2025.4.1,<2026" in check.fix


# -- openvino / the probe child ----------------------------------------------------------------
def test_probe_outcomes():
    ok = doctor.probe_outcome(0, 'noise\n{"version": "2025.4.1", "devices": ["CPU"]}\n', "")
    assert ok == {"version": "2025.4.1", "devices": ["CPU"]}
    assert doctor.check_openvino(ok).level is OK
    sigill = doctor.probe_outcome(-int(signal.SIGILL), "", "")
    assert "illegal instruction" in sigill["crash"] and "<2026" in sigill["crash_fix"]
    check = doctor.check_openvino(sigill)
    assert check.level is FAIL and "openvino>=2025.4.1,<2026" in check.fix
    killed = doctor.probe_outcome(-int(signal.SIGKILL), "", "")
    assert killed["crash"] == "killed by SIGKILL"
    failed = doctor.probe_outcome(1, "", "Traceback...\nRuntimeError: boom\n")
    assert failed["crash"] == "exit 1: RuntimeError: boom"
    assert doctor.check_model("m.tar.gz", failed).level is FAIL
    assert doctor.check_openvino({"version": "x", "devices": ["GPU"]}).level is FAIL
    assert doctor.check_openvino({"error": "ImportError: no"}).level is FAIL


def test_the_probe_child_really_crashes_safely(tmp_path):
    """A child that dies of SIGILL (as OpenVINO 2026 would on a CPU without AVX2) is reported,
    not inherited: the doctor's own process goes on."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), "
                           "signal.SIGILL)"], capture_output=True, text=True)
    outcome = doctor.probe_outcome(proc.returncode, proc.stdout, proc.stderr)
    assert "illegal instruction" in outcome["crash"]


# -- model and speed ---------------------------------------------------------------------------
def test_model_and_speed_levels():
    assert doctor.check_model(None, {}).level is WARN
    assert doctor.check_model("m", {"model_error": "model m not found; give ..."}).level is FAIL
    info = {"name": "m", "source": "archive: agent/model.pb", "action_space": "discrete",
            "outputs": 10, "load_s": 1.5, "kernels": {"Convolution": ["jit_sse42_f32"]}}
    check = doctor.check_model("m", {"model": info})
    assert check.level is OK and "Convolution jit_sse42_f32" in check.summary
    bench = {"frames": 60, "p50_total_ms": 5.0, "p50_infer_ms": 3.0, "verdict": "v"}
    assert doctor.check_speed({"bench": {**bench, "p99_total_ms": 10.0}}, 30).level is OK
    assert doctor.check_speed({"bench": {**bench, "p99_total_ms": 20.0}}, 30).level is WARN
    assert doctor.check_speed({"bench": {**bench, "p99_total_ms": 40.0}}, 30).level is WARN
    assert doctor.check_speed({"bench_skipped": "--no-bench"}, 30).level is WARN


# -- camera --------------------------------------------------------------------------------------
def _cam(path, fourcc="MJPG", w=640, h=480, fps=(30.0, 15.0), captures=True, error=""):
    return CameraInfo(path, "uvcvideo", "HD Camera", "usb-0000:00:15.0-2", captures,
                      [Format(fourcc, fourcc, (Mode(w, h, fps),))] if captures else [], error)


def test_cameras():
    good = doctor.check_cameras(["/dev/video0", "/dev/video1"],
                                [_cam("/dev/video0"), _cam("/dev/video1", captures=False)], True)
    assert good.level is OK and "/dev/video0 HD Camera: MJPG 640x480@30/15" in good.summary
    yuyv = doctor.check_cameras(["/dev/video0"], [_cam("/dev/video0", "YUYV")], True)
    assert yuyv.level is WARN and "MJPG 640x480" in yuyv.fix
    slow = doctor.check_cameras(["/dev/video0"], [_cam("/dev/video0", fps=(15.0,))], True)
    assert slow.level is WARN
    assert doctor.check_cameras([], [], True).level is FAIL
    assert doctor.check_cameras([], [], False).level is WARN
    denied = doctor.check_cameras(["/dev/video0"], [_cam("/dev/video0", captures=False,
                                  error="permission denied (add the user to group video)")], True)
    assert denied.level is FAIL and "usermod -aG video" in denied.fix


def test_camera_nodes_from_the_tree(car):
    for n in (10, 2, 0):
        (car.dev / f"video{n}").write_text("")
    (car.dev / "videodev").write_text("")
    assert doctor.video_nodes(Roots.under(car.root)) == [
        str(car.dev / "video0"), str(car.dev / "video2"), str(car.dev / "video10")]


# -- PWM: chip, channels, GPIO, who may write ----------------------------------------------------
def test_may_write_follows_the_kernel_rule(tmp_path):
    f = tmp_path / "duty_cycle"
    f.write_text("0")
    os.chown(f, 4000, 5000)
    os.chmod(f, 0o064)  # owner: nothing; group: rw; others: r
    st = f.stat()
    assert doctor.may_write(st, Identity("root", 0, frozenset()))
    assert not doctor.may_write(st, Identity("owner", 4000, frozenset({5000})))  # owner class wins
    assert doctor.may_write(st, Identity("member", 4001, frozenset({5000})))
    assert not doctor.may_write(st, Identity("other", 4002, frozenset({6000})))


def _facts(car, me, service, spec=None):
    return doctor.output_facts(spec or f"sysfs:{car.fs.pwm}", Roots.under(car.root), me, service)


def test_pwm_as_root_and_as_the_udev_rule_leaves_it(car):
    root = Identity("root", 0, frozenset({0}))
    facts = _facts(car, root, None)
    check = doctor.check_output("sysfs", facts, True)
    assert check.level is OK, check
    assert "pwmchip0 (5 channels)" in check.summary and "pwm0 (motor) exported" in check.summary
    # What the udev rule does: group car-runtime (here gid 5000) may write the attributes.
    for ch in (0, 1):
        for attr in ("period", "duty_cycle", "enable"):
            p = car.fs.chip_dirs["pwmchip0"] / f"pwm{ch}" / attr
            os.chown(p, 0, 5000)
            os.chmod(p, 0o664)
    service = Identity("car-runtime", 999, frozenset({5000}))
    facts = _facts(car, NOBODY, service)
    check = doctor.check_output("sysfs", facts, True)
    assert check.level is WARN and "service user car-runtime may" in check.summary, check
    assert "usermod -aG car-runtime" in check.fix
    member = Identity("pi", 1000, frozenset({1000, 5000}))
    assert doctor.check_output("sysfs", _facts(car, member, service), True).level is OK
    # Without the rule (root-only files): nobody but root may write -> the udev rule is the fix.
    for p in (car.fs.chip_dirs["pwmchip0"] / "pwm1").iterdir():
        os.chmod(p, 0o644)
    check = doctor.check_output("sysfs", _facts(car, NOBODY, service), True)
    assert check.level is FAIL and "install-service" in check.fix and "pwm1" in check.summary
    check = doctor.check_output("sysfs", _facts(car, root, service), True)
    assert check.level is WARN and "may NOT" in check.summary  # root can, the service cannot


def test_pwm_unexported_channels_need_a_writable_export(car):
    tree = type(car)(car.root.parent / "fresh")  # a chip with nothing exported yet
    for p in tree.fs.chip_dirs["pwmchip0"].glob("pwm*"):
        for f in p.iterdir():
            f.unlink()
        p.rmdir()
    export = tree.fs.chip_dirs["pwmchip0"] / "export"
    os.chmod(export, 0o600)
    facts = _facts(tree, NOBODY, None)
    assert [f["path"] for f in facts["files"]] == [str(tree.fs.pwm / "pwmchip0" / "export")]
    check = doctor.check_output("sysfs", facts, True)
    assert check.level is FAIL and "not exported" in check.summary


def test_pwm_channel_beyond_npwm_and_gpio(car):
    facts = _facts(car, Identity("root", 0, frozenset()), None,
                   f"sysfs:{car.fs.pwm},servo=7")
    assert doctor.check_output("x", facts, True).level is FAIL
    facts = _facts(car, Identity("root", 0, frozenset()), None, f"sysfs:{car.fs.pwm},gpio=436")
    assert facts["gpio"] == {"number": 436, "exported": False}
    check = doctor.check_output("x", facts, True)
    assert check.level is OK and "GPIO 436 not exported" in check.summary


def test_no_pwm_is_a_warning_off_the_car_and_a_failure_on_it(laptop):
    facts = doctor.output_facts("sysfs", Roots.under(laptop), NOBODY, None)
    assert "no PWM class directory" in facts["error"]
    assert doctor.check_output("sysfs", facts, False).level is WARN
    assert doctor.check_output("sysfs", facts, True).level is FAIL
    record = doctor.output_facts("record:x.jsonl", Roots.under(laptop), NOBODY, None)
    assert doctor.check_output("record:x.jsonl", record, True).level is OK


def test_serial_port(tmp_path):
    port = tmp_path / "ttyACM0"
    facts = doctor.output_facts(f"serial:{port}", Roots(), NOBODY, None)
    assert doctor.check_output("s", facts, True).level is FAIL  # missing on the car
    port.write_text("")
    os.chmod(port, 0o600)
    assert doctor.check_output("s", doctor.output_facts(f"serial:{port}", Roots(), NOBODY, None),
                               True).level is FAIL
    os.chmod(port, 0o666)
    assert doctor.check_output("s", doctor.output_facts(f"serial:{port}", Roots(), NOBODY, None),
                               True).level is OK


# -- calibration ---------------------------------------------------------------------------------
def test_calibration(car, tmp_path):
    error, found, summary = doctor.calibration_facts(str(car.calibration))
    check = doctor.check_calibration(str(car.calibration), error, found, summary)
    assert check.level is OK and "servo 1200000/1450000/1700000 (+1)" in check.summary
    missing = doctor.check_calibration(str(tmp_path / "no.json"),
                                       *doctor.calibration_facts(str(tmp_path / "no.json")))
    assert missing.level is WARN and "calibrate" in missing.fix
    bad = tmp_path / "bad.json"
    bad.write_text('{"Calibration": {"Servo": {"min": 5}}}')
    check = doctor.check_calibration(str(bad), *doctor.calibration_facts(str(bad)))
    assert check.level is FAIL and "--reset-defaults" in check.fix


# -- the stock stack and the service -------------------------------------------------------------
def test_stock_stack(car):
    roots = Roots.under(car.root)
    assert doctor.check_stock(doctor.unit_enabled(roots, doctor.STOCK_UNIT),
                              doctor.stock_processes(doctor.processes(roots))).level is OK
    car.unit("deepracer-core.service", enabled=True)
    check = doctor.check_stock(doctor.unit_enabled(roots, doctor.STOCK_UNIT), [])
    assert check.level is WARN and check.fix == "sudo systemctl disable deepracer-core"
    car.process(812, "/usr/bin/python3", "/opt/ros/foxy/bin/ros2", "launch", "deepracer_launcher",
                "deepracer_launcher.py")
    car.process(900, "/usr/bin/bash", "-c", "echo hello")
    running = doctor.stock_processes(doctor.processes(roots))
    assert running == ["pid 812: /usr/bin/python3 /opt/ros/foxy/bin/ros2 launch deepracer_launcher"
                       " deepracer_launcher.py"]
    check = doctor.check_stock(True, running)
    assert check.level is FAIL and check.fix == "sudo systemctl disable --now deepracer-core"


def test_service(car, tmp_path):
    roots = Roots.under(car.root)
    exe = tmp_path / "venv" / "bin" / "car-runtime"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert doctor.unit_file(roots, "car-runtime.service") is None
    assert doctor.check_service(None, False, [], str(exe), True).level is WARN
    assert doctor.check_service(None, False, [], str(exe), False).level is OK
    car.unit("car-runtime.service", f"[Service]\nExecStart={exe} run --config "
             "/etc/car-runtime/config.yaml\n", enabled=True)
    car.process(1500, str(exe), "run", "--config", "/etc/car-runtime/config.yaml")
    unit = doctor.read_text(doctor.unit_file(roots, "car-runtime.service"))
    procs = doctor.service_processes(doctor.processes(roots))
    check = doctor.check_service(unit, doctor.unit_enabled(roots, "car-runtime.service"), procs,
                                 str(exe), True)
    assert check.level is OK and "installed, enabled, running (pid 1500)" in check.summary
    other = doctor.check_service(unit, True, [], "/usr/local/bin/car-runtime", True)
    assert other.level is WARN and f"it runs {exe}" in other.summary
    stale = unit.replace(str(exe), str(tmp_path / "gone" / "car-runtime"))
    assert doctor.check_service(stale, True, [], str(exe), True).level is FAIL


# -- disk ------------------------------------------------------------------------------------------
def test_disk_levels(tmp_path):
    mb = 1e6
    assert doctor.check_disk([("models", "/m", 900 * mb, 100, 500)]).level is OK
    assert doctor.check_disk([("models", "/m", 300 * mb, 100, 500)]).level is WARN
    check = doctor.check_disk([("models", "/m", 900 * mb, 100, 500),
                               ("recordings", "/r", 150 * mb, 200, 1000)])
    assert check.level is FAIL and "recordings" in check.fix
    assert doctor.free_bytes(tmp_path / "not" / "yet") == doctor.free_bytes(tmp_path) > 0


# -- the report -----------------------------------------------------------------------------------
def test_text_and_json_reports():
    checks = [Check("a", OK, "fine"), Check("b", WARN, "hmm", "do x"), Check("c", FAIL, "bad", "do y")]
    text = doctor.format_text(checks)
    assert text.splitlines() == ["✅ a  fine", "⚠️ b  hmm -> do x", "❌ c  bad -> do y",
                                 "1 problem(s), 1 warning(s)"]
    doc = doctor.to_json(checks)
    assert doc["ok"] is False and doc["counts"] == {"ok": 1, "warn": 1, "fail": 1}
    assert doc["checks"][1] == {"name": "b", "level": "warn", "summary": "hmm", "fix": "do x",
                                "details": {}}
    assert doctor.to_json(checks[:2])["ok"] is True
