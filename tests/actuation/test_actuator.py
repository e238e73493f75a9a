"""Actuator (value -> pulse path, watchdog), Recorder, and the output grammar."""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
from actuation_fakes import wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

from car_runtime.actuation.calibration import Calibration, ChannelCalibration
from car_runtime.actuation.output import Actuator, DutyWrite, OutputSpec, open_output, parse_output_spec
from car_runtime.actuation.recorder import RECORD_KEYS, Recorder, read_records
from car_runtime.errors import CalibrationError, ConfigError, HardwareError

NEUTRAL = (1450000, 1446000)


def pulses(w: DutyWrite) -> tuple[int, int]:
    return w.servo_ns, w.motor_ns


def test_start_command_close_sequence(cal):
    rec = Recorder(cal)
    with Actuator(rec, cal) as act:
        assert len(rec.writes) == 1
        start = rec.writes[0]
        assert pulses(start) == NEUTRAL and start.context == {"state": "disarmed", "event": "start"}
        w = act.command(0.5, 0.32, seq=7, state="armed")
        assert pulses(w) == (1575000, 1402800)
        assert (w.angle, w.throttle) == (0.5, 0.32) and w.context == {"seq": 7, "state": "armed"}
        assert act.last_write is w and rec.writes[-1] is w
        assert act.command(0.0, 0.0, t_s=12.5).t_s == 12.5
        t1 = act.command(0.0, 0.0).t_s
        assert 0 <= start.t_s <= w.t_s <= t1
    assert rec.closed
    assert pulses(rec.writes[-1]) == NEUTRAL
    assert rec.writes[-1].context == {"state": "disarmed", "event": "close"}
    assert sum(1 for x in rec.writes if x.context.get("event") == "close") == 1  # no duplicate
    act.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        act.command(0, 0)


def test_clamping_is_counted_and_reported(cal):
    rec = Recorder(cal)
    act = Actuator(rec, cal)
    w = act.command(math.nan, 3.0)
    assert pulses(w) == (1450000, 1311000) and (w.angle, w.throttle) == (0.0, 1.0)
    assert w.context["clamped"] == {"angle": "nan", "throttle": 3.0}
    assert act.clamped == 2
    act.command(-math.inf, 0.1)
    assert act.clamped == 3
    act.command(np.float32(0.25), np.float64(-0.5))
    assert act.clamped == 3 and "clamped" not in act.last_write.context
    act.close()


def test_neutral_and_raw(cal):
    rec = Recorder(cal)
    act = Actuator(rec, cal)
    act.command(1, 1)
    w = act.neutral(state="fault", reason="camera")
    assert pulses(w) == NEUTRAL and w.context == {"state": "fault", "reason": "camera"}
    w = act.raw(1600000, None, event="nudge")
    assert pulses(w) == (1600000, 1446000) and w.context == {"event": "nudge", "raw": True}
    assert w.angle == pytest.approx(0.6) and w.throttle == 0.0
    w = act.raw(None, 1500000)
    assert pulses(w) == (1600000, 1500000) and w.throttle == pytest.approx(-54000 / 157500)  # polarity -1, above mid
    for bad in ((-1, None), (None, 20_000_001), (1.5e6, None), (True, None)):
        with pytest.raises(CalibrationError, match="raw"):
            act.raw(*bad)
    assert pulses(act.raw(0, 20_000_000)) == (0, 20_000_000)
    act.close()
    assert pulses(rec.writes[-1]) == NEUTRAL


def test_set_calibration_changes_neutral_on_close(cal):
    rec = Recorder(cal)
    act = Actuator(rec, cal)
    new = cal.with_values({"servo.mid": 1480000, "motor.mid": 1440000})
    act.set_calibration(new)
    act.close()
    assert pulses(rec.writes[-1]) == (1480000, 1440000)


