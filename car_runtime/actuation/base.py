"""What every PWM output is: :class:`DutyWrite` (one write to both channels) and the
:class:`PwmOutput` base class. The backends (sysfs, serial, record) subclass it; the factory
that picks one lives in :mod:`car_runtime.actuation.output`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from car_runtime.actuation.calibration import Calibration
from car_runtime.actuation.guardian import NeutralTarget, run_bounded
from car_runtime.timing import now_s


@dataclass(slots=True)
class DutyWrite:
    """One write to both channels: the applied command and the pulses sent.

    ``angle``/``throttle`` are the values actually applied (after clamping; 0 for non-finite
    input); ``context`` carries the caller's extras (frame seq, state, event...);
    ``thread_id`` is the :func:`threading.get_ident` of the thread that made the device write
    (0 for a write another process made, such as the guardian's).
    """

    t_s: float
    angle: float
    throttle: float
    servo_ns: int
    motor_ns: int
    context: dict = field(default_factory=dict)
    thread_id: int = 0


class PwmOutput(ABC):
    """One device (two channels). Context manager; ``close()`` leaves neutral and releases.

    Subclasses implement :meth:`write` (hardware writes motor/ESC first, then servo, like stock;
    on success it sets :attr:`last_pulses_ns`) and :meth:`_release`. ``close()`` writes
    ``(servo mid, motor mid)`` unless that is exactly what was last written, then releases the
    device; it is idempotent.

    Fail-safe hooks (override where the device allows):

    - :meth:`guardian_targets`: the neutral writes another process (the guardian) can make on
      its own, or ``None`` when no other process can reach this output;
    - :meth:`emergency_neutral`: neutral on every channel that still accepts writes, each
      bounded in time, never raising -- for shutdown paths where a write may be stuck;
    - :attr:`busy`: what a write in progress is writing to (for "stuck" messages).
    """

    def __init__(self, calibration: Calibration) -> None:
        self.calibration = calibration
        self.closed = False
        self.last_pulses_ns: tuple[int, int] | None = None  # (servo, motor) last written
        self.busy: str | None = None
        self._t0_s = now_s()

    @abstractmethod
    def write(self, w: DutyWrite) -> None:
        """Send ``w.servo_ns`` and ``w.motor_ns``; raise HardwareError on failure."""

    def _release(self) -> None:
        """Free the device (close files/ports). Called once by :meth:`close`."""

    def neutral_write(self, event: str = "close") -> DutyWrite:
        servo_ns, motor_ns = self.calibration.neutral_ns()
        return DutyWrite(now_s() - self._t0_s, 0.0, 0.0, servo_ns, motor_ns, {"event": event})

    def guardian_targets(self) -> list[NeutralTarget] | None:
        """Neutral writes the guardian process can make itself (None: it cannot reach us)."""
        return None

    def emergency_neutral(self, timeout_s: float = 0.5) -> dict[str, str]:
        """Neutral on every channel that still accepts it; ``{channel: outcome}``, never raises.

        The default writes both channels through :meth:`write` on a bounded thread."""
        w = self.neutral_write("emergency")
        return {"servo+motor": run_bounded(lambda: self.write(w), timeout_s, "emergency-neutral")}

    def close(self) -> None:
        if self.closed:
            return
        try:
            neutral = self.calibration.neutral_ns()
            if self.last_pulses_ns != neutral:
                self.write(self.neutral_write("close"))
        finally:
            self.closed = True
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
