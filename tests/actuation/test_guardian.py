"""The guardian process through its real link: a real second process, real files and a real pty
as the wire. (Freezing or killing the runtime end to end is in tests/test_failsafe.py.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from actuation_fakes import MaestroSim, wait_until

from car_runtime.actuation.guardian import (
    GuardianError,
    GuardianLink,
    NeutralTarget,
    write_targets,
)
from car_runtime.actuation.output import Actuator
from car_runtime.actuation.serial_servo import SerialServo, set_target_bytes
from car_runtime.actuation.sysfs_pwm import SysfsPwm

DEADLINE_S = 0.1


def file_targets(tmp_path: Path) -> list[NeutralTarget]:
    out = []
    for name, mid in (("motor", b"1446000"), ("servo", b"1450000")):
        p = tmp_path / f"{name}_duty"
        p.write_text("0")
        out.append(NeutralTarget(name, "file", str(p), mid))
    return out


def contents(targets: list[NeutralTarget]) -> list[str]:
    return [Path(t.path).read_text() for t in targets]


@pytest.fixture
def link(tmp_path):
    targets = file_targets(tmp_path)
    g = GuardianLink(targets, DEADLINE_S)
    yield g
    g.close()


@pytest.fixture
def guarded(tmp_path, cal):
    """An actuator on a memory recorder with a real guardian attached (its wire: files)."""
    from car_runtime.actuation.recorder import Recorder

    rec = Recorder(cal)
    act = Actuator(rec, cal)
    g = GuardianLink(file_targets(tmp_path), DEADLINE_S)
    act.attach_guardian(g)
    yield act, rec, g
    act.close()


def test_start_writes_neutral_once_and_reports_ready(tmp_path):
    targets = file_targets(tmp_path)
    t = time.perf_counter()
    g = GuardianLink(targets, DEADLINE_S)
    start_s = time.perf_counter() - t
    try:
        assert contents(targets) == ["1446000", "1450000"]  # its start check
        rss_kb = int(Path(f"/proc/{g.pid}/status").read_text().split("VmRSS:")[1].split()[0])
        mods = Path(f"/proc/{g.pid}/maps").read_text()
        assert "openvino" not in mods and "cv2" not in mods and "numpy" not in mods
        print(f"guardian ready in {start_s * 1e3:.0f} ms, RSS {rss_kb / 1024:.1f} MB")
    finally:
        g.close()


@pytest.mark.parametrize("problem", ["missing", "directory"])
def test_start_failure_is_one_clear_line(tmp_path, problem):
    targets = file_targets(tmp_path)
    bad = Path(targets[0].path)
    bad.unlink()
    if problem == "directory":
        bad.mkdir()
    with pytest.raises(GuardianError, match=r"cannot write neutral: motor failed \((ENOENT|EISDIR)"):
        GuardianLink(targets, DEADLINE_S)


def test_quiet_while_the_runtime_beats_even_when_armed(link, tmp_path):
    for t in link.targets:
        Path(t.path).write_text("driving")
    link.set_armed(True)
    time.sleep(5 * DEADLINE_S)  # the link's own thread beats every deadline/4
    assert not link.trip_pending()
    assert contents(link.targets) == ["driving", "driving"]


def test_a_stuck_write_trips_and_driving_is_refused_until_taken(guarded, cal):
    """A device write that does not return (begin without end, as a hung driver leaves it):
    the guardian writes neutral and counts a trip; the actuator refuses to drive until the trip
    is taken."""
    act, _, g = guarded
    heard = []
    act.add_write_listener(heard.append)
    targets = g.targets
    for t in targets:
        Path(t.path).write_text("driving")
    g.set_armed(True)
    t0 = time.monotonic()
    g.begin_write(True)  # ... and never end_write: stuck
    wait_until(lambda: contents(targets) == ["1446000", "1450000"], 5, "neutral")
    took_ms = (time.monotonic() - t0) * 1e3
    assert g.trip_pending()  # marked before it wrote
    g.end_write(True)  # the write finally returns (driving values went out)...
    w = act.command(0.5, 0.5, state="armed")  # ...and the actuator refuses to drive on
    assert (w.servo_ns, w.motor_ns) == cal.neutral_ns() and w.context["event"] == "guardian_trip"
    trip = act.take_guardian_trip()
    assert trip["reason"] == "write stuck" and trip["gap_ms"] >= DEADLINE_S * 1e3
    # the listeners (the flight recorder's audit) heard the refusal, then the guardian's own
    # neutral, stamped when the guardian wrote it: before the refusal
    refusal, by_guardian = heard[-2:]
    assert refusal.context["event"] == "guardian_trip"
    assert by_guardian.context == {"state": "fault", "event": "guardian_neutral", "guardian": trip}
    assert (by_guardian.servo_ns, by_guardian.motor_ns) == cal.neutral_ns()
    assert by_guardian.t_s < refusal.t_s
    assert act.take_guardian_trip() is None and not g.trip_pending()
    assert heard[-1] is by_guardian  # taken once, heard once
    w = act.command(0.5, 0.5, state="armed")  # taken (the loop went to fault): allowed again
    assert w.motor_ns != cal.neutral_ns()[1]
    print(f"stuck write -> guardian neutral after {took_ms:.0f} ms (deadline "
          f"{DEADLINE_S * 1e3:.0f} ms)")


def test_a_write_that_ends_after_the_trip_gets_neutral_again(link, tmp_path):
    link.set_armed(True)
    link.begin_write(True)
    wait_until(link.trip_pending, 5, "a trip")
    for t in link.targets:  # the in-flight write lands after the guardian's neutral
        Path(t.path).write_text("driving")
    link.end_write(True)
    wait_until(lambda: contents(link.targets) == ["1446000", "1450000"], 5, "neutral again")


def test_disarmed_and_at_rest_a_silent_runtime_is_no_trip(link):
    link.set_armed(False)
    link.begin_write(False)  # a neutral write that hangs: nothing to protect
    time.sleep(4 * DEADLINE_S)
    assert not link.trip_pending()
    link.end_write(False)


def test_the_guardian_ignores_the_signals_a_terminal_or_systemctl_send(link):
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP,
                signal.SIGUSR1, signal.SIGPIPE):
        os.kill(link.pid, sig)
    time.sleep(0.3)
    assert link.proc.poll() is None and link.failure is None
    assert os.getsid(link.pid) == link.pid  # its own session: Ctrl-Z / a lost tty do not reach it


def test_guardian_death_puts_the_actuator_at_neutral_and_refuses_driving(guarded, cal):
    act, rec, g = guarded
    heard = []
    act.add_write_listener(heard.append)  # the flight recorder's view: every write
    act.command(0.3, 0.4)
    os.kill(g.pid, signal.SIGKILL)
    wait_until(lambda: act.guardian_failure is not None, 5, "the failure")
    assert "exited with status -9" in act.guardian_failure
    wait_until(lambda: rec.writes[-1].context.get("event") == "guardian_lost", 5, "neutral")
    assert (rec.writes[-1].servo_ns, rec.writes[-1].motor_ns) == cal.neutral_ns()
    w = act.command(0.3, 0.4)
    assert (w.servo_ns, w.motor_ns) == cal.neutral_ns() and w.context["event"] == "guardian_lost"
    assert heard == rec.writes[1:]  # the neutral written from the guardian thread too
    assert [x.context.get("event") for x in heard] == [None, "guardian_lost", "guardian_lost"]


def test_stopped_guardian_counts_as_lost(tmp_path):
    g = GuardianLink(file_targets(tmp_path), DEADLINE_S)  # 1 s of silence is the limit here
    try:
        os.kill(g.pid, signal.SIGSTOP)
        wait_until(lambda: g.failure is not None, 10, "the failure")
        assert "stopped responding" in g.failure
    finally:
        os.kill(g.pid, signal.SIGCONT)
        g.close()


def test_clean_close_writes_nothing_unclean_close_writes_neutral(tmp_path):
    targets = file_targets(tmp_path)
    g = GuardianLink(targets, DEADLINE_S)
    for t in targets:
        Path(t.path).write_text("mine now")  # e.g. the next process already drives
    g.close(clean=True)
    assert g.proc.returncode == 0 and contents(targets) == ["mine now", "mine now"]

    g = GuardianLink(targets, DEADLINE_S)
    for t in targets:
        Path(t.path).write_text("driving")
    g.close(clean=False)
    assert contents(targets) == ["1446000", "1450000"]


def test_serial_guardian_writes_neutral_commands_on_the_tty(cal):
    """A Maestro on a pty: the runtime holds the port; the guardian opens the same device and,
    when the runtime goes without a clean close, sends the neutral set-target commands."""
    sim = MaestroSim()
    try:
        out = SerialServo(cal, sim.port)
        targets = out.guardian_targets()
        assert targets is not None and targets[0].kind == "tty"
        act = Actuator(out, cal)
        g = GuardianLink(targets, DEADLINE_S)
        act.attach_guardian(g)
        servo_mid, motor_mid = cal.neutral_ns()
        start = len(sim.wait_for(4))  # the actuator's start neutral + the guardian's check
        act.command(0.5, 0.5)
        sim.wait_for(start + 2)
        g.close(clean=False)  # as if the runtime died
        got = sim.wait_for(start + 4)[-2:]
        assert got == [(0, motor_mid // 250), (1, servo_mid // 250)]
        assert not sim.errors
        act.guardian = None
        act.close()
    finally:
        sim.close()
    assert SerialServo.guardian_targets.__doc__  # loop:// and friends: documented as unguarded


def test_serial_url_without_a_device_cannot_be_guarded(cal):
    out = SerialServo(cal, "loop://")
    try:
        assert out.guardian_targets() is None
    finally:
        out.close()


def test_sysfs_targets_are_the_duty_files_motor_first(cal, fake_sys):
    with SysfsPwm(cal, root=fake_sys.pwm) as out:
        targets = out.guardian_targets()
        assert [t.name for t in targets] == ["motor", "servo"]
        assert targets[0].path.endswith("pwm0/duty_cycle") and targets[0].payload == b"1446000"
        assert targets[1].path.endswith("pwm1/duty_cycle") and targets[1].payload == b"1450000"


def test_write_targets_never_waits_on_a_fifo(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    ok = tmp_path / "ok"
    ok.write_text("x")
    t = time.monotonic()
    res = write_targets([NeutralTarget("a", "file", str(fifo), b"1"),
                         NeutralTarget("b", "file", str(ok), b"2")])
    assert time.monotonic() - t < 2
    assert res["a"].startswith("failed (ENXIO") and res["b"] == "ok" and ok.read_text() == "2"


def test_set_target_bytes_matches_the_guardian_payload(cal):
    out = SerialServo(cal, "loop://", motor_channel=2, servo_channel=5)
    try:
        servo_mid, motor_mid = cal.neutral_ns()
        assert out.neutral_bytes() == set_target_bytes(2, motor_mid) + set_target_bytes(5, servo_mid)
    finally:
        out.close()


def test_a_write_frozen_in_flight_is_undone_by_the_runtime_as_it_returns(tmp_path, cal):
    """The race: the runtime froze inside a driving device write (here the device blocks it),
    the guardian tripped meanwhile; when the write returns, the actuator sees the trip at once
    and writes neutral itself -- the driving pulse lasts one write, and the caller learns of it."""
    import threading

    from car_runtime.actuation.base import PwmOutput

    class GatedOutput(PwmOutput):  # a device whose next driving write hangs until released
        def __init__(self, calibration):
            super().__init__(calibration)
            self.gate = threading.Event()
            self.entered = threading.Event()
            self.pulses: list[tuple[int, int]] = []

        def write(self, w):
            if (w.servo_ns, w.motor_ns) != self.calibration.neutral_ns():
                self.entered.set()
                self.gate.wait(10)
            self.pulses.append((w.servo_ns, w.motor_ns))
            self.last_pulses_ns = (w.servo_ns, w.motor_ns)

    out = GatedOutput(cal)
    act = Actuator(out, cal)
    g = GuardianLink(file_targets(tmp_path), DEADLINE_S)
    act.attach_guardian(g)
    heard = []
    act.add_write_listener(heard.append)
    try:
        g.set_armed(True)
        result: list = []
        t = threading.Thread(target=lambda: result.append(act.command(0.5, 0.5)))
        t.start()
        assert out.entered.wait(5)
        wait_until(g.trip_pending, 5, "the guardian's trip")  # it saw the write hang
        out.gate.set()  # the write returns ("the process resumes")
        t.join(5)
        neutral = cal.neutral_ns()
        assert out.pulses[-2] != neutral and out.pulses[-1] == neutral  # undone right after
        assert result[0].context["event"] == "guardian_trip"
        assert (result[0].servo_ns, result[0].motor_ns) == neutral
        # the caller sees only the neutral; the write listeners hear both writes, in order
        assert [(w.servo_ns, w.motor_ns) for w in heard] == out.pulses[-2:]
        assert heard[-1] is result[0] and heard[0].context.get("event") is None
    finally:
        act.close()


def test_new_calibration_hands_over_to_a_guardian_with_the_new_neutral(tmp_path, cal, fake_sys):
    """The cockpit saves a calibration while the car runs: a new guardian (new neutral) takes
    over before the old one quits, and it is the new neutral a frozen runtime gets."""
    from car_runtime.actuation.calibration import ChannelCalibration

    out = SysfsPwm(cal, root=fake_sys.pwm)
    act = Actuator(out, cal, deadline_s=DEADLINE_S)
    old = GuardianLink(out.guardian_targets(), DEADLINE_S)
    act.attach_guardian(old)
    try:
        act.command(0.5, 0.3)  # driving pulses: the guardian guards them
        new_cal = cal.with_channel("servo", ChannelCalibration(1_210_000, 1_470_000, 1_690_000, 1))
        new_cal = new_cal.with_channel("motor", ChannelCalibration(1_300_000, 1_440_000, 1_600_000, -1))
        act.set_calibration(new_cal)
        new = act.guardian
        assert new is not old and new.pid != old.pid
        wait_until(lambda: old.proc.poll() is not None, 5.0)  # the old one quit cleanly...
        assert old.proc.returncode == 0 and old.failure is None
        assert act.guardian_failure is None  # ...without the actuator seeing a lost guardian
        act.command(0.5, 0.3)
        servo, motor = out.guardian_targets()[1].path, out.guardian_targets()[0].path
        assert Path(motor).read_text() != "1440000"
        new.abandon()  # the runtime "dies" without a clean quit: the new guardian steps in
        wait_until(lambda: Path(motor).read_text() == "1440000"
                   and Path(servo).read_text() == "1470000", 5.0)
    finally:
        act.close()


def test_failed_hand_over_keeps_the_old_calibration_and_guardian(tmp_path, cal, fake_sys):
    from car_runtime.actuation.calibration import ChannelCalibration
    from car_runtime.errors import HardwareError

    out = SysfsPwm(cal, root=fake_sys.pwm)
    act = Actuator(out, cal, deadline_s=DEADLINE_S)
    old = GuardianLink(out.guardian_targets(), DEADLINE_S)
    act.attach_guardian(old)
    motor = Path(out.guardian_targets()[0].path)
    try:
        # A duty file the new guardian cannot write (its start check fails): replace it by a
        # directory for the moment of the hand-over.
        saved = motor.read_text()
        motor.unlink()
        motor.mkdir()
        new_cal = cal.with_channel("servo", ChannelCalibration(1_210_000, 1_470_000, 1_690_000, 1))
        with pytest.raises(HardwareError, match="old calibration stays"):
            act.set_calibration(new_cal)
        motor.rmdir()
        motor.write_text(saved)
        assert act.guardian is old and old.failure is None and act.calibration == cal
    finally:
        act.close()