def test_output_close_alone_writes_neutral_once(cal, tmp_path):
    rec = Recorder(cal)
    rec.write(DutyWrite(0.0, 1.0, 1.0, 1700000, 1311000, {}))
    rec.close()
    rec.close()
    assert [pulses(w) for w in rec.writes] == [(1700000, 1311000), NEUTRAL]
    assert rec.writes[-1].context == {"event": "close"}
    with pytest.raises(RuntimeError):
        rec.write(rec.writes[0])


def test_watchdog_fires_once_per_silence(cal):
    rec = Recorder(cal)
    with Actuator(rec, cal, deadline_s=0.05) as act:
        act.command(0.5, 0.5, seq=1)
        wait_until(lambda: act.deadline_misses == 1, what="the watchdog")
        fired = rec.writes[-1]
        assert pulses(fired) == NEUTRAL and fired.context == {"state": "fault", "event": "deadline"}
        assert rec.writes[-2].context == {"seq": 1}  # neutral came after the last command
        time.sleep(0.3)  # several more deadlines pass: it must not write again
        assert act.deadline_misses == 1 and rec.writes[-1] is fired
        act.command(0.2, 0.2, seq=2)
        wait_until(lambda: act.deadline_misses == 2, what="the second expiry")
        assert [w.context for w in rec.writes[-3:]] == [
            {"state": "fault", "event": "deadline"}, {"seq": 2}, {"state": "fault", "event": "deadline"}]
    assert pulses(rec.writes[-1]) == NEUTRAL


def test_watchdog_custom_context_and_raw_rearms(cal):
    rec = Recorder(cal)
    with Actuator(rec, cal, deadline_s=0.05, watchdog_context={"state": "stale"}) as act:
        act.raw(1600000, None)
        wait_until(lambda: act.deadline_misses == 1)
        assert rec.writes[-1].context == {"state": "stale"} and pulses(rec.writes[-1]) == NEUTRAL


def test_watchdog_quiet_while_commands_flow_and_after_neutral(cal):
    rec = Recorder(cal)
    with Actuator(rec, cal, deadline_s=2.0) as act:
        for i in range(20):
            act.command(0.1, 0.1, seq=i)
            time.sleep(0.005)
        act.neutral(state="disarmed")  # output at rest: nothing left to watch
    assert act.deadline_misses == 0
    rec = Recorder(cal)
    with Actuator(rec, cal, deadline_s=0.05) as act:
        act.command(0.3, 0.3)
        act.neutral()
        time.sleep(0.3)
        assert act.deadline_misses == 0


def test_bad_deadline(cal):
    with pytest.raises(ConfigError, match="deadline"):
        Actuator(Recorder(cal), cal, deadline_s=0)


def test_concurrent_commands_and_watchdog(cal):
    rec = Recorder(cal)
    errors = []
    with Actuator(rec, cal, deadline_s=0.001) as act:
        def hammer(k):
            try:
                for i in range(300):
                    act.command((i % 21 - 10) / 10, (k - 1.5) / 1.5, k=k)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)
        ts = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert not errors
    assert len([w for w in rec.writes if "k" in w.context]) == 1200
    for w in rec.writes:
        assert 1200000 <= w.servo_ns <= 1700000 and 1311000 <= w.motor_ns <= 1603500
    assert pulses(rec.writes[-1]) == NEUTRAL


