"""Whatever ends or freezes `car-runtime run --arm`, both channels end at neutral.

A real `run` drives a real model from real frames onto a sysfs-shaped tree in a temp dir; the
tests send real signals (and close a real pty, a real pipe) and watch the duty files from
outside. SIGSTOP and SIGKILL cannot be handled by the process: there the guardian process
writes neutral. Times are printed (measured), never asserted tightly: the bounds are generous
so a loaded 2-core box does not make the tests flaky.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import termios
import threading
import time

import pytest
from failsafe_helpers import MOTOR_MID, SERVO_MID, Car, is_guardian, long_frames
from helpers import car_runtime_cmd

DEADLINE_MS = 100
GENEROUS_S = 5.0  # the bound the tests assert; the measured figure is printed


@pytest.fixture
def frames(footage_seq_dir, tmp_path):
    return long_frames(footage_seq_dir, tmp_path / "frames")


def _report(what: str, seconds: float) -> None:
    print(f"{what}: neutral on both duty files after {seconds * 1e3:.1f} ms "
          f"(deadline {DEADLINE_MS} ms)")


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2],
                         ids=lambda s: signal.Signals(s).name)
def test_handled_signal_neutral_then_clean_exit(demo_model, frames, tmp_path, sig):
    with Car(tmp_path, demo_model, frames) as car:
        car.wait_driving()
        t = car.send(sig)
        elapsed = car.wait_mid(t, GENEROUS_S)
        code = car.wait()
        _report(signal.Signals(sig).name, elapsed)
        assert code == 128 + sig, car.stderr()
        assert car.at_mid()
        err = car.stderr()
        assert f"{signal.Signals(sig).name} received" in err
        assert "Traceback" not in err and "Exception ignored" not in err
        assert not any(is_guardian(p) for p in car.guardian_pids())  # it went with the run


@pytest.mark.parametrize("sig, logged, not_logged", [
    (signal.SIGTSTP, ["SIGTSTP: disarming", "SIGCONT: resumed, disarmed"], "GUARDIAN_TRIP"),
    (signal.SIGSTOP, ["car-runtime guardian[", "no heartbeat from car-runtime",
                      "armed -> fault (GUARDIAN_TRIP)"], "SIGTSTP"),
], ids=["SIGTSTP", "SIGSTOP"])
def test_stopped_then_continued_never_drives_on_its_own(demo_model, frames, tmp_path, sig,
                                                        logged, not_logged):
    """Ctrl-Z: the runtime disarms (neutral) and stops itself. SIGSTOP cannot be caught: the
    guardian writes neutral and the loop comes back in fault. Either way, after SIGCONT the
    frames keep coming and not one driving pulse is written."""
    with Car(tmp_path, demo_model, frames) as car:
        car.wait_driving()
        t = car.send(sig)
        elapsed = car.wait_mid(t, GENEROUS_S)
        car.wait_state("T")  # stopped (SIGTSTP: by itself, after neutral)
        _report(signal.Signals(sig).name + (" (guardian)" if sig == signal.SIGSTOP else ""),
                elapsed)
        car.watch_no_driving(0.3)
        assert car.state() == "T"
        car.send(signal.SIGCONT)
        polls = car.watch_no_driving(1.5)
        assert car.proc.poll() is None
        car.send(signal.SIGTERM)
        assert car.wait() == 143, car.stderr()
        err = car.stderr()
        assert all(line in err for line in logged), err
        assert not_logged not in err
        print(f"after SIGCONT: {polls} polls of the duty files, no driving pulse")


def test_the_guardians_neutral_is_in_the_flight_recorders_audit(demo_model, frames, tmp_path):
    """SIGSTOP with --record: the bag's audit topic holds the guardian process's own neutral
    (event guardian_neutral, stamped when the guardian wrote, neutral pulses) before the loop's
    FAULT write, read back with the ``mcap`` package."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    bags = tmp_path / "bags"
    with Car(tmp_path, demo_model, frames, "--record", str(bags)) as car:
        car.wait_driving()
        car.send(signal.SIGSTOP)
        car.wait_state("T")
        # stopped well past the deadline: the guardian trips (mid may come from the in-process
        # watchdog a moment before the stop on a loaded box, so wait for the guardian itself)
        deadline = time.monotonic() + GENEROUS_S
        while "car-runtime guardian[" not in car.stderr():
            assert time.monotonic() < deadline, car.stderr()
            time.sleep(0.01)
        car.watch_no_driving(0.3)
        car.send(signal.SIGCONT)
        car.watch_no_driving(0.5)
        car.send(signal.SIGTERM)
        assert car.wait() == 143, car.stderr()
    (bag,) = bags.glob("*/*.mcap")
    with open(bag, "rb") as fh:
        writes = [m for _, ch, _, m in make_reader(fh, decoder_factories=[DecoderFactory()])
                  .iter_decoded_messages() if ch.topic == "/car_runtime/writes"]
    events = [w.event for w in writes]
    i = events.index("guardian_neutral")
    g = writes[i]
    assert (g.state, g.servo_ns, g.motor_ns) == ("fault", SERVO_MID, MOTOR_MID)
    # the loop's FAULT write follows (the actuator watchdog's neutral may come in between)
    fault = next(w for w in writes[i + 1:] if w.event == "guardian_trip" and w.state == "fault")
    driving = [k for k, w in enumerate(writes) if (w.servo_ns, w.motor_ns) != (SERVO_MID, MOTOR_MID)]
    assert driving and driving[-1] < i  # nothing drove after the trip ...
    assert writes[driving[-1]].t < g.t < fault.t  # ... and the guardian wrote in between
    assert events.count("guardian_neutral") == 1


