"""Linux sysfs PWM output (the stock DeepRacer board), with an optional servo-power GPIO.

Like stock servo_pkg: the chip is the ``pwmchipN`` under the PWM class dir whose symlink target
contains PCI ``0000:00:17.0``; channel 0 drives the ESC and channel 1 the steering servo; each
channel is exported if ``pwmN`` is missing; the period is 20 000 000 ns and pulses are written
to ``duty_cycle`` as decimal ns, ESC first. Unlike stock, each channel gets its neutral pulse
*before* ``enable`` is set to 1, and every failed write raises :class:`HardwareError`.

Servo power (optional, ``gpio=``): stock uses sysfs GPIO 436 (newer kernels number it 514);
it is exported if needed, ``direction`` = ``out``, ``value`` = ``0`` (0 = power on). On close
the pulses go to neutral and the PWM stays enabled and the power stays on, as stock leaves
them (the servo holds centre and the ESC sees neutral rather than losing its signal).

Files are opened per write with ``O_WRONLY | O_TRUNC`` (what a shell ``>`` does).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from car_runtime.actuation.base import DutyWrite, PwmOutput
from car_runtime.actuation.calibration import Calibration
from car_runtime.actuation.guardian import NeutralTarget, describe_error, write_targets
from car_runtime.errors import HardwareError

log = logging.getLogger(__name__)

DEFAULT_PWM_ROOT = Path("/sys/class/pwm")
DEFAULT_GPIO_ROOT = Path("/sys/class/gpio")
STOCK_PCI_DEVICE = "0000:00:17.0"
UDEV_RULE = "99-car-runtime.rules"
UDEV_FIX = (
    f"install the udev rule {UDEV_RULE} (sudo car-runtime install-service; it reloads udev), "
    "add your user to group car-runtime "
    "(sudo usermod -aG car-runtime $USER, then log in again), or run as root"
)


def find_chip(root: Path, chip: str | None = None) -> Path:
    """The PWM chip directory: ``chip`` if given, else the stock PCI one, else ``pwmchip0``."""
    if not root.is_dir():
        raise HardwareError(
            f"no PWM class directory {root}: this machine has no sysfs PWM (not a DeepRacer?); "
            "use --output record: for a dry run or serial:URL for a servo controller"
        )
    names = sorted(p.name for p in root.iterdir())
    if chip is not None:
        if (root / chip).is_dir():
            return root / chip
        raise HardwareError(
            f"PWM chip {chip} not found under {root} (found: {', '.join(names) or 'nothing'}); "
            "fix chip= in the output spec"
        )
    for name in names:
        p = root / name
        if p.is_symlink() and STOCK_PCI_DEVICE in os.readlink(p) and p.is_dir():
            return p
    if (root / "pwmchip0").is_dir():
        return root / "pwmchip0"
    raise HardwareError(
        f"no PWM chip under {root} (found: {', '.join(names) or 'nothing'}); "
        f"pass one with --output sysfs:{root},chip=pwmchipN"
    )


def write_attr(path: Path, value: str, *, retry_s: float = 0.0) -> None:
    """Write ``value`` to a sysfs attribute. PermissionError is retried for ``retry_s``
    (udev fixes permissions asynchronously after an export), then explains the udev rule."""
    deadline = time.monotonic() + retry_s
    data = value.encode()
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            return
        except PermissionError:
            if time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            raise HardwareError(f"permission denied writing {path}; {UDEV_FIX}") from None
        except FileNotFoundError:
            raise HardwareError(f"{path} does not exist; is the PWM/GPIO driver loaded?") from None
        except OSError as exc:
            raise HardwareError(f"cannot write {value!r} to {path}: {describe_error(exc)}") from None


def _export(parent: Path, number: int, child: Path, timeout_s: float, what: str) -> None:
    """Write ``number`` to ``parent/export`` unless ``child`` exists; wait for it (udev is async)."""
    if child.is_dir():
        return
    write_attr(parent / "export", str(number))
    deadline = time.monotonic() + timeout_s
    while not child.is_dir():
        if time.monotonic() >= deadline:
            raise HardwareError(
                f"{what} {number}: wrote {number} to {parent / 'export'} but {child} did not appear "
                f"within {timeout_s:g} s; check the channel number and the driver"
            )
        time.sleep(0.005)


class SysfsPwm(PwmOutput):
    """Two sysfs PWM channels (ESC + steering servo); ``root`` is the PWM class dir."""

    def __init__(
        self,
        calibration: Calibration,
        *,
        root: str | Path = DEFAULT_PWM_ROOT,
        chip: str | None = None,
        motor_channel: int = 0,
        servo_channel: int = 1,
        gpio: int | None = None,
        gpio_root: str | Path = DEFAULT_GPIO_ROOT,
        export_timeout_s: float = 1.0,
    ) -> None:
        super().__init__(calibration)
        if motor_channel == servo_channel:
            raise HardwareError(f"motor and servo must use different PWM channels (both are {motor_channel})")
        self.chip = find_chip(Path(root), chip)
        self.motor_channel = motor_channel
        self.servo_channel = servo_channel
        self.gpio = gpio
        self.gpio_root = Path(gpio_root)
        log.info("PWM chip %s (motor pwm%d, servo pwm%d)", self.chip, motor_channel, servo_channel)
        servo_mid, motor_mid = calibration.neutral_ns()
        # ESC first, like stock; neutral pulse before enable, so the first pulses are neutral.
        for ch, mid in ((motor_channel, motor_mid), (servo_channel, servo_mid)):
            d = self.chip / f"pwm{ch}"
            _export(self.chip, ch, d, export_timeout_s, "PWM channel")
            write_attr(d / "period", str(calibration.period_ns), retry_s=export_timeout_s)
            write_attr(d / "duty_cycle", str(mid), retry_s=export_timeout_s)
            write_attr(d / "enable", "1", retry_s=export_timeout_s)
        self._motor_duty = self.chip / f"pwm{motor_channel}" / "duty_cycle"
        self._servo_duty = self.chip / f"pwm{servo_channel}" / "duty_cycle"
        self.last_pulses_ns = (servo_mid, motor_mid)
        if gpio is not None:
            self._enable_power(gpio, export_timeout_s)

    def _enable_power(self, gpio: int, timeout_s: float) -> None:
        d = self.gpio_root / f"gpio{gpio}"
        if not self.gpio_root.is_dir():
            raise HardwareError(f"no GPIO class directory {self.gpio_root}; drop gpio= from the output spec")
        _export(self.gpio_root, gpio, d, timeout_s, "GPIO")
        write_attr(d / "direction", "out", retry_s=timeout_s)
        write_attr(d / "value", "0", retry_s=timeout_s)  # 0 = servo/ESC power on
        log.info("servo power on (GPIO %d)", gpio)

    def write(self, w: DutyWrite) -> None:
        if self.closed:
            raise RuntimeError("SysfsPwm is closed")
        self.last_pulses_ns = None  # unknown until both writes succeed
        try:
            self.busy = str(self._motor_duty)
            write_attr(self._motor_duty, str(w.motor_ns))
            self.busy = str(self._servo_duty)
            write_attr(self._servo_duty, str(w.servo_ns))
        finally:
            self.busy = None
        self.last_pulses_ns = (w.servo_ns, w.motor_ns)

    def guardian_targets(self) -> list[NeutralTarget]:
        """Each channel's ``duty_cycle`` with its neutral pulse, ESC (motor) first."""
        servo_mid, motor_mid = self.calibration.neutral_ns()
        return [NeutralTarget("motor", "file", str(self._motor_duty), str(motor_mid).encode()),
                NeutralTarget("servo", "file", str(self._servo_duty), str(servo_mid).encode())]

    def emergency_neutral(self, timeout_s: float = 0.5) -> dict[str, str]:
        """Both channels in parallel, non-blocking opens, each bounded by ``timeout_s``."""
        return write_targets(self.guardian_targets(), timeout_s=timeout_s)
