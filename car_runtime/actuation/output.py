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

import logging
import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from car_runtime.actuation.calibration import Calibration, clamp_unit
from car_runtime.errors import CalibrationError, ConfigError
from car_runtime.timing import now_s

log = logging.getLogger(__name__)

DEFAULT_PWM_CLASS_DIR = "/sys/class/pwm"
DEFAULT_BAUD = 115_200
OUTPUT_GRAMMAR = "sysfs[:PWM_CLASS_DIR][,key=value...] | serial:URL[@BAUD][,key=value...] | record:[PATH]"


@dataclass(slots=True)
class DutyWrite:
    """One write to both channels: the applied command and the pulses sent.

    ``angle``/``throttle`` are the values actually applied (after clamping; 0 for non-finite
    input); ``context`` carries the caller's extras (frame seq, state, event...).
    """

    t_s: float
    angle: float
    throttle: float
    servo_ns: int
    motor_ns: int
    context: dict = field(default_factory=dict)


class PwmOutput(ABC):
    """One device (two channels). Context manager; ``close()`` leaves neutral and releases.

    Subclasses implement :meth:`write` (hardware writes motor/ESC first, then servo, like stock;
    on success it sets :attr:`last_pulses_ns`) and :meth:`_release`. ``close()`` writes
    ``(servo mid, motor mid)`` unless that is exactly what was last written, then releases the
    device; it is idempotent.
    """

    def __init__(self, calibration: Calibration) -> None:
        self.calibration = calibration
        self.closed = False
        self.last_pulses_ns: tuple[int, int] | None = None  # (servo, motor) last written
        self._t0_s = now_s()

    @abstractmethod
    def write(self, w: DutyWrite) -> None:
        """Send ``w.servo_ns`` and ``w.motor_ns``; raise HardwareError on failure."""

    def _release(self) -> None:
        """Free the device (close files/ports). Called once by :meth:`close`."""

    def close(self) -> None:
        if self.closed:
            return
        try:
            neutral = self.calibration.neutral_ns()
            if self.last_pulses_ns != neutral:
                self.write(
                    DutyWrite(now_s() - self._t0_s, 0.0, 0.0, neutral[0], neutral[1], {"event": "close"})
                )
        finally:
            self.closed = True
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Actuator:
    """The single value -> pulse path: calibration + one :class:`PwmOutput` + a deadline watchdog.

    Thread-safe (one lock). Writes neutral once on construction (context
    ``{"state": "disarmed", "event": "start"}``) and on :meth:`close`. With ``deadline_s``, a
    daemon thread writes neutral (with ``watchdog_context``) once when no :meth:`command` /
    :meth:`raw` arrived within ``deadline_s`` of the previous one, and counts ``deadline_misses``;
    it fires again only after a new command and another expiry.
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
        self._cond = threading.Condition(threading.Lock())
        self._t0_s = now_s()
        self._expires_at_s: float | None = None  # watchdog armed while not None
        self._closed = False
        self._pulses_ns = calibration.neutral_ns()
        self._thread: threading.Thread | None = None
        try:
            self.neutral(state="disarmed", event="start")
        except BaseException:
            try:
                output.close()
            except Exception:
                log.exception("could not close the output after a failed start")
            raise
        if deadline_s is not None:
            self._thread = threading.Thread(target=self._watch, name="actuator-watchdog", daemon=True)
            self._thread.start()

    @property
    def output(self) -> PwmOutput:
        return self._output

    # ---------------------------------------------------------------- commands

    def command(self, angle: float, throttle: float, *, t_s: float | None = None, **context: Any) -> DutyWrite:
        """Convert ``(angle, throttle)`` in [-1, 1] via the calibration, write, re-arm the watchdog.

        Out-of-range values are clamped and non-finite ones sent to neutral; each such channel
        adds 1 to :attr:`clamped` and is listed in ``context["clamped"]`` with the value asked for.
        """
        a, a_adj = clamp_unit(angle)
        th, th_adj = clamp_unit(throttle)
        with self._cond:
            self._check_open()
            cal = self.calibration
            servo_ns, _ = cal.servo.to_duty_ns(a)
            motor_ns, _ = cal.motor.to_duty_ns(th)
            if a_adj or th_adj:
                self.clamped += a_adj + th_adj
                asked = {}
                if a_adj:
                    asked["angle"] = _json_number(angle)
                if th_adj:
                    asked["throttle"] = _json_number(throttle)
                context["clamped"] = asked
            w = DutyWrite(self._t(t_s), float(a), float(th), servo_ns, motor_ns, context)
            self._write_locked(w)
            self._arm_locked()
            return w

    def neutral(self, *, t_s: float | None = None, **context: Any) -> DutyWrite:
        """Write ``(servo mid, motor mid)``. Does not re-arm the watchdog (it cancels a pending
        deadline: the output is already at rest)."""
        with self._cond:
            self._check_open()
            w = self._neutral_write(self._t(t_s), context)
            self._expires_at_s = None
            return w

    def raw(self, servo_ns: int | None, motor_ns: int | None, **context: Any) -> DutyWrite:
        """Write raw pulses (calibration tool); ``None`` keeps that channel's last pulse.

        Each pulse must be an integer within ``[0, period]``. Re-arms the watchdog.
        """
        with self._cond:
            self._check_open()
            period = self.calibration.period_ns
            for name, v in (("servo", servo_ns), ("motor", motor_ns)):
                if v is None:
                    continue
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= period:
                    raise CalibrationError(f"raw {name} pulse must be an integer in [0, {period}] ns, got {v!r}")
            s = self._pulses_ns[0] if servo_ns is None else int(servo_ns)
            m = self._pulses_ns[1] if motor_ns is None else int(motor_ns)
            cal = self.calibration
            context.setdefault("raw", True)
            w = DutyWrite(self._t(None), cal.servo.to_value(s), cal.motor.to_value(m), s, m, context)
            self._write_locked(w)
            self._arm_locked()
            return w

    def set_calibration(self, calibration: Calibration) -> None:
        """Use a new calibration from now on (for the output's neutral on close too)."""
        with self._cond:
            self.calibration = calibration
            self._output.calibration = calibration

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop the watchdog, write neutral, close the output. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        try:
            with self._cond:
                self._neutral_write(self._t(None), {"state": "disarmed", "event": "close"})
        finally:
            self._output.close()

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

    def _write_locked(self, w: DutyWrite) -> None:
        self._output.write(w)
        self._pulses_ns = (w.servo_ns, w.motor_ns)
        self.last_write = w

    def _neutral_write(self, t_s: float, context: dict) -> DutyWrite:
        servo_ns, motor_ns = self.calibration.neutral_ns()
        w = DutyWrite(t_s, 0.0, 0.0, servo_ns, motor_ns, context)
        self._write_locked(w)
        return w

    def _arm_locked(self) -> None:
        if self.deadline_s is None:
            return
        was_idle = self._expires_at_s is None
        self._expires_at_s = now_s() + self.deadline_s
        if was_idle:
            self._cond.notify_all()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._expires_at_s is None:
                    self._cond.wait()
                    continue
                remaining = self._expires_at_s - now_s()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._expires_at_s = None
                self.deadline_misses += 1
                log.warning("no command for %.3f s: writing neutral", self.deadline_s)
                try:
                    self._neutral_write(self._t(None), dict(self.watchdog_context))
                except Exception:  # keep watching; the next expiry tries again
                    log.exception("watchdog could not write neutral")


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
