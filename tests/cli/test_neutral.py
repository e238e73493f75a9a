"""`car-runtime neutral` over a table of hostile config and calibration files: it always writes
each channel's mid (the calibrated one when the calibration is valid, else the stock default),
exits 0 and names what it ignored on one line. The wire is a sysfs-shaped tree in a temp dir."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from car_runtime.actuation.calibration import Calibration
from car_runtime.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "actuation"))
from actuation_fakes import FakeSysfs  # noqa: E402

STOCK = Calibration.defaults()
GOOD_CAL = ('{"Calibration": {"Servo": {"min": 1100000, "mid": 1400000, "max": 1800000, '
            '"polarity": 1}, "Motor": {"min": 1300000, "mid": 1500000, "max": 1700000, '
            '"polarity": -1}, "version": 1}}')
GOOD_MIDS = (1500000, 1400000)  # (motor, servo)
STOCK_MIDS = (STOCK.motor.mid_ns, STOCK.servo.mid_ns)

ALIAS_BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
model: [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""


@pytest.fixture
def wire(tmp_path):
    fs = FakeSysfs(tmp_path / "root", exported=(0, 1))
    chip = fs.chip()
    for ch in ("pwm0", "pwm1"):
        (chip / ch / "duty_cycle").write_text("1378500")  # a driving pulse left behind
    return fs


def duty(fs) -> tuple[int, int]:
    chip = fs.chip()
    return int((chip / "pwm0/duty_cycle").read_text()), int((chip / "pwm1/duty_cycle").read_text())


def special(kind: str, path: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "loop":
        path.symlink_to(path.name)  # ELOOP
    elif kind == "dangling":
        path.symlink_to("nowhere-at-all")


# (name, config body or a special kind) -- each config also says where the wire is (or not)
CONFIG_CASES = [
    ("non-utf8 byte", b"max_speed_pct: 50\xff\n"),
    ("5000-digit int", b"max_speed_pct: " + b"9" * 5000 + b"\n"),
    ("100000-deep nesting", b"model: " + b"[" * 100_000 + b"\n"),
    ("alias bomb in model", ALIAS_BOMB.encode()),
    ("model is a mapping", b"model: {a: 1}\n"),
    ("not a mapping", b"- just\n- a list\n"),
    ("python tag", b"model: !!python/object/apply:os.system [echo pwned]\n"),
    ("binary garbage", bytes(range(256)) * 8),
    ("one megabyte", b"# " + b"x" * 1_000_000 + b"\n"),
    ("empty", b""),
    ("unknown key", b"spede: 3\n"),
    ("float inf", b"max_speed_pct: .inf\n"),
    ("complex key", b"? [a, b]\n: 1\n"),
]
SPECIAL_KINDS = ["fifo", "dev_zero", "directory", "loop", "dangling"]


def run_neutral(capsys, *argv: str) -> tuple[int, str, str, float]:
    t = time.perf_counter()
    code = main(["neutral", *argv])
    took = time.perf_counter() - t
    out, err = capsys.readouterr()
    return code, out, err, took


@pytest.mark.parametrize("name, body", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_hostile_config_still_neutral_from_its_plain_lines(wire, tmp_path, capsys, name, body):
    """The stop path with a config that the loader refuses (or that has a bad key): the
    plain `output:` / `calibration:` lines are still honoured, so the right wire gets the
    calibrated mid."""
    cal = tmp_path / "cal.json"
    cal.write_text(GOOD_CAL)
    config = tmp_path / "config.yaml"
    config.write_bytes(f"output: sysfs:{wire.pwm}\ncalibration: {cal}\n".encode() + body)
    code, out, err, took = run_neutral(capsys, "--config", str(config))
    assert code == 0, err
    assert duty(wire) == GOOD_MIDS, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
    print(f"{name}: exit 0 in {took * 1e3:.0f} ms; {err.strip()[:150]}")


@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_config_that_is_not_a_regular_file(wire, tmp_path, capsys, kind):
    config = tmp_path / "config.yaml"
    special(kind, config)
    code, out, err, took = run_neutral(capsys, "--config", str(config), "--output",
                                       f"sysfs:{wire.pwm}")
    assert code == 0, err
    assert duty(wire) == STOCK_MIDS
    assert err.startswith("warning: ignored config") and err.count("\n") == 1, err
    print(f"config {kind}: exit 0 in {took * 1e3:.0f} ms; {err.strip()[:160]}")


CAL_CASES = [
    ("5000-digit int", b'{"Calibration": {"Servo": {"min": ' + b"9" * 5000 + b"}}}"),
    ("100000-deep nesting", b"[" * 100_000),
    ("NaN", GOOD_CAL.replace("1400000", "NaN").encode()),
    ("non-utf8", b"\xff" + GOOD_CAL.encode()),
    ("one megabyte", b" " * 1_000_000 + GOOD_CAL.encode()),
    ("wrong shape", b'{"Calibration": []}'),
    ("min above max", GOOD_CAL.replace('"min": 1100000', '"min": 1900000').encode()),
    ("float pulse", GOOD_CAL.replace("1400000", "1400000.5").encode()),
    ("huge float", GOOD_CAL.replace("1400000", "1e308").encode()),
    ("empty", b""),
]


@pytest.mark.parametrize("name, body", CAL_CASES, ids=[c[0] for c in CAL_CASES])
def test_hostile_calibration_gives_the_stock_mids(wire, tmp_path, capsys, name, body):
    cal = tmp_path / "cal.json"
    cal.write_bytes(body)
    code, out, err, took = run_neutral(capsys, "--calibration", str(cal), "--output",
                                       f"sysfs:{wire.pwm}")
    assert code == 0, err
    assert duty(wire) == STOCK_MIDS
    assert err.startswith("warning: ignored calibration") and err.count("\n") == 1, err
    print(f"calibration {name}: exit 0 in {took * 1e3:.0f} ms; {err.strip()[:150]}")


@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_calibration_that_is_not_a_regular_file(wire, tmp_path, capsys, kind):
    cal = tmp_path / "cal.json"
    special(kind, cal)
    config = tmp_path / "config.yaml"
    config.write_text(f"output: sysfs:{wire.pwm}\ncalibration: {cal}\n")
    code, out, err, took = run_neutral(capsys, "--config", str(config))
    assert code == 0, err
    assert duty(wire) == STOCK_MIDS
    if kind != "dangling":  # a dangling link is a missing file: defaults, logged, no warning
        assert err.startswith("warning: ignored calibration") and err.count("\n") == 1, err
    print(f"calibration {kind}: exit 0 in {took * 1e3:.0f} ms")


def test_bad_values_for_output_and_calibration_keys(wire, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("output: [sysfs]\ncalibration: 12\n")
    code, out, err, _ = run_neutral(capsys, "--config", str(config), "--output",
                                    f"sysfs:{wire.pwm}")
    assert code == 0 and duty(wire) == STOCK_MIDS
    assert "output in" in err and "calibration in" in err and err.count("\n") == 1


def test_a_blocking_duty_file_is_abandoned_for_direct_writes(wire, tmp_path, capsys):
    """The normal open blocks (the servo's duty file is a FIFO: opening it waits for a reader);
    after WRITE_TIMEOUT_S neutral goes out non-blocking where it can and it says so."""
    servo = wire.chip() / "pwm1" / "duty_cycle"
    servo.unlink()
    os.mkfifo(servo)
    code, out, err, took = run_neutral(capsys, "--output", f"sysfs:{wire.pwm}")
    assert code == 3
    assert int((wire.chip() / "pwm0/duty_cycle").read_text()) == STOCK.motor.mid_ns
    assert "did not finish" in err and "servo failed (ENXIO" in err and "motor ok" in err
    print(f"blocked duty file: exit {code} in {took:.2f} s; {err.strip()}")


def test_real_process_timing_over_the_worst_files(wire, tmp_path):
    """As ExecStopPost runs it: a fresh process, the slowest hostile inputs; it finishes (the
    figure is printed; the bound only catches a hang)."""
    cal = tmp_path / "cal.json"
    cal.write_bytes(b"[" * 60_000)
    config = tmp_path / "config.yaml"
    config.write_bytes(f"output: sysfs:{wire.pwm}\ncalibration: {cal}\n".encode()
                       + b"model: " + b"[" * 60_000 + b"\n")
    times = []
    for _ in range(3):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "car_runtime.cli.main", "neutral",
                               "--config", str(config)], capture_output=True, text=True,
                              timeout=60)
        times.append(time.perf_counter() - t)
        assert proc.returncode == 0, proc.stderr
        assert duty(wire) == STOCK_MIDS
    print(f"neutral as a fresh process over a 60 kB nesting config + calibration: "
          f"{min(times) * 1e3:.0f}..{max(times) * 1e3:.0f} ms (interpreter start included)")
