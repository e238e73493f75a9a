"""Serial servo controller (Pololu Maestro compact protocol): exact bytes over loop:// and a pty."""

from __future__ import annotations

import pytest
from actuation_fakes import MaestroSim

from car_runtime.actuation.output import Actuator, open_output
from car_runtime.actuation.serial_servo import SerialServo, set_target_bytes
from car_runtime.errors import HardwareError


def test_set_target_bytes_known_values():
    # Pololu's own example: 1500 us on channel 0 -> target 6000 -> 84 00 70 2E
    assert set_target_bytes(0, 1_500_000) == bytes([0x84, 0x00, 0x70, 0x2E])
    assert set_target_bytes(1, 1_450_000) == bytes([0x84, 0x01, 0x28, 0x2D])  # 5800
    assert set_target_bytes(0, 1_402_800) == bytes([0x84, 0x00, 0x6B, 0x2B])  # 5611 (249 ns truncated)
    assert set_target_bytes(5, 0) == bytes([0x84, 0x05, 0x00, 0x00])
    with pytest.raises(HardwareError, match="channel"):
        set_target_bytes(128, 1_500_000)
    with pytest.raises(HardwareError, match="beyond"):
        set_target_bytes(0, 0x4000 * 250)


def test_loop_url_exact_bytes(cal):
    out = SerialServo(cal, "loop://")
    act = Actuator(out, cal)
    # start: neutral, ESC (channel 0) first: 1446000 -> 5784, 1450000 -> 5800
    assert out.serial.read(8) == bytes([0x84, 0, 0x18, 0x2D, 0x84, 1, 0x28, 0x2D])
    act.command(0.0, 0.32)
    assert out.serial.read(8) == bytes([0x84, 0, 0x6B, 0x2B, 0x84, 1, 0x28, 0x2D])
    act.command(1.0, -1.0)  # servo 1700000 -> 6800 = 0x35 0x10; motor 1603500 -> 6414 = 0x32 0x0E
    assert out.serial.read(8) == bytes([0x84, 0, 0x0E, 0x32, 0x84, 1, 0x10, 0x35])
    assert out.serial.read(1) == b""
    act.close()
    assert not out.serial.is_open


def test_pty_controller_sees_every_command_and_neutral_last(cal):
    sim = MaestroSim()
    try:
        act = Actuator(open_output(f"serial:{sim.port}", cal), cal)
        act.command(1.0, 1.0)
        # LF (0x0A) and CR (0x0D) as data bytes: the port must be raw (no tty translation)
        act.raw(1_443_250, 1_442_500)
        act.close()
        got = sim.wait_for(8)
        assert got == [(0, 5784), (1, 5800),  # start neutral
                       (0, 5244), (1, 6800),  # throttle +1 (polarity -1 -> min), angle +1
                       (0, 5770), (1, 5773),  # raw
                       (0, 5784), (1, 5800)]  # close: neutral
        assert bytes(sim.raw[16:24]) == bytes([0x84, 0, 0x0A, 0x2D, 0x84, 1, 0x0D, 0x2D])
        assert sim.errors == []
    finally:
        sim.close()


def test_missing_port_names_the_fix(cal):
    with pytest.raises(HardwareError, match=r"cannot open servo controller /dev/nonexistent-tty.*ttyACM.*dialout"):
        open_output("serial:/dev/nonexistent-tty", cal)


def test_write_failure_is_hardware_error(cal):
    sim = MaestroSim()
    out = SerialServo(cal, sim.port)
    sim.close()  # controller unplugged: the pty's master side is gone
    with pytest.raises(HardwareError, match=r"servo controller /dev/pts/\d+ write failed.*USB cable"):
        Actuator(out, cal)  # the start neutral cannot be sent: the actuator does not start
    assert out.closed