def test_write_listener_hears_every_write_in_write_order(cal):
    """Commands from 4 threads, the watchdog (1 ms deadline), raw pulses, neutral, an emergency
    neutral and close: the listener hears exactly the writes the output got, in its order."""
    rec = Recorder(cal)
    heard: list[DutyWrite] = []
    with Actuator(rec, cal, deadline_s=0.001) as act:
        act.add_write_listener(heard.append)

        def hammer(k):
            for i in range(200):
                act.command((i % 21 - 10) / 10, 0.1 * k, k=k)
                if i % 50 == 0:
                    act.raw(1500000, None, k=k)
                    act.neutral(k=k)
        ts = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        time.sleep(0.05)  # let the watchdog fire after the last command
        assert act.deadline_misses >= 1
        results = act.emergency_neutral()
        assert results == {"record": "ok"}
    body = rec.writes[1:]  # after the start write (made before the listener was added)
    assert len(heard) == len(body) > 800
    assert all(h is w for h, w in zip(heard[:-2], body[:-2]))  # the very same objects, in order
    emergency, close = heard[-2:]
    assert emergency.context == {"event": "emergency"} == body[-2].context
    assert pulses(emergency) == pulses(body[-2]) == NEUTRAL
    assert close is body[-1] and close.context["event"] == "close"
    deadline = [w for w in heard if w.context.get("event") == "deadline"]
    assert len(deadline) == act.deadline_misses


def test_write_listener_runs_outside_the_device_lock(cal):
    """While a listener runs, another thread's device write goes through (a listener is never
    called with the lock a device write needs); a listener that raises is removed."""
    rec = Recorder(cal)
    act = Actuator(rec, cal)
    other_wrote: list[bool] = []

    def listener(w):
        if other_wrote:
            return
        t = threading.Thread(target=act.command, args=(0.2, 0.2), kwargs={"tag": "other"},
                             daemon=True)
        t.start()
        end = time.monotonic() + 5
        while time.monotonic() < end and rec.writes[-1].context.get("tag") != "other":
            time.sleep(0.001)
        other_wrote.append(rec.writes[-1].context.get("tag") == "other")

    act.add_write_listener(listener)
    act.command(0.5, 0.5, tag="first")
    assert other_wrote == [True]

    calls: list[DutyWrite] = []

    def broken(w):
        calls.append(w)
        raise ValueError("listener bug")

    act.add_write_listener(broken)
    first = act.command(0.1, 0.1)  # logged, removed; the write stands
    second = act.command(0.3, 0.3)
    assert calls == [first] and rec.writes[-2:] == [first, second]
    act.close()


@settings(max_examples=200, deadline=None)
@given(
    t=st.lists(st.integers(0, 20_000_000), min_size=6, max_size=6, unique=True).map(sorted),
    pols=st.tuples(st.sampled_from((-1, 1)), st.sampled_from((-1, 1))),
    cmds=st.lists(st.tuples(st.floats(allow_nan=True), st.floats(allow_nan=True)), max_size=20),
)
def test_property_every_recorded_pulse_within_calibrated_range(t, pols, cmds):
    cal = Calibration(ChannelCalibration(t[0], t[1], t[2], pols[0]), ChannelCalibration(t[3], t[4], t[5], pols[1]))
    rec = Recorder(cal)
    with Actuator(rec, cal) as act:
        for a, b in cmds:
            act.command(a, b)
    expected_clamped = sum(not (math.isfinite(v) and -1 <= v <= 1) for ab in cmds for v in ab)
    assert act.clamped == expected_clamped
    for w in rec.writes:
        assert t[0] <= w.servo_ns <= t[2] and t[3] <= w.motor_ns <= t[5]
        assert -1 <= w.angle <= 1 and -1 <= w.throttle <= 1
    assert pulses(rec.writes[-1]) == cal.neutral_ns()


# ---------------------------------------------------------------- recorder file


