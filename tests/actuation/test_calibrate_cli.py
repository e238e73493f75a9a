"""``car-runtime calibrate`` (scripted forms in-process; the interactive tool through a real pty)
and ``car-runtime neutral``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest
from actuation_fakes import FakeSysfs, wait_until

from car_runtime import data
from car_runtime.actuation import calibration as c
from car_runtime.actuation.recorder import read_records
from car_runtime.cli.main import main

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm", "LC_ALL": "C.UTF-8"}
CLI = [sys.executable, "-m", "car_runtime.cli.main"]
# xterm terminfo (keypad transmit mode): kcub1 kcuf1 kcuu1 kcud1
LEFT, RIGHT, UP, DOWN = "\x1bOD", "\x1bOC", "\x1bOA", "\x1bOB"


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- scripted forms


def test_show_missing_file_shows_the_stock_defaults_everything_uses(tmp_path, capsys, caplog):
    """No file: run, neutral and the ROS node drive with the stock defaults (with a warning), so
    --show says exactly that instead of failing."""
    f = tmp_path / "cal.json"
    code, out, _ = cli(capsys, "calibrate", "--file", str(f), "--show")
    assert code == 0 and out.startswith("stock defaults (no file yet) for")
    assert "1450000" in out and "1446000" in out
    assert any("not found: using the stock defaults" in r.getMessage() for r in caplog.records)
    code, out, _ = cli(capsys, "calibrate", "--file", str(f), "--show", "--json")
    assert code == 0 and json.loads(out) == c.Calibration.defaults().to_stock_dict()
    assert not f.exists()  # showing never writes


def test_reset_show_json_set_history_restore(tmp_path, capsys):
    f = str(tmp_path / "cal.json")
    code, out, _ = cli(capsys, "calibrate", "--file", f, "--reset-defaults")
    assert code == 0 and "saved stock defaults" in out
    code, out, _ = cli(capsys, "calibrate", "--file", f, "--show", "--json")
    assert code == 0 and json.loads(out) == c.Calibration.defaults().to_stock_dict()
    assert out == Path(f).read_text() == (data.CALIBRATION / "calibration.json").read_text()
    code, out, _ = cli(capsys, "calibrate", "--file", f, "--show")
    assert code == 0
    assert "servo" in out and "1200000" in out and "1450000" in out and "-5.0" in out  # console units
    code, out, _ = cli(capsys, "calibrate", "--file", f, "--set", "servo.mid=1_460_000", "motor.polarity=1")
    assert code == 0
    cal = c.load_calibration(f)
    assert cal.servo.mid_ns == 1460000 and cal.motor.polarity == 1
    code, out, _ = cli(capsys, "calibrate", "--file", f, "--history")
    assert code == 0 and "  1  " in out and "1200000/1450000/1700000 +1" in out
    code, out, _ = cli(capsys, "calibrate", "--file", f, "--history", "--json")
    hist = json.loads(out)
    assert hist[0]["n"] == 1 and hist[0]["calibration"] == c.Calibration.defaults().to_stock_dict()
    code, out, _ = cli(capsys, "calibrate", "--file", f, "--restore", "1")
    assert code == 0 and "restored version 1" in out
    assert c.load_calibration(f) == c.Calibration.defaults()


@pytest.mark.parametrize(
    "args, match",
    [(["--set", "servo.mid=1800000"], "servo: need 0 <= min < mid < max"),
     (["--set", "servo.mid=fast"], "not an integer"),
     (["--set", "servo.mid"], "CHANNEL.FIELD=VALUE"),
     (["--set", "wheel.mid=1"], "unknown calibration key"),
     (["--set", "motor.polarity=0"], "polarity"),
     (["--restore", "3"], "no calibration history"),
     (["--json"], "--json goes with --show or --history")],
)
def test_scripted_errors(tmp_path, capsys, args, match):
    f = tmp_path / "cal.json"
    code, out, err = cli(capsys, "calibrate", "--file", str(f), *args)
    assert code == 2 and match in err and err.startswith("error: ")
    assert not f.exists()  # nothing was written


def test_interactive_needs_a_terminal(tmp_path):
    r = subprocess.run([*CLI, "calibrate", "--file", str(tmp_path / "c.json"), "--output", "record:"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 2 and "needs a terminal" in r.stderr


# ---------------------------------------------------------------- interactive, through a pty


def spawn(tmp_path, cal_file: Path, rec: Path) -> pexpect.spawn:
    child = pexpect.spawn(CLI[0], [*CLI[1:], "calibrate", "--file", str(cal_file), "--output", f"record:{rec}"],
                          env=ENV, dimensions=(30, 110), timeout=20, cwd=str(tmp_path))
    child.expect("WHEELS OFF THE GROUND")
    return child


def records(rec: Path) -> list[dict]:
    return read_records(rec) if rec.exists() else []


def wait_record(rec: Path, pred, what: str) -> dict:
    return wait_until(lambda: next((r for r in reversed(records(rec)) if pred(r)), None), 20, what)


def test_interactive_nudge_mark_save_then_ctrl_c_leaves_neutral(tmp_path):
    cal_file, rec = tmp_path / "cal.json", tmp_path / "rec.jsonl"
    c.save_calibration(c.Calibration.defaults(), cal_file)
    child = spawn(tmp_path, cal_file, rec)
    assert records(rec)[0]["event"] == "start"
    child.send(RIGHT * 3)  # +3 x 10000 ns
    wait_record(rec, lambda r: r.get("event") == "nudge" and r["servo_ns"] == 1480000, "servo at 1480000")
    child.send(UP * 2 + DOWN)  # +1000 ns net
    wait_record(rec, lambda r: r.get("event") == "nudge" and r["servo_ns"] == 1481000, "servo at 1481000")
    child.send("2")  # mark as mid
    child.send("w")  # save
    wait_until(lambda: c.load_calibration(cal_file).servo.mid_ns == 1481000, 20, "the saved file")
    assert c.list_history(cal_file)[0].calibration == c.Calibration.defaults()  # previous kept
    child.send("m")  # motor: servo goes back to its (new) mid, motor to its mid
    child.send(LEFT)
    last_nudge = wait_record(rec, lambda r: r.get("event") == "nudge" and r["channel"] == "motor", "motor nudge")
    assert (last_nudge["servo_ns"], last_nudge["motor_ns"]) == (1481000, 1436000)
    child.sendintr()  # Ctrl-C
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    last = records(rec)[-1]
    assert (last["servo_ns"], last["motor_ns"]) == (1481000, 1446000)  # neutral of the saved calibration
    assert last["event"] == "close"


def test_interactive_quit_unsaved_asks_then_neutral_and_file_untouched(tmp_path):
    cal_file, rec = tmp_path / "cal.json", tmp_path / "rec.jsonl"  # no file yet: starts from defaults
    child = spawn(tmp_path, cal_file, rec)
    child.send(LEFT * 5)
    wait_record(rec, lambda r: r.get("event") == "nudge" and r["servo_ns"] == 1400000, "servo at 1400000")
    child.send("1p")  # mark min, flip polarity -> unsaved changes
    child.send("q")
    child.expect("q again quits without saving")
    child.send("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert not cal_file.exists()
    last = records(rec)[-1]
    assert (last["servo_ns"], last["motor_ns"]) == (1450000, 1446000) and last["event"] == "close"


def test_interactive_sweep_and_invalid_save(tmp_path):
    cal_file, rec = tmp_path / "cal.json", tmp_path / "rec.jsonl"
    c.save_calibration(c.Calibration.defaults(), cal_file)
    child = spawn(tmp_path, cal_file, rec)
    child.send("t")
    wait_record(rec, lambda r: r.get("event") == "sweep-end", "the end of the sweep")
    sweep = [r["servo_ns"] for r in records(rec) if r.get("event") == "sweep"]
    assert max(sweep) == 1700000 and min(sweep) == 1200000 and sweep[0] == 1450000
    assert all(r["motor_ns"] == 1446000 for r in records(rec) if r.get("event") == "sweep")
    child.send(RIGHT * 30)  # 1750000, beyond max
    wait_record(rec, lambda r: r.get("event") == "nudge" and r["servo_ns"] == 1750000, "servo at 1750000")
    child.send("2w")  # mid above max: refused
    child.expect("not saved")
    assert c.load_calibration(cal_file) == c.Calibration.defaults()
    child.kill(15)  # SIGTERM also unwinds to neutral
    child.expect(pexpect.EOF)
    child.close()
    last = records(rec)[-1]
    assert (last["servo_ns"], last["motor_ns"]) == (1450000, 1446000)


# ---------------------------------------------------------------- neutral


def test_neutral_end_to_end_with_missing_calibration(tmp_path):
    rec = tmp_path / "n.jsonl"
    r = subprocess.run([*CLI, "neutral", "--calibration", str(tmp_path / "missing.json"), "--output", f"record:{rec}"],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "not found: using the stock defaults" in r.stderr
    recs = read_records(rec)
    assert [(x["servo_ns"], x["motor_ns"]) for x in recs] == [(1450000, 1446000)] * 2
    assert "neutral: servo 1450000 ns, motor 1446000 ns" in r.stdout


def test_neutral_uses_calibration_and_survives_a_broken_one(tmp_path, capsys):
    f = tmp_path / "cal.json"
    c.save_calibration(c.Calibration.defaults().with_values({"servo.mid": 1470000, "motor.mid": 1450000}), f)
    fs = FakeSysfs(tmp_path / "root", exported=(0, 1))
    code, out, _ = cli(capsys, "neutral", "--calibration", str(f), "--output", f"sysfs:{fs.pwm}")
    assert code == 0
    assert (fs.chip() / "pwm0/duty_cycle").read_text() == "1450000"
    assert (fs.chip() / "pwm1/duty_cycle").read_text() == "1470000"
    f.write_text("{broken")
    rec = tmp_path / "n.jsonl"
    code, out, err = cli(capsys, "neutral", "--calibration", str(f), "--output", f"record:{rec}")
    assert code == 0 and read_records(rec)[-1]["servo_ns"] == 1450000


def test_neutral_bad_output_is_one_line_error(capsys, tmp_path):
    code, out, err = cli(capsys, "neutral", "--calibration", str(tmp_path / "x.json"), "--output", "pwm0")
    assert code == 2 and err.startswith("error: bad output 'pwm0'") and err.count("\n") == 1


# ---------------------------------------------------------------- interactive, frozen or killed

SHM = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _duty(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None  # mid-rewrite


@pytest.fixture
def pwm_tree(tmp_path):
    """A sysfs-shaped PWM tree in memory (tmpfs, like sysfs: a disk write never looks stuck)."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="car-cal-", dir=SHM)) if SHM else tmp_path
    fs = FakeSysfs(root / "root", exported=(0, 1))
    yield fs
    if SHM:
        shutil.rmtree(root, ignore_errors=True)