def test_sigkill_guardian_writes_neutral(demo_model, frames, tmp_path):
    with Car(tmp_path, demo_model, frames) as car:
        car.wait_driving()
        t = car.send(signal.SIGKILL)
        elapsed = car.wait_mid(t, GENEROUS_S)
        _report("SIGKILL (guardian)", elapsed)
        assert car.wait() == -signal.SIGKILL
        time.sleep(0.2)
        assert car.at_mid()
        assert "ended without closing its outputs" in car.stderr()
        deadline = time.monotonic() + 5
        while any(is_guardian(p) for p in car.guardian_pids()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(is_guardian(p) for p in car.guardian_pids())  # it exits after neutral


def test_controlling_pty_closed_is_sighup(demo_model, frames, tmp_path):
    """An SSH session dropping: the terminal hangs up; the run ends 129 at neutral, and its log
    lines to the dead terminal do not turn into tracebacks."""
    master, slave = os.openpty()

    def make_controlling_tty() -> None:  # in the child: new session, the pty as its terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    popen = dict(stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                 preexec_fn=make_controlling_tty)
    stop_reading = threading.Event()
    with Car(tmp_path, demo_model, frames, popen=popen) as car:
        os.close(slave)

        def drain() -> None:  # a terminal someone looks at: read what it prints
            while not stop_reading.is_set():
                if select.select([master], [], [], 0.02)[0]:
                    try:
                        if not os.read(master, 4096):
                            return
                    except OSError:
                        return

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        car.wait_driving()
        stop_reading.set()
        reader.join()
        t = time.monotonic()
        os.close(master)  # the terminal goes away
        elapsed = car.wait_mid(t, GENEROUS_S)
        _report("pty closed (SIGHUP)", elapsed)
        assert car.wait() == 129, car.stderr()
        assert car.at_mid()


def test_closed_output_pipe_is_sigpipe(demo_model, frames, tmp_path):
    """`car-runtime run 2>&1 | head`: the reader goes away; the next status line raises SIGPIPE:
    neutral, exit 141 (the log has nowhere to go, so only the exit status and the wire tell)."""
    popen = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with Car(tmp_path, demo_model, frames, "--status-interval", "0.2", popen=popen) as car:
        car.wait_driving()
        t = time.monotonic()
        car.proc.stdout.close()
        elapsed = car.wait_mid(t, GENEROUS_S)
        _report("output pipe closed (SIGPIPE)", elapsed)
        assert car.wait() == 141
        assert car.at_mid()


def test_sigpipe_from_elsewhere_does_not_stop_the_car(demo_model, frames, tmp_path):
    """A SIGPIPE while stdout/stderr are fine came from a socket (a web client that went away):
    ignored, the car drives on."""
    with Car(tmp_path, demo_model, frames) as car:
        car.wait_driving()
        car.send(signal.SIGPIPE)
        time.sleep(0.5)
        car.wait_driving(10)  # still driving
        assert car.proc.poll() is None
        car.send(signal.SIGINT)
        assert car.wait() == 130, car.stderr()
        assert "SIGPIPE received" not in car.stderr()


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_burst_of_50_signals_in_100_ms(demo_model, frames, tmp_path, sig, code):
    with Car(tmp_path, demo_model, frames) as car:
        car.wait_driving()
        t = time.monotonic()
        for _ in range(50):
            os.kill(car.proc.pid, sig)
            time.sleep(0.002)
        sent_s = time.monotonic() - t
        assert car.wait() == code, car.stderr()
        assert car.at_mid()
        err = car.stderr()
        assert "Exception ignored" not in err and "Traceback" not in err, err
        assert "KeyboardInterrupt" not in err
        print(f"50 x {signal.Signals(sig).name} in {sent_s * 1e3:.0f} ms: exit {code}, neutral")


def test_stop_signal_during_startup_ends_cleanly(demo_model, frames, tmp_path):
    """SIGTERM while the model loads (before the loop runs): neutral, 143, one line."""
    with Car(tmp_path, demo_model, frames) as car:
        end = time.monotonic() + 60
        while "guardian pid" not in car.stderr() and time.monotonic() < end:
            time.sleep(0.002)  # the outputs are open; the model is loading
        car.send(signal.SIGTERM)
        assert car.wait() == 143, car.stderr()
        assert car.at_mid()
        err = car.stderr()
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert ("stopped during start-up" in err) or ("SIGTERM received" in err)


def test_no_guardian_trip_while_driving_normally(demo_model, frames, tmp_path):
    """The heartbeat keeps the guardian quiet while the loop runs (also through camera gaps
    longer than the deadline: the actuation watchdog handles those, the car stays armed)."""
    with Car(tmp_path, demo_model, frames, fps=5) as car:  # 200 ms between frames > deadline
        car.wait_driving()
        time.sleep(2.0)
        car.send(signal.SIGINT)
        assert car.wait() == 130
        err = car.stderr()
        assert "no command for 0.100 s: writing neutral" in err  # the in-process watchdog
        assert "car-runtime guardian[" not in err, err  # ... and no guardian trip
        assert "GUARDIAN_TRIP" not in err


# -- a PWM write that blocks or fails ------------------------------------------------------------

STALL_MS = 500


def test_blocking_duty_file_ends_with_exit_5_and_neutral_where_it_can(demo_model, frames,
                                                                      tmp_path):
    """The motor's duty_cycle becomes a FIFO nobody reads (a write that never returns, like a
    hung driver): the guardian sees the stuck write and puts the servo at neutral; the run ends
    with exit 5 and one line within the stall timeout + 1 s."""
    with Car(tmp_path, demo_model, frames, "--stall-timeout-ms", str(STALL_MS)) as car:
        car.wait_driving()
        car.motor_file.unlink()
        os.mkfifo(car.motor_file)
        t = time.monotonic()
        code = car.wait(30)
        took_s = time.monotonic() - t
        err = car.stderr()
        assert code == 5, err
        assert took_s < STALL_MS / 1e3 + 1.0 + 2.0, took_s  # + the loop's next frame, + slack
        assert car.duty()[1] == SERVO_MID
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
        assert "pwm0/duty_cycle has not returned" in errors[0]
        assert "servo ok" in errors[0] and "motor failed (ENXIO" in errors[0]
        assert "Traceback" not in err
        assert "a PWM write in car-runtime" in err  # the guardian saw it first
        print(f"FIFO duty file: exit 5 {took_s:.2f} s after the swap (stall timeout "
              f"{STALL_MS} ms); {errors[0]}")


def test_failing_duty_file_ends_with_exit_3_and_neutral_where_it_can(demo_model, frames,
                                                                     tmp_path):
    """The motor's duty_cycle becomes a directory (every write fails, like EIO): exit 3, one
    line naming the file and the error, the servo at neutral."""
    with Car(tmp_path, demo_model, frames) as car:
        car.wait_driving()
        car.motor_file.unlink()
        car.motor_file.mkdir()
        t = time.monotonic()
        code = car.wait(30)
        took_s = time.monotonic() - t
        err = car.stderr()
        assert code == 3, err
        assert car.duty()[1] == SERVO_MID
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
        assert "pwm0/duty_cycle" in errors[0] and "EISDIR" in errors[0]
        assert "servo ok" in errors[0]
        assert "Traceback" not in err and "Exception in thread" not in err, err
        print(f"directory as duty file: exit 3 after {took_s:.2f} s; {errors[0]}")


def test_serial_controller_gets_neutral_from_the_guardian_after_sigkill(demo_model, frames,
                                                                        tmp_path):
    """`--output serial:/dev/pts/N` with a Maestro simulator on the pty's other end: the runtime
    holds the port; killed, the guardian sends the neutral set-target commands itself."""
    from actuation_fakes import MaestroSim, wait_until

    sim = MaestroSim()
    try:
        proc = subprocess.Popen(
            [*car_runtime_cmd(), "run", "--model", str(demo_model), "--camera", str(frames),
             "--fps", "30", "--output", f"serial:{sim.port}", "--arm", "--status-interval", "0",
             "--calibration", str(tmp_path / "none.json"), "--max-frame-age-ms", "1000"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "err.txt", "w"))
        motor_mid, servo_mid = MOTOR_MID // 250, SERVO_MID // 250
        wait_until(lambda: any(ch == 0 and t != motor_mid for ch, t in sim.targets), 120,
                   "driving commands")
        t = time.monotonic()
        proc.kill()
        proc.wait(30)
        wait_until(lambda: sim.targets[-2:] == [(0, motor_mid), (1, servo_mid)], 10,
                   "neutral from the guardian")
        took = time.monotonic() - t
        err = (tmp_path / "err.txt").read_text()
        assert "ended without closing its outputs" in err and "servo+motor ok" in err, err
        assert not sim.errors
        print(f"SIGKILL with a serial controller: neutral commands after {took * 1e3:.1f} ms")
    finally:
        sim.close()
