"""System facts from a /proc and /sys tree of our own (and this machine's real /proc):
present fields parsed, absent ones None, never invented."""

from __future__ import annotations

import time

from car_runtime.web.telemetry import SystemFacts


def write(root, rel, text):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_facts_from_a_car_like_tree(tmp_path):
    proc, sys = tmp_path / "proc", tmp_path / "sys"
    write(proc, "stat", "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    write(proc, "meminfo", "MemTotal:        4000000 kB\nMemFree: 1 kB\nMemAvailable:    1000000 kB\n")
    write(sys, "class/thermal/thermal_zone0/type", "acpitz\n")
    write(sys, "class/thermal/thermal_zone0/temp", "47000\n")
    write(sys, "class/thermal/thermal_zone1/type", "x86_pkg_temp\n")
    write(sys, "class/thermal/thermal_zone1/temp", "61500\n")
    write(sys, "class/thermal/thermal_zone2/type", "iwlwifi\n")
    write(sys, "class/thermal/thermal_zone2/temp", "90000\n")
    for i, khz in enumerate((1_000_000, 2_000_000)):
        write(sys, f"devices/system/cpu/cpu{i}/cpufreq/scaling_cur_freq", f"{khz}\n")
    write(sys, "class/power_supply/AC/type", "Mains\n")
    write(sys, "class/power_supply/BAT0/type", "Battery\n")
    write(sys, "class/power_supply/BAT0/capacity", "73\n")
    facts = SystemFacts(proc=proc, sys=sys, disk_paths={"models": tmp_path / "not-made-yet"})
    first = facts.sample()
    assert first["cpu_pct"] is None  # no interval yet
    write(proc, "stat", "cpu  150 0 150 900 0 0 0 0 0 0\n")
    s = facts.sample()
    assert s["cpu_pct"] == 50.0  # 100 busy of 200 jiffies
    assert s["cpu_temp_c"] == 61.5  # hottest CPU zone, not the Wi-Fi chip
    assert s["cpu_freq_mhz"] == 1500
    assert s["memory"] == {"total_mb": 3906, "available_mb": 977, "used_pct": 75.0}
    assert s["battery_pct"] == 73.0
    assert s["disk_free_mb"]["models"] > 0  # the disk of the nearest existing parent


def test_absent_facts_are_none(tmp_path):
    s = SystemFacts(proc=tmp_path / "p", sys=tmp_path / "s").sample()
    assert s["cpu_pct"] is None and s["cpu_temp_c"] is None and s["cpu_freq_mhz"] is None
    assert s["memory"] is None and s["battery_pct"] is None


def test_this_machine():
    facts = SystemFacts()
    facts.sample()
    sum(i * i for i in range(300_000))  # some CPU time between the samples
    time.sleep(0.05)
    s = facts.sample()
    assert s["memory"]["total_mb"] > 0 and s["cpu_pct"] is not None
    assert s["process_cpu_pct"] is not None and s["process_cpu_pct"] >= 0


# ---------------------------------------------------------------- the DeepRacer battery board

import fcntl  # noqa: E402
import os  # noqa: E402
import pty  # noqa: E402
import threading  # noqa: E402
import tty  # noqa: E402

import pytest  # noqa: E402

from car_runtime.web import telemetry  # noqa: E402
from helpers import wait_until  # noqa: E402


@pytest.mark.parametrize("byte, level", [(0xFF, 11), (0xEC, 11), (0xEB, 10), (0xE0, 10), (0xD0, 7),
                                         (0xC0, 2), (0xBF, 1), (0xB4, 1), (0x8C, 0), (0x8B, None),
                                         (0x00, None)])
def test_battery_byte_to_the_stock_level(byte, level):
    assert telemetry.battery_level(byte) == level


def car_i2c_tree(root, battery_bus=7):
    """/sys/class/i2c-dev as on the car: links into the PCI devices; the battery's is 0000:00:17.3."""
    i2c_dev = root / "sys/class/i2c-dev"
    i2c_dev.mkdir(parents=True)
    for bus, pci in ((0, "0000:00:16.0"), (battery_bus, telemetry.BATTERY_PCI_DEVICE)):
        real = root / f"sys/devices/pci0000:00/{pci}/i2c_designware.{bus}/i2c-{bus}/i2c-dev/i2c-{bus}"
        real.mkdir(parents=True)
        (i2c_dev / f"i2c-{bus}").symlink_to(os.path.relpath(real, i2c_dev))
    (root / "dev").mkdir()
    return root / "sys", root / "dev"


class FakeBatteryBoard:
    """The wire: a pty in raw mode stands for /dev/i2c-N; this side plays the board (it reads
    the register number and answers one byte). ``ioctl(I2C_SLAVE)``, which a pty does not know,
    is recorded instead (the standard library at the OS boundary; every other ioctl is real)."""

    def __init__(self, dev, bus, monkeypatch, answer: int | None):
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        (dev / f"i2c-{bus}").symlink_to(os.ttyname(slave))
        self._slave = slave
        self.addresses: list[int] = []
        self.registers: list[int] = []
        real_ioctl = fcntl.ioctl

        def ioctl(fd, request, arg=0, *rest):
            if request == telemetry.I2C_SLAVE:
                self.addresses.append(arg)
                return 0
            return real_ioctl(fd, request, arg, *rest)

        monkeypatch.setattr(telemetry.fcntl, "ioctl", ioctl)
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                reg = os.read(self.master, 1)
            except OSError:
                return
            if not reg:
                return
            self.registers.append(reg[0])
            if self.answer is not None:
                os.write(self.master, bytes([self.answer]))

    def close(self):
        os.close(self._slave)
        os.close(self.master)


def test_battery_level_read_over_i2c_as_the_stock_node_does(tmp_path, monkeypatch):
    sys_root, dev = car_i2c_tree(tmp_path)
    assert telemetry.battery_bus(sys_root) == 7
    board = FakeBatteryBoard(dev, 7, monkeypatch, answer=0xD0)
    try:
        assert telemetry.DeepRacerBattery(sys=sys_root, dev=dev).read() == 7
        assert board.addresses == [0x3F] and board.registers == [0x03]
        # through the cockpit's facts: the first sample starts the read, a later one has it
        facts = SystemFacts(proc=tmp_path / "proc", sys=sys_root, dev=dev)
        assert facts.sample()["battery_level"] in (None, {"level": 7, "max": 11})
        wait_until(lambda: facts.sample()["battery_level"] == {"level": 7, "max": 11}, 10,
                   "the battery level in the facts")
        board.answer = 0x80  # below the lowest threshold: no level, as the stock console's -1
        assert telemetry.DeepRacerBattery(sys=sys_root, dev=dev).read() is None
    finally:
        board.close()


def test_a_silent_board_never_blocks_the_facts_and_costs_one_thread(tmp_path, monkeypatch):
    sys_root, dev = car_i2c_tree(tmp_path)
    before = set(threading.enumerate())
    board = FakeBatteryBoard(dev, 7, monkeypatch, answer=None)  # takes the register, never answers
    try:
        battery = telemetry.DeepRacerBattery(sys=sys_root, dev=dev, period_s=0.0)
        for _ in range(20):
            assert battery.level() is None  # returns at once, read in flight or not
        wait_until(lambda: board.registers, 10, "the read started")
        assert board.registers == [0x03]  # one read in flight, no second thread piled up
        readers = [t for t in set(threading.enumerate()) - before if t.name == "battery-read"]
        assert len(readers) == 1
    finally:
        board.close()  # the hung read fails (EIO): the thread ends


def test_no_battery_board_or_no_access_is_absent_with_one_log_line(tmp_path, caplog):
    facts = SystemFacts(proc=tmp_path / "proc", sys=tmp_path / "sys", dev=tmp_path / "dev")
    assert telemetry.battery_bus(tmp_path / "sys") is None
    assert facts.battery.read() is None  # a laptop: no I2C battery board
    sys_root, dev = car_i2c_tree(tmp_path / "car")  # the bus exists, /dev/i2c-7 does not open
    battery = telemetry.DeepRacerBattery(sys=sys_root, dev=dev)
    with caplog.at_level("INFO", logger="car_runtime.web.telemetry"):
        assert battery.read() is None and battery.read() is None
    lines = [r.getMessage() for r in caplog.records if "battery level" in r.getMessage()]
    assert len(lines) == 1 and "i2c-7" in lines[0] and "udev rule" in lines[0]
