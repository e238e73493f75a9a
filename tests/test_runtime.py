"""The drive loop end to end with real parts: real OpenVINO models, real paced file sources,
a real recorder output, real signals and a real sd_notify socket.

Fault injection is done with real components: a camera that delivers too rarely (2 fps), a
corrupt frame (a stage raises), a really slow model (inference outlasts the deadline and the
stall timeout), SIGTERM/SIGINT, and the end of the input.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import modelgen
from car_runtime.actuation.calibration import Calibration
from car_runtime.actuation.output import Actuator, open_output
from car_runtime.actuation.recorder import read_records
from car_runtime.control.safety import ExitCode
from car_runtime.model.policy import load_model
from car_runtime.pipeline import Pipeline
from car_runtime.runtime import DriveLoop
from car_runtime.vision.frame import LatestFrameSlot
from car_runtime.vision.sources import ImageFolderSource

CAL = Calibration.defaults()
SERVO_MID, MOTOR_MID = CAL.neutral_ns()
RECORD_KEYS = {"t", "frame_seq", "frame_age_ms", "state", "angle", "throttle", "servo_ns", "motor_ns"}


def car_runtime(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "car_runtime.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


def run_cmd(model: Path, camera: Path, record: Path, *extra: str, env: dict | None = None):
    return car_runtime(
        "run", "--model", str(model), "--camera", str(camera), "--output", f"record:{record}",
        "--calibration", str(record.parent / "absent-calibration.json"),
        "--status-interval", "0", *extra, env=env,
    )


def assert_neutral(rec: dict) -> None:
    assert (rec["servo_ns"], rec["motor_ns"]) == (SERVO_MID, MOTOR_MID), rec


@pytest.fixture(scope="module")
def demo(demo_model):
    with load_model(demo_model) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> Path:
    """A real model whose inference takes >= 0.3 s on this machine (deeper until it does)."""
    root = tmp_path_factory.mktemp("slow")
    for layers in (12, 24, 48, 96):
        path = modelgen.write_slow_model_dir(root / f"model{layers}", layers=layers)
        with load_model(path) as loaded:
            loaded.policy.infer()
            t0 = time.perf_counter()
            loaded.policy.infer()
            if time.perf_counter() - t0 >= 0.3:
                return path
    return path


@pytest.fixture
def few_frames(footage_seq_dir, tmp_path) -> Path:
    out = tmp_path / "frames"
    out.mkdir()
    for p in sorted(footage_seq_dir.glob("*.jpg"))[:20]:
        shutil.copy(p, out / p.name)
    return out


# -- newest frame wins, at 30 and 90 fps ------------------------------------------------------

@pytest.mark.parametrize("fps", [30, 90])
def test_every_write_acts_on_the_newest_frame(demo, footage_seq_dir, fps):
    slot = LatestFrameSlot(audit=10_000)
    pipeline = Pipeline(demo.policy, max_speed_pct=50)
    steps = []
    with Actuator(open_output("record:", CAL), CAL, deadline_s=0.5) as actuator, \
            ImageFolderSource(footage_seq_dir, fps=fps) as source:
        loop = DriveLoop(source, pipeline, actuator, armed=True, max_frame_age_s=1.0, slot=slot,
                         on_step=lambda r, w, s: steps.append((r, w)))
        assert loop.run() == ExitCode.OK
        writes = list(actuator.output.writes)

    # The slot's audit trail (in lock order): every take is the newest frame put so far.
    newest = 0
    takes = 0
    for kind, seq in slot.audit:
        if kind == "put":
            newest = seq
        else:
            takes += 1
            assert seq == newest, f"took frame {seq} while {newest} was available"
    assert takes == loop.stats.frames > 0
    # Every driving write carries the frame it acted on and its age; seqs only go forward.
    driven = [w for w in writes if w.context.get("frame_seq") is not None]
    seqs = [w.context["frame_seq"] for w in driven]
    assert seqs == sorted(set(seqs))
    assert all(w.context["frame_age_ms"] >= 0 for w in driven)
    assert len(driven) == loop.stats.frames
    # The writes are the pipeline's decisions through the calibration.
    for result, w in steps:
        if result is not None:
            d = result.decision
            assert (w.angle, w.throttle) == (d.angle, d.throttle)
            assert w.servo_ns == CAL.servo.to_duty_ns(d.angle)[0]
            assert w.motor_ns == CAL.motor.to_duty_ns(d.throttle)[0]
    assert_neutral({"servo_ns": writes[-1].servo_ns, "motor_ns": writes[-1].motor_ns})
    ages = sorted(w.context["frame_age_ms"] for w in driven)
    print(f"{fps} fps: {len(driven)} writes, frame age at write p50 {ages[len(ages) // 2]:.2f} ms "
          f"max {ages[-1]:.2f} ms, skipped {loop.stats.skipped}")


def test_disarmed_loop_writes_only_neutral(demo, few_frames):
    with Actuator(open_output("record:", CAL), CAL) as actuator, \
            ImageFolderSource(few_frames, fps=200) as source:
        loop = DriveLoop(source, Pipeline(demo.policy), actuator, armed=False, max_frame_age_s=1.0)
        assert loop.run() == ExitCode.OK
        writes = actuator.output.writes
    assert writes and all((w.servo_ns, w.motor_ns) == (SERVO_MID, MOTOR_MID) for w in writes)
    assert {w.context.get("state") for w in writes if "frame_seq" in w.context} == {"disarmed"}


# -- `car-runtime run`, end to end ------------------------------------------------------------

def test_run_end_to_end_on_bundled_model_and_footage(demo_model, footage_seq_dir, tmp_path):
    record = tmp_path / "drive.jsonl"
    proc = run_cmd(demo_model, footage_seq_dir, record, "--fps", "60", "--arm")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "end of input" in out
    assert "ARMED: the car drives" in out  # the start line says what is in force
    recs = read_records(record)
    driving = [r for r in recs if r.get("frame_seq") is not None]
    assert driving, recs[:5]
    for r in driving:
        assert RECORD_KEYS <= set(r), r
        assert r["state"] in ("disarmed", "armed", "fault")
        assert CAL.servo.min_ns <= r["servo_ns"] <= CAL.servo.max_ns
        assert CAL.motor.min_ns <= r["motor_ns"] <= CAL.motor.max_ns
    assert any(r["state"] == "armed" and r["motor_ns"] != MOTOR_MID for r in driving)
    assert_neutral(recs[-1])
    assert max(r["frame_seq"] for r in driving) == 100  # the last frame was acted on


def test_run_config_file_and_cli_override(demo_model, few_frames, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"model: {demo_model}\ncamera: {few_frames}\nfps: 100\nmax_speed_pct: 100\n"
                   "arm: true\n")
    record = tmp_path / "drive.jsonl"
    proc = car_runtime("run", "--config", str(cfg), "--max-speed-pct", "0",
                       "--output", f"record:{record}", "--status-interval", "0",
                       "--calibration", str(tmp_path / "none.json"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    driving = [r for r in read_records(record) if r.get("frame_seq") is not None]
    assert driving and all(r["throttle"] == 0.0 for r in driving)  # the CLI's 0 % won


@pytest.mark.parametrize(
    "yaml_text, needle",
    [("max_speed_pct: 150\n", "max_speed_pct"), ("spede: 3\n", "unknown setting"),
     ("- a list\n", "mapping")],
)
def test_run_bad_config_is_a_one_line_error(demo_model, tmp_path, yaml_text, needle):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml_text)
    proc = car_runtime("run", "--config", str(cfg), "--model", str(demo_model))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_run_missing_camera_leaves_neutral(demo_model, tmp_path):
    record = tmp_path / "drive.jsonl"
    proc = run_cmd(demo_model, tmp_path / "no-such-folder", record)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "no such file" in err and "Traceback" not in err
    recs = read_records(record)
    assert recs and all((r["servo_ns"], r["motor_ns"]) == (SERVO_MID, MOTOR_MID) for r in recs)


# -- fault injection ----------------------------------------------------------------------------

def test_camera_stall_goes_neutral_within_the_deadline(demo_model, few_frames, tmp_path):
    """A camera delivering every 500 ms: each command is followed by the watchdog's neutral."""
    record = tmp_path / "drive.jsonl"
    proc = run_cmd(demo_model, few_frames, record, "--fps", "2", "--arm",
                   "--deadline-ms", "100", "--max-frame-age-ms", "1000")
    time.sleep(3.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    recs = read_records(record)
    commands = [i for i, r in enumerate(recs) if r.get("frame_seq") is not None]
    assert len(commands) >= 3
    gaps = []
    for i in commands[:-1]:
        nxt = recs[i + 1]
        assert nxt.get("event") == "deadline", nxt
        assert_neutral(nxt)
        gaps.append((nxt["t"] - recs[i]["t"]) * 1e3)
        assert gaps[-1] >= 100 * 0.999  # never before the deadline
    assert_neutral(recs[-1])
    print(f"command -> neutral after a camera stall: {min(gaps):.1f}..{max(gaps):.1f} ms "
          "(deadline 100 ms)")


def test_stage_exception_is_neutral_and_exit_fault(demo_model, few_frames, tmp_path):
    (few_frames / "000010.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    record = tmp_path / "drive.jsonl"
    proc = run_cmd(demo_model, few_frames, record, "--fps", "50", "--arm")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.FAULT, err
    recs = read_records(record)
    bad_seq = 11  # 000010.jpg is the 11th frame
    assert max(r.get("frame_seq") or 0 for r in recs) < bad_seq  # nothing from or after it
    assert_neutral(recs[-1])
    assert any(r.get("state") == "fault" for r in recs[-3:])


def test_slow_inference_hits_the_deadline_then_the_stall_watchdog(slow_model, few_frames, tmp_path):
    """Inference slower than the deadline: the watchdog sends neutral after every command;
    a stage stuck past the stall timeout ends the run with exit 5 and neutral."""
    record = tmp_path / "drive.jsonl"
    proc = run_cmd(slow_model, few_frames, record, "--fps", "100", "--arm",
                   "--deadline-ms", "10", "--max-frame-age-ms", "10000",
                   "--stall-timeout-ms", "100")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.WATCHDOG, err
    assert "stuck" in err
    recs = read_records(record)
    commands = [i for i, r in enumerate(recs) if r.get("frame_seq") is not None
                and r["state"] == "armed"]
    for i in commands:  # every command is followed by neutral (deadline or the final close)
        assert_neutral(recs[i + 1])
    assert_neutral(recs[-1])


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_with_neutral(demo_model, footage_seq_dir, tmp_path, sig, code):
    record = tmp_path / "drive.jsonl"
    proc = run_cmd(demo_model, footage_seq_dir, record, "--fps", "30", "--arm")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until it drives
        if record.exists() and any(r.get("frame_seq") for r in read_records(record)):
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    recs = read_records(record)
    assert any(r.get("frame_seq") for r in recs)
    assert_neutral(recs[-1])
    assert max(r.get("frame_seq") or 0 for r in recs) < 100  # stopped early, not end of input
    exit_rec = [r for r in recs if r.get("event") == "exit"][-1]
    assert exit_rec["state"] == "disarmed"
    assert_neutral(exit_rec)


# -- systemd notification ---------------------------------------------------------------------

def test_run_talks_to_systemd(demo_model, few_frames, tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(30)
    record = tmp_path / "drive.jsonl"
    proc = run_cmd(demo_model, few_frames, record, "--fps", "20", "--status-interval", "0.2",
                   env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "200000"})
    messages = []
    try:
        while True:
            msg = sock.recv(4096).decode()
            messages.append(msg)
            if "STOPPING=1" in msg:
                break
    finally:
        sock.close()
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert messages[0].startswith("READY=1") or "READY=1" in messages[0]
    assert any("WATCHDOG=1" in m for m in messages)
    assert any(m.startswith("STATUS=") for m in messages)
    assert "STOPPING=1" in messages[-1]


def test_camera_lost_is_neutral_and_exit_camera_lost(demo, footage_seq_dir, tmp_path):
    """A real capture thread on a stream that stops for good: the watchdog sends neutral
    within the deadline, the camera gives up, the loop exits 4 with neutral."""
    import cv2

    from car_runtime.vision.camera import Camera

    path = tmp_path / "stream.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    for p in sorted(footage_seq_dir.glob("*.jpg"))[:15]:
        out.write(cv2.imread(str(p)))
    out.release()
    with Actuator(open_output("record:", CAL), CAL, deadline_s=0.1) as actuator, \
            Camera(str(path), max_read_failures=2, lost_after_s=0.5,
                   backoff_s=(0.01, 0.05)) as camera:
        path.unlink()  # the open capture still reads it; reopening fails: the device is gone
        loop = DriveLoop(camera, Pipeline(demo.policy), actuator, armed=True, max_frame_age_s=1.0)
        guard = threading.Timer(60, loop.request_stop, args=(99, "test guard: camera never lost"))
        guard.start()
        try:
            assert loop.run() == ExitCode.CAMERA_LOST, loop.exit_reason
        finally:
            guard.cancel()
        assert "camera lost" in loop.exit_reason
        writes = list(actuator.output.writes)
    commands = [i for i, w in enumerate(writes) if w.context.get("frame_seq") is not None]
    assert commands
    after = writes[commands[-1] + 1]  # the stream stopped: the watchdog's neutral comes next
    assert after.context.get("event") == "deadline"
    assert (after.servo_ns, after.motor_ns) == (SERVO_MID, MOTOR_MID)
    assert after.t_s - writes[commands[-1]].t_s >= 0.1 * 0.999
    assert (writes[-1].servo_ns, writes[-1].motor_ns) == (SERVO_MID, MOTOR_MID)
