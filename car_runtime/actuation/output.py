"""PWM outputs, the :class:`Actuator` (the single value -> pulse path) and the output grammar.

Output grammar (CLI ``--output``, config file, ROS parameter)::

    sysfs[:PWM_CLASS_DIR][,key=value...]   Linux sysfs PWM, default dir /sys/class/pwm
                                           keys: chip=pwmchipN, motor=0, servo=1,
                                                 gpio=436|514 (servo power enable), gpio_root=DIR
    serial:URL[@BAUD][,key=value...]       servo controller (Pololu Maestro compact protocol) on a
                                           pyserial URL: /dev/ttyACM0, loop://, rfc2217://...
                                           keys: motor=0, servo=1; BAUD default 115200
    record:[PATH]                          record every write (JSON lines at PATH; memory only
                                           when PATH is empty)

Neutral is the resting state: the :class:`Actuator` writes neutral when created, when closed, and
(with ``deadline_s``) by itself from a watchdog thread when commands stop arriving.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from car_runtime.actuation.base import DutyWrite, PwmOutput
from car_runtime.actuation.calibration import Calibration, clamp_unit
from car_runtime.actuation.serial_servo import DEFAULT_BAUD
from car_runtime.errors import CalibrationError, ConfigError, HardwareError
from car_runtime.timing import now_s

if TYPE_CHECKING:
    from car_runtime.actuation.guardian import GuardianLink

log = logging.getLogger(__name__)

__all__ = ["Actuator", "DutyWrite", "PwmOutput", "OutputSpec", "open_output", "parse_output_spec",
           "OUTPUT_GRAMMAR", "DEFAULT_BAUD", "DEFAULT_PWM_CLASS_DIR"]

DEFAULT_PWM_CLASS_DIR = "/sys/class/pwm"
OUTPUT_GRAMMAR = "sysfs[:PWM_CLASS_DIR][,key=value...] | serial:URL[@BAUD][,key=value...] | record:[PATH]"
#: How long close() waits for a device write in progress before it gives up on that channel.
CLOSE_WAIT_S = 1.0


class Actuator:
    """The single value -> pulse path: calibration + one :class:`PwmOutput` + a deadline
    watchdog (+ the guardian process, when one is attached).

    Thread-safe. Two locks, never held across each other's waits: ``_io`` serialises device
    writes (it is held across ``output.write``), ``_cond`` guards the bookkeeping (never held
    across a device write). Writes neutral once on construction (context ``{"state":
    "disarmed", "event": "start"}``) and on :meth:`close`. With ``deadline_s``, a daemon thread
    writes neutral (with ``watchdog_context``) once when no :meth:`command` / :meth:`raw`
    arrived within ``deadline_s`` of the previous one, and counts ``deadline_misses``; it fires
    again only after a new command and another expiry.

    Shutdown never hangs on a device: :meth:`close` waits at most ``CLOSE_WAIT_S`` for a write in
    progress, then falls back to :meth:`emergency_neutral` (each channel on its own bounded
    thread); neither raises for a device error (they log one line and keep the outcome in
    :attr:`close_outcome`).

    With a guardian (:meth:`attach_guardian`): every device write is bracketed for it (a stuck
    write is visible), its time is the heartbeat, and a driving command is refused (neutral is
    written instead, context ``event="guardian_trip"``) while a guardian trip is pending -- the
    check runs right before and right after the device write. If the guardian dies, the actuator
    writes neutral and refuses to drive from then on (:attr:`guardian_failure`).
    """

    def __init__(
        self,
        output: PwmOutput,
        calibration: Calibration,
        *,
        deadline_s: float | None = None,
        watchdog_context: dict | None = None,
    ) -> None:
        if deadline_s is not None and not (deadline_s > 0 and math.isfinite(deadline_s)):
            raise ConfigError(f"actuator deadline must be a positive number of seconds, got {deadline_s!r}")
        self._output = output
        self.calibration = calibration
        self.deadline_s = deadline_s
        self.watchdog_context = dict(watchdog_context or {"state": "fault", "event": "deadline"})
        self.clamped = 0
        self.deadline_misses = 0
        self.last_write: DutyWrite | None = None
        self.close_outcome: str | None = None  # what close() could do, when it was not plain
        self.guardian: GuardianLink | None = None
        self._io = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._t0_s = now_s()
        self._expires_at_s: float | None = None  # watchdog armed while not None
        self._closed = False
        self._pulses_ns = calibration.neutral_ns()
        self._writing_since_s: float | None = None
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[DutyWrite], None]] = []
        self._written: collections.deque[DutyWrite] = collections.deque()  # not yet delivered
        self._deliver_lock = threading.RLock()  # delivery order; never needed by a device write
        try:
            self.neutral(state="disarmed", event="start")
        except BaseException:
            try:
                output.close()
            except Exception as exc:  # noqa: BLE001 - the start error is the one to report
                log.error("could not close the output after a failed start: %s", exc)
            raise
        if deadline_s is not None:
            self._thread = threading.Thread(target=self._watch, name="actuator-watchdog", daemon=True)
            self._thread.start()

    @property
    def output(self) -> PwmOutput:
        return self._output

    # ---------------------------------------------------------------- write listeners

    def add_write_listener(self, fn: Callable[[DutyWrite], None]) -> None:
        """Call ``fn(w)`` after each completed write, whoever wrote it (see the class docstring).

        Calls come in write order, in the thread that wrote or in another writing thread that
        was delivering at the time (``w.thread_id`` says who wrote), never while the device lock
        is held; a write call returns only after ``fn(w)`` has returned. ``fn`` must return at
        once (copy a reference, ``put_nowait``); one that raises is logged and removed. Writes
        made before it was added are not replayed."""
        self._listeners = [*self._listeners, fn]

    def remove_write_listener(self, fn: Callable[[DutyWrite], None]) -> None:
        self._listeners = [f for f in self._listeners if f is not fn]

    def _deliver(self, wait_s: float = -1) -> None:
        """Hand the completed writes to the listeners (call without ``_io``). With ``wait_s``
        (emergency paths) give up after that long if another thread is delivering. No
        lock-free shortcut: another thread may have taken this thread's write off the deque and
        still be calling the listeners with it; taking the lock waits until it is done."""
        if not self._deliver_lock.acquire(timeout=wait_s):
            return
        try:
            while True:
                try:
                    w = self._written.popleft()
                except IndexError:
                    return
                for fn in self._listeners:
                    try:
                        fn(w)
                    except Exception:  # a listener failing never stops a write
                        log.exception("write listener %r failed; removed", fn)
                        self.remove_write_listener(fn)
        finally:
            self._deliver_lock.release()

    # ---------------------------------------------------------------- guardian

    def attach_guardian(self, link: "GuardianLink") -> None:
        """Feed ``link`` from now on; if it fails, neutral and no more driving."""
        self.guardian = link
        link.on_failure(self._guardian_lost)

    @property
    def guardian_failure(self) -> str | None:
        g = self.guardian
        return g.failure if g is not None else None

    def take_guardian_trip(self) -> dict | None:
        """A guardian trip not yet taken (see :meth:`GuardianLink.take_trip`), else None.

        The guardian's own neutral write (made by its process, not through this actuator) is
        then handed to the write listeners, so an audit holds it: neutral pulses, ``t`` = when
        the guardian wrote, context ``{"state": "fault", "event": "guardian_neutral",
        "guardian": <the trip>}``. Its ``t`` is earlier than the writes already delivered
        since then (they were made while the trip was unseen)."""
        g = self.guardian
        trip = g.take_trip() if g is not None else None
        if trip is not None and self._listeners:
            self._written.append(self._neutral_for(
                self._t(None) - trip["ago_ms"] / 1e3,
                {"state": "fault", "event": "guardian_neutral", "guardian": dict(trip)}))
            self._deliver()
        return trip

    def set_armed(self, armed: bool) -> None:
        """Tell the guardian whether the loop may drive (it guards an armed loop even at rest)."""
        g = self.guardian
        if g is not None:
            g.set_armed(armed)

    def _guardian_lost(self, reason: str) -> None:
        if self._closed:
            return
        log.error("%s: writing neutral; the car will not drive without its fail-safe", reason)
        try:
            self.neutral(state="fault", event="guardian_lost")
        except Exception as exc:  # noqa: BLE001 - logged; the loop ends the run next
            log.error("neutral after losing the guardian failed: %s", exc)

    def _refuse_driving(self) -> str | None:
        g = self.guardian
        if g is None:
            return None
        if g.failure is not None:
            return "guardian_lost"
        if g.trip_pending():
            return "guardian_trip"
        return None

    # ---------------------------------------------------------------- commands

    def command(self, angle: float, throttle: float, *, t_s: float | None = None, **context: Any) -> DutyWrite:
        """Convert ``(angle, throttle)`` in [-1, 1] via the calibration, write, re-arm the watchdog.

        Out-of-range values are clamped and non-finite ones sent to neutral; each such channel
        adds 1 to :attr:`clamped` and is listed in ``context["clamped"]`` with the value asked for.
        While the guardian forbids driving (see the class docstring) neutral is written instead.
        """
        a, a_adj = clamp_unit(angle)
        th, th_adj = clamp_unit(throttle)
        cal = self.calibration
        servo_ns, _ = cal.servo.to_duty_ns(a)
        motor_ns, _ = cal.motor.to_duty_ns(th)
        if a_adj or th_adj:
            asked = {}
            if a_adj:
                asked["angle"] = _json_number(angle)
            if th_adj:
                asked["throttle"] = _json_number(throttle)
            context["clamped"] = asked
        try:
            with self._io:
                self._check_open()
                if a_adj or th_adj:
                    with self._cond:
                        self.clamped += a_adj + th_adj
                w = DutyWrite(self._t(t_s), float(a), float(th), servo_ns, motor_ns, context)
                w = self._device_write(w)
                if w.context.get("event") not in ("guardian_trip", "guardian_lost"):
                    self._arm_watchdog()
                return w
        finally:
            self._deliver()

    def neutral(self, *, t_s: float | None = None, **context: Any) -> DutyWrite:
        """Write ``(servo mid, motor mid)``. Does not re-arm the watchdog (it cancels a pending
        deadline: the output is already at rest)."""
        try:
            with self._io:
                self._check_open()
                w = self._device_write(self._neutral_for(self._t(t_s), context))
                with self._cond:
                    self._expires_at_s = None
                return w
        finally:
            self._deliver()

    def raw(self, servo_ns: int | None, motor_ns: int | None, **context: Any) -> DutyWrite:
        """Write raw pulses (calibration tool); ``None`` keeps that channel's last pulse.

        Each pulse must be an integer within ``[0, period]``. Re-arms the watchdog.
        """
        period = self.calibration.period_ns
        for name, v in (("servo", servo_ns), ("motor", motor_ns)):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= period:
                raise CalibrationError(f"raw {name} pulse must be an integer in [0, {period}] ns, got {v!r}")
        try:
            with self._io:
                self._check_open()
                s = self._pulses_ns[0] if servo_ns is None else int(servo_ns)
                m = self._pulses_ns[1] if motor_ns is None else int(motor_ns)
                cal = self.calibration
                context.setdefault("raw", True)
                w = DutyWrite(self._t(None), cal.servo.to_value(s), cal.motor.to_value(m), s, m,
                              context)
                w = self._device_write(w)
                self._arm_watchdog()
                return w
        finally:
            self._deliver()

    def set_calibration(self, calibration: Calibration) -> None:
        """Use a new calibration from now on (for the output's neutral on close too).

        A guardian only knows the neutral pulses it was started with: when they change, a new
        guardian with the new ones starts first, then the old one quits, so the car is never
        unguarded. If the new one cannot start, the old calibration stays (HardwareError)."""
        old = self.guardian
        if old is None or calibration.neutral_ns() == self.calibration.neutral_ns():
            with self._io:
                self.calibration = calibration
                self._output.calibration = calibration
            return
        from car_runtime.actuation.guardian import GuardianError, GuardianLink

        with self._io:
            previous = self.calibration
            self.calibration = calibration
            self._output.calibration = calibration
            targets = self._output.guardian_targets()
            try:
                link = GuardianLink(targets, old.deadline_s)
            except GuardianError as exc:
                self.calibration = previous
                self._output.calibration = previous
                raise HardwareError(
                    f"the guardian for the new calibration could not start ({exc}); the old "
                    "calibration stays in use until car-runtime restarts"
                ) from None
            link.inherit(old)
            self.guardian = link
            link.on_failure(self._guardian_lost)
        old.close(clean=True)
        log.info("calibration changed: guardian pid %d took over from pid %d", link.pid, old.pid)

    # ---------------------------------------------------------------- lifecycle

    def write_stuck_s(self) -> float | None:
        """How long the device write in progress has been running (None: no write running)."""
        since = self._writing_since_s
        return None if since is None else now_s() - since

    @property
    def busy_target(self) -> str | None:
        """What the write in progress is writing to (for messages)."""
        return self._output.busy

    def emergency_neutral(self, timeout_s: float = 0.5) -> dict[str, str]:
        """Neutral on every channel that still accepts writes, without the device lock, each
        bounded by ``timeout_s``: ``{channel: "ok" | "failed (...)" | "stuck (...)"}``.

        For paths that must end now (a stuck or failing write); the guardian, if any, is told to
        write neutral too."""
        with self._cond:
            self._expires_at_s = None
        results = self._output.emergency_neutral(timeout_s)
        if all(v == "ok" for v in results.values()):
            self._pulses_ns = self.calibration.neutral_ns()
        if self._listeners and any(v == "ok" for v in results.values()):
            w = self._neutral_for(self._t(None), {"event": "emergency"})
            if not all(v == "ok" for v in results.values()):
                w.context["channels"] = dict(results)
            self._written.append(w)
            self._deliver(wait_s=timeout_s)
        return results

    def close(self) -> None:
        """Stop the watchdog, write neutral, close the output and the guardian. Idempotent;
        never raises for a device error and never waits long for a stuck device."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        got_io = self._io.acquire(timeout=CLOSE_WAIT_S)
        clean = False
        try:
            if got_io:
                try:
                    self._device_write(self._neutral_for(self._t(None),
                                                         {"state": "disarmed", "event": "close"}))
                    self._output.close()
                    clean = True
                except Exception as exc:  # noqa: BLE001 - reported on one line below
                    self._close_fallback(f"neutral on close failed: {exc}")
            else:
                stuck = self.write_stuck_s() or 0.0
                self._close_fallback(f"a write to {self.busy_target or 'the output'} has been "
                                     f"stuck for {stuck:.1f} s")
        finally:
            if got_io:
                self._io.release()
            self._deliver(wait_s=CLOSE_WAIT_S)
            if self.guardian is not None:
                self.guardian.close(clean=clean)
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(CLOSE_WAIT_S)

    def _close_fallback(self, why: str) -> None:
        results = self.emergency_neutral()
        self.close_outcome = f"{why}; neutral: " + ", ".join(f"{k} {v}" for k, v in results.items())
        log.error("%s", self.close_outcome)
        if not self._output.busy:
            try:
                self._output.closed = True
                self._output._release()
            except Exception:  # noqa: BLE001 - the device is already in trouble
                pass

    def __enter__(self) -> "Actuator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals

    def _t(self, t_s: float | None) -> float:
        return now_s() - self._t0_s if t_s is None else t_s

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("Actuator is closed")

    def _neutral_for(self, t_s: float, context: dict) -> DutyWrite:
        servo_ns, motor_ns = self.calibration.neutral_ns()
        return DutyWrite(t_s, 0.0, 0.0, servo_ns, motor_ns, context)

    def _device_write(self, w: DutyWrite) -> DutyWrite:
        """Write ``w`` (caller holds ``_io``); with a guardian, bracket it and refuse to drive
        while a trip is pending. Returns what was written."""
        neutral = self.calibration.neutral_ns()
        driving = (w.servo_ns, w.motor_ns) != neutral
        g = self.guardian
        if g is None:
            self._write_out(w)
            return w
        refusal = self._refuse_driving() if driving else None
        if refusal is not None:
            w = self._neutral_for(w.t_s, {**w.context, "event": refusal})
            driving = False
        g.begin_write(driving)
        try:
            self._write_out(w)
        finally:
            g.end_write(driving)  # a failed driving write may have left one channel driving
        if driving:
            refusal = self._refuse_driving()  # the guardian tripped during the write: undo it
            if refusal is not None:
                w = self._neutral_for(w.t_s, {**w.context, "event": refusal})
                g.begin_write(False)
                try:
                    self._write_out(w)
                finally:
                    g.end_write(False)
        return w

    def _write_out(self, w: DutyWrite) -> None:
        self._writing_since_s = now_s()
        try:
            self._output.write(w)
        finally:
            self._writing_since_s = None
        self._pulses_ns = (w.servo_ns, w.motor_ns)
        w.thread_id = threading.get_ident()
        self.last_write = w
        if self._listeners:
            self._written.append(w)

    def _arm_watchdog(self) -> None:
        if self.deadline_s is None:
            return
        with self._cond:
            was_idle = self._expires_at_s is None
            self._expires_at_s = now_s() + self.deadline_s
            if was_idle:
                self._cond.notify_all()

    def _watch(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._expires_at_s is None:
                        self._cond.wait()
                        continue
                    remaining = self._expires_at_s - now_s()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._closed:
                    return
            # Expired as seen without the device lock; confirm under it (a command may have
            # just arrived). Blocks while a device write is in progress.
            with self._io:
                with self._cond:
                    if self._closed:
                        return
                    if self._expires_at_s is None or now_s() < self._expires_at_s:
                        continue
                    self._expires_at_s = None
                    self.deadline_misses += 1
                log.warning("no command for %.3f s: writing neutral", self.deadline_s)
                try:
                    self._device_write(self._neutral_for(self._t(None), dict(self.watchdog_context)))
                except Exception as exc:  # noqa: BLE001 - keep watching; the next expiry retries
                    log.error("watchdog could not write neutral: %s", exc)
            self._deliver()


def _json_number(v: Any) -> float | str:
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return str(v)
    return f if math.isfinite(f) else str(f)


# ------------------------------------------------------------------ output grammar


@dataclass(frozen=True)
class OutputSpec:
    """A parsed output spec. ``kind`` is sysfs | serial | record; ``target`` the dir/URL/path."""

    kind: str
    target: str
    baud: int | None = None
    options: tuple[tuple[str, str], ...] = ()

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)

    def __str__(self) -> str:
        s = f"{self.kind}:{self.target}"
        if self.baud is not None:
            s += f"@{self.baud}"
        return s + "".join(f",{k}={v}" for k, v in self.options)


_OPTION_KEYS = {"sysfs": {"chip", "motor", "servo", "gpio", "gpio_root"}, "serial": {"motor", "servo"}}


def _bad(spec: str, why: str) -> ConfigError:
    return ConfigError(f"bad output {spec!r} ({why}); use {OUTPUT_GRAMMAR}")


def parse_output_spec(spec: str) -> OutputSpec:
    """Parse the output grammar (see the module docstring); bad spec -> ConfigError."""
    if not isinstance(spec, str) or not spec.strip():
        raise _bad(str(spec), "empty")
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    if kind == "record":
        return OutputSpec("record", rest)
    if kind not in ("sysfs", "serial"):
        raise _bad(spec, f"unknown output kind {kind!r}")
    parts = rest.split(",") if rest else [""]
    target, opts = parts[0], []
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq or key not in _OPTION_KEYS[kind] or not value:
            raise _bad(spec, f"unknown option {part!r}; {kind} takes {', '.join(sorted(_OPTION_KEYS[kind]))}")
        if key in ("motor", "servo", "gpio") and not value.isdigit():
            raise _bad(spec, f"{key} must be a number, got {value!r}")
        opts.append((key, value))
    if kind == "sysfs":
        return OutputSpec("sysfs", target or DEFAULT_PWM_CLASS_DIR, None, tuple(opts))
    if not target:
        raise _bad(spec, "serial needs a port URL, e.g. serial:/dev/ttyACM0")
    baud = None
    head, at, tail = target.rpartition("@")
    if at and tail.isdigit() and head:
        target, baud = head, int(tail)
        if baud <= 0:
            raise _bad(spec, "baud must be positive")
    return OutputSpec("serial", target, baud or DEFAULT_BAUD, tuple(opts))


def open_output(spec: str | OutputSpec, calibration: Calibration) -> PwmOutput:
    """Open the output named by ``spec`` (a string in the output grammar or an OutputSpec)."""
    s = parse_output_spec(spec) if isinstance(spec, str) else spec
    if s.kind == "record":
        from car_runtime.actuation.recorder import Recorder

        return Recorder(calibration, s.target or None)
    if s.kind == "serial":
        from car_runtime.actuation.serial_servo import SerialServo

        return SerialServo(
            calibration,
            s.target,
            baud=s.baud or DEFAULT_BAUD,
            motor_channel=int(s.option("motor", "0")),
            servo_channel=int(s.option("servo", "1")),
        )
    if s.kind == "sysfs":
        from car_runtime.actuation.sysfs_pwm import DEFAULT_GPIO_ROOT, SysfsPwm

        gpio = s.option("gpio")
        return SysfsPwm(
            calibration,
            root=Path(s.target),
            chip=s.option("chip"),
            motor_channel=int(s.option("motor", "0")),
            servo_channel=int(s.option("servo", "1")),
            gpio=int(gpio) if gpio is not None else None,
            gpio_root=Path(s.option("gpio_root", str(DEFAULT_GPIO_ROOT))),
        )
    raise _bad(str(spec), f"unknown output kind {s.kind!r}")
