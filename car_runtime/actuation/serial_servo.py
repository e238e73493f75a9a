"""USB/serial servo controller output: Pololu Maestro compact protocol over pyserial.

Set target (compact protocol): ``0x84, channel, target & 0x7F, (target >> 7) & 0x7F`` with the
target in quarter-microseconds (``duty_ns // 250``). The port is a pyserial URL
(``/dev/ttyACM0``, ``loop://``, ``rfc2217://host:port``, ``spy:///dev/ttyACM0`` to hexdump the
traffic). The Maestro's USB port ignores the baud rate; its TTL port auto-detects it.
ESC first, then servo, in one write.
"""

from __future__ import annotations

import os

from car_runtime.actuation.base import DutyWrite, PwmOutput
from car_runtime.actuation.calibration import Calibration
from car_runtime.actuation.guardian import NeutralTarget, run_bounded, write_target
from car_runtime.errors import HardwareError

DEFAULT_BAUD = 115_200

SET_TARGET = 0x84
NS_PER_UNIT = 250  # Maestro targets are in 0.25 us
MAX_TARGET = 0x3FFF  # 14 bits


def set_target_bytes(channel: int, duty_ns: int) -> bytes:
    """The 4-byte compact-protocol set-target command for ``duty_ns`` on ``channel``."""
    if not 0 <= channel <= 0x7F:
        raise HardwareError(f"servo controller channel must be 0..127, got {channel}")
    target = duty_ns // NS_PER_UNIT
    if not 0 <= target <= MAX_TARGET:
        raise HardwareError(f"pulse {duty_ns} ns is beyond the servo controller's range (max {MAX_TARGET * NS_PER_UNIT} ns)")
    return bytes((SET_TARGET, channel, target & 0x7F, (target >> 7) & 0x7F))


class SerialServo(PwmOutput):
    """ESC + steering servo on a Maestro-compatible controller at pyserial URL ``url``."""

    def __init__(
        self,
        calibration: Calibration,
        url: str,
        *,
        baud: int = DEFAULT_BAUD,
        motor_channel: int = 0,
        servo_channel: int = 1,
        write_timeout_s: float = 1.0,
    ) -> None:
        super().__init__(calibration)
        import serial  # pyserial

        if motor_channel == servo_channel:
            raise HardwareError(f"motor and servo must use different controller channels (both are {motor_channel})")
        self.url = url
        self.motor_channel = motor_channel
        self.servo_channel = servo_channel
        try:
            self.serial = serial.serial_for_url(url, baudrate=baud, timeout=0, write_timeout=write_timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise HardwareError(
                f"cannot open servo controller {url}: {exc}; check the USB cable and the port "
                "(ls /dev/ttyACM*), pass it as --output serial:/dev/ttyACMn, and make sure your user "
                "is in group dialout (sudo usermod -aG dialout $USER)"
            ) from None

    def write(self, w: DutyWrite) -> None:
        if self.closed:
            raise RuntimeError("SerialServo is closed")
        import serial

        self.last_pulses_ns = None
        data = set_target_bytes(self.motor_channel, w.motor_ns) + set_target_bytes(self.servo_channel, w.servo_ns)
        try:
            n = self.serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise HardwareError(f"servo controller {self.url} write failed: {exc}; check the USB cable") from None
        if n is not None and n != len(data):
            raise HardwareError(f"servo controller {self.url}: wrote {n} of {len(data)} bytes; check the USB cable")
        self.last_pulses_ns = (w.servo_ns, w.motor_ns)

    def neutral_bytes(self) -> bytes:
        servo_mid, motor_mid = self.calibration.neutral_ns()
        return set_target_bytes(self.motor_channel, motor_mid) + set_target_bytes(self.servo_channel, servo_mid)

    def guardian_targets(self) -> list[NeutralTarget] | None:
        """The tty device itself, when the URL is one (``/dev/ttyACM0``); None for ``loop://``,
        ``rfc2217://`` and other URLs a second process cannot open."""
        if not self.url.startswith("/"):
            return None
        return [NeutralTarget("servo+motor", "tty", self.url, self.neutral_bytes())]

    def emergency_neutral(self, timeout_s: float = 0.5) -> dict[str, str]:
        """The neutral commands in one non-blocking write on the port's descriptor (or through
        pyserial for URLs without one), bounded by ``timeout_s``."""
        data = self.neutral_bytes()
        try:
            fd = self.serial.fileno()
        except Exception:  # noqa: BLE001 - loop://, sockets...: no descriptor
            fd = None
        if fd is None or not self.url.startswith("/"):
            return {"servo+motor": run_bounded(lambda: self.serial.write(data), timeout_s,
                                               "emergency-neutral")}
        target = NeutralTarget("servo+motor", "tty", self.url, data)
        os.set_blocking(fd, False)
        return {"servo+motor": run_bounded(lambda: write_target(target, fd), timeout_s,
                                           "emergency-neutral")}

    def _release(self) -> None:
        try:
            self.serial.flush()
        except Exception:  # the port may already be gone; closing must still happen
            pass
        self.serial.close()