def test_recorder_jsonl(cal, tmp_path):
    path = tmp_path / "rec.jsonl"
    rec = Recorder(cal, path)
    act = Actuator(rec, cal)
    act.command(0.5, 0.32, t_s=1.25, seq=np.int64(3), frame_age_s=np.float32(0.5), bad=math.nan)
    # flushed per line: readable while the file is still open
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    obj = json.loads(lines[1])
    # The fixed keys first (null where they do not apply), then the caller's other keys.
    assert obj == {"t": 1.25, "angle": 0.5, "throttle": 0.32, "servo_ns": 1575000, "motor_ns": 1402800,
                   "frame_seq": None, "frame_age_ms": None, "state": None, "event": None,
                   "clamped": None, "seq": 3, "frame_age_s": 0.5, "bad": "nan"}
    assert list(obj)[: len(RECORD_KEYS)] == list(RECORD_KEYS)
    assert list(json.loads(lines[0])) == list(RECORD_KEYS)  # the start line: exactly the schema
    act.close()
    recs = read_records(path)
    assert len(recs) == 3 and recs[0]["event"] == "start" and recs[-1]["event"] == "close"
    with open(path, "a") as fh:
        fh.write('{"t": 1, "torn')  # a crash mid-line
    assert len(read_records(path)) == 3
    # appends, never truncates
    Recorder(cal, path).close()
    assert len(read_records(path)) == 3  # the torn line is now in the middle...
    assert path.read_text().count("\n") == 4


def test_recorder_unwritable_path(cal, tmp_path):
    with pytest.raises(HardwareError, match="cannot open recording file"):
        Recorder(cal, tmp_path / "missing-dir" / "rec.jsonl")


# ---------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    "spec, expected",
    [("sysfs", OutputSpec("sysfs", "/sys/class/pwm")),
     ("sysfs:", OutputSpec("sysfs", "/sys/class/pwm")),
     ("sysfs:/tmp/x/pwm", OutputSpec("sysfs", "/tmp/x/pwm")),
     ("sysfs:,gpio=514", OutputSpec("sysfs", "/sys/class/pwm", None, (("gpio", "514"),))),
     ("sysfs:/s,chip=pwmchip2,motor=1,servo=0,gpio=436,gpio_root=/g",
      OutputSpec("sysfs", "/s", None, (("chip", "pwmchip2"), ("motor", "1"), ("servo", "0"), ("gpio", "436"),
                                       ("gpio_root", "/g")))),
     ("serial:loop://", OutputSpec("serial", "loop://", 115200)),
     ("serial:/dev/ttyACM0@9600", OutputSpec("serial", "/dev/ttyACM0", 9600)),
     ("serial:rfc2217://host:4000@57600,servo=3", OutputSpec("serial", "rfc2217://host:4000", 57600, (("servo", "3"),))),
     ("record:", OutputSpec("record", "")),
     ("record", OutputSpec("record", "")),
     ("record:/tmp/a,b.jsonl", OutputSpec("record", "/tmp/a,b.jsonl")),
     ("  record:x.jsonl ", OutputSpec("record", "x.jsonl"))],
)
def test_parse_output_spec(spec, expected):
    assert parse_output_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "pwm", "serial", "serial:", "sysfs:/x,gpio", "sysfs:/x,gpio=abc",
                                  "sysfs:/x,speed=3", "serial:loop://,chip=pwmchip0", "file:/x"])
def test_bad_output_spec(spec):
    with pytest.raises(ConfigError, match=r"use sysfs\[:PWM_CLASS_DIR\].*serial:URL.*record:"):
        parse_output_spec(spec)


def test_open_output_kinds(cal, tmp_path, fake_sys):
    with open_output("record:", cal) as out:
        assert isinstance(out, Recorder) and out.path is None
    with open_output(f"record:{tmp_path / 'r.jsonl'}", cal) as out:
        assert out.path == tmp_path / "r.jsonl"
    from car_runtime.actuation.serial_servo import SerialServo
    from car_runtime.actuation.sysfs_pwm import SysfsPwm

    with open_output("serial:loop://@9600,motor=2,servo=5", cal) as out:
        assert isinstance(out, SerialServo) and (out.motor_channel, out.servo_channel) == (2, 5)
        assert out.serial.baudrate == 9600
    spec = f"sysfs:{fake_sys.pwm},chip=pwmchip0,gpio=514,gpio_root={fake_sys.gpio}"
    with open_output(parse_output_spec(spec), cal) as out:
        assert isinstance(out, SysfsPwm) and out.gpio == 514
    assert (fake_sys.gpio / "gpio514" / "value").read_text() == "0"