def spawn_on_sysfs(tmp_path, fs, *extra: str) -> pexpect.spawn:
    cal_file = tmp_path / "cal.json"
    c.save_calibration(c.Calibration.defaults(), cal_file)
    child = pexpect.spawn(CLI[0], [*CLI[1:], "calibrate", "--file", str(cal_file),
                                   "--output", f"sysfs:{fs.pwm}", *extra],
                          env=ENV, dimensions=(30, 110), timeout=30, cwd=str(tmp_path))
    child.expect("WHEELS OFF THE GROUND")
    return child


MOTOR = ("pwm0", c.Calibration.defaults().motor.mid_ns)
SERVO = ("pwm1", c.Calibration.defaults().servo.mid_ns)


def motor_spinning(child, fs) -> Path:
    """Select the motor and nudge it 3 coarse steps: the wheels (on the stand) spin."""
    motor_file = fs.chip() / MOTOR[0] / "duty_cycle"
    child.send("m")
    child.send(RIGHT * 3)
    wait_until(lambda: _duty(motor_file) == MOTOR[1] + 30_000, 20, "the motor nudged")
    return motor_file


def test_interactive_frozen_goes_to_neutral_by_the_guardian_and_resumes_from_there(tmp_path, pwm_tree):
    fs = pwm_tree
    child = spawn_on_sysfs(tmp_path, fs)
    motor_file = motor_spinning(child, fs)
    servo_file = fs.chip() / SERVO[0] / "duty_cycle"
    os.kill(child.pid, signal.SIGSTOP)  # Ctrl-Z without a handler, a debugger, swapping...
    wait_until(lambda: (_duty(motor_file), _duty(servo_file)) == (MOTOR[1], SERVO[1]), 20,
               "both channels at neutral while calibrate is stopped")
    os.kill(child.pid, signal.SIGCONT)
    child.expect("the guardian put both channels at neutral")
    assert _duty(motor_file) == MOTOR[1]  # nothing drives on by itself after the resume
    child.send(RIGHT)  # nudges start again from the saved mid, not from the frozen pulse
    wait_until(lambda: _duty(motor_file) == MOTOR[1] + 10_000, 20, "the motor nudged again")
    child.send("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert (_duty(motor_file), _duty(servo_file)) == (MOTOR[1], SERVO[1])


def test_interactive_killed_goes_to_neutral_by_the_guardian(tmp_path, pwm_tree):
    fs = pwm_tree
    child = spawn_on_sysfs(tmp_path, fs)
    motor_file = motor_spinning(child, fs)
    os.kill(child.pid, signal.SIGKILL)
    wait_until(lambda: _duty(motor_file) == MOTOR[1], 20, "the motor at neutral after kill -9")
    child.expect(pexpect.EOF)
    child.close()


def test_interactive_without_the_guardian_a_frozen_tool_holds_the_pulse(tmp_path, pwm_tree):
    """The control for the two tests above: what the guardian prevents does happen without it."""
    fs = pwm_tree
    child = spawn_on_sysfs(tmp_path, fs, "--no-guardian")
    motor_file = motor_spinning(child, fs)
    os.kill(child.pid, signal.SIGSTOP)
    try:
        for _ in range(100):  # 1 s: ten guardian deadlines
            assert _duty(motor_file) in (MOTOR[1] + 30_000, None)
            time.sleep(0.01)
    finally:
        os.kill(child.pid, signal.SIGCONT)
    child.send("q")
    child.expect(pexpect.EOF)
    child.close()
    assert _duty(motor_file) == MOTOR[1]
