"""System facts for the cockpit, read from ``/proc`` and ``/sys`` when present.

Every field is ``None`` when this machine does not expose it (a laptop has no battery in
``/sys/class/power_supply``, a container may have no thermal zones): absent, never invented.

The DeepRacer's battery board is not a power supply: it answers on I2C, address 0x3f, register
0x03, on the bus of PCI device ``0000:00:17.3`` (the stock ``i2c_pkg`` battery node reads it the
same way). :class:`DeepRacerBattery` reads that byte at most every ``BATTERY_PERIOD_S`` and maps
it to the stock 0-11 level with the stock thresholds; a bus that is absent, not readable by this
user or silent gives ``None``. ``proc``/``sys``/``dev`` roots are parameters so tests can give a
tree of their own.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Any

from car_runtime.timing import now_s


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


log = logging.getLogger(__name__)

#: The battery board: I2C bus of this PCI device, its address and the level register.
BATTERY_PCI_DEVICE = "0000:00:17.3"
BATTERY_I2C_ADDRESS = 0x3F
BATTERY_REGISTER = 0x03
I2C_SLAVE = 0x0703  # <linux/i2c-dev.h>: the address of the next read/write on this fd
#: Byte -> stock level (the first threshold the byte reaches); below the last: no level (-1 in
#: the stock console).
BATTERY_LEVELS = ((0xEC, 11), (0xE0, 10), (0xD9, 9), (0xD3, 8), (0xCF, 7), (0xCB, 6),
                  (0xC8, 5), (0xC5, 4), (0xC3, 3), (0xC0, 2), (0xB4, 1), (0x8C, 0))
BATTERY_LEVEL_MAX = 11
BATTERY_PERIOD_S = 10.0  # as the stock console polls it


def battery_level(byte: int) -> int | None:
    """The stock 0-11 level of the battery board's byte; None below the lowest threshold."""
    for threshold, level in BATTERY_LEVELS:
        if byte >= threshold:
            return level
    return None


def battery_bus(sys: Path) -> int | None:
    """The I2C bus number of the battery board (``/sys/class/i2c-dev/i2c-N`` links into the PCI
    device), None when this machine has none."""
    for entry in sorted((sys / "class" / "i2c-dev").glob("i2c-*")):
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if BATTERY_PCI_DEVICE in target:
            try:
                return int(entry.name.rpartition("-")[2])
            except ValueError:
                continue
    return None


class DeepRacerBattery:
    """The battery board's level, read over I2C (see the module docstring).

    :meth:`level` never blocks: it returns the last reading (``{"level", "max"}``) or None,
    and when the reading is older than ``period_s`` it starts one short-lived thread to read the
    board again (never a second one while a read is in flight, so a hung bus costs one thread,
    not the caller's time). :meth:`read` is that read: one write of the register number and one
    1-byte read on ``/dev/i2c-N``. A failing bus is logged once.
    """

    def __init__(self, *, sys: str | Path = "/sys", dev: str | Path = "/dev",
                 period_s: float = BATTERY_PERIOD_S) -> None:
        self.sys, self.dev, self.period_s = Path(sys), Path(dev), period_s
        self._read_at_s = -float("inf")
        self._level: int | None = None
        self._reading = threading.Lock()
        self._warned = False

    def level(self) -> dict[str, int] | None:
        if now_s() - self._read_at_s >= self.period_s and self._reading.acquire(blocking=False):
            self._read_at_s = now_s()
            threading.Thread(target=self._refresh, name="battery-read", daemon=True).start()
        level = self._level
        return None if level is None else {"level": level, "max": BATTERY_LEVEL_MAX}

    def _refresh(self) -> None:
        try:
            self._level = self.read()
        finally:
            self._reading.release()

    def read(self) -> int | None:
        """Read the board now (blocking): its stock level, or None."""
        return self._read()

    def _read(self) -> int | None:
        bus = battery_bus(self.sys)
        if bus is None:
            return None
        path = self.dev / f"i2c-{bus}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            return self._failed(f"cannot open {path} ({exc.strerror}): grant the service user "
                                "read/write on it (install-service's udev rule does)")
        try:
            fcntl.ioctl(fd, I2C_SLAVE, BATTERY_I2C_ADDRESS)
            if os.write(fd, bytes([BATTERY_REGISTER])) != 1:
                return self._failed(f"{path}: the battery board took no register number")
            data = os.read(fd, 1)
        except OSError as exc:
            return self._failed(f"{path}: the battery board did not answer ({exc.strerror})")
        finally:
            os.close(fd)
        if len(data) != 1:
            return self._failed(f"{path}: the battery board sent no byte")
        return battery_level(data[0])

    def _failed(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.info("battery level not available: %s", why)
        return None


#: How often the thermal zones, CPU frequency files and batteries are looked for again (a
#: sample only reads the files found: globbing /sys every second costs more than reading).
DISCOVER_S = 30.0


class SystemFacts:
    """``sample()`` -> dict of CPU %, temperature, frequency, memory, disk, battery (a power
    supply's percent, and the DeepRacer battery board's 0-11 level).

    CPU percentages are over the time since the previous ``sample()`` (the first call gives
    ``None``): ``cpu_pct`` is the whole machine (100 = every core busy), ``process_cpu_pct`` is
    this process in percent of one core.
    """

    def __init__(self, *, proc: str | Path = "/proc", sys: str | Path = "/sys",
                 dev: str | Path = "/dev",
                 disk_paths: dict[str, str | Path] | None = None) -> None:
        self.proc = Path(proc)
        self.sys = Path(sys)
        self.battery = DeepRacerBattery(sys=sys, dev=dev)
        self.disk_paths = dict(disk_paths or {"root": "/"})
        self._last_cpu: tuple[int, int] | None = None  # (busy, total) jiffies
        self._last_proc: tuple[float, float] | None = None  # (process cpu s, wall s)
        self._found_at_s = -float("inf")
        self._zones: list[tuple[bool, Path]] = []  # (CPU-like, temp file)
        self._freq_files: list[Path] = []
        self._batteries: list[Path] = []  # capacity files of supplies of type Battery

    def _discover(self) -> None:
        t = now_s()
        if t - self._found_at_s < DISCOVER_S:
            return
        self._found_at_s = t
        zones = []
        for z in sorted((self.sys / "class" / "thermal").glob("thermal_zone*")):
            kind = (_read(z / "type") or "").strip().lower()
            zones.append((any(k in kind for k in ("cpu", "x86_pkg", "soc", "core", "acpitz")),
                          z / "temp"))
        self._zones = zones
        self._freq_files = sorted((self.sys / "devices" / "system" / "cpu").glob(
            "cpu[0-9]*/cpufreq/scaling_cur_freq"))
        self._batteries = [supply / "capacity" for supply in sorted(
            (self.sys / "class" / "power_supply").glob("*"))
            if (_read(supply / "type") or "").strip() == "Battery"]

    def sample(self) -> dict[str, Any]:
        self._discover()
        return {
            "cpu_pct": self._cpu_pct(),
            "process_cpu_pct": self._process_cpu_pct(),
            "cpu_temp_c": self._temperature_c(),
            "cpu_freq_mhz": self._freq_mhz(),
            "memory": self._memory(),
            "disk_free_mb": {name: self._free_mb(p) for name, p in self.disk_paths.items()},
            "battery_pct": self._battery_pct(),
            "battery_level": self.battery.level(),  # the DeepRacer's board: {"level", "max": 11}
        }

    def _cpu_pct(self) -> float | None:
        text = _read(self.proc / "stat")
        if not text or not text.startswith("cpu "):
            return None
        try:
            values = [int(v) for v in text.splitlines()[0].split()[1:]]
        except ValueError:
            return None
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        total = sum(values[:8])  # user nice system idle iowait irq softirq steal
        last, self._last_cpu = self._last_cpu, (total - idle, total)
        if last is None or total <= last[1]:
            return None
        return round(100.0 * ((total - idle) - last[0]) / (total - last[1]), 1)

    def _process_cpu_pct(self) -> float | None:
        t = os.times()
        cpu_s, wall_s = t.user + t.system, now_s()
        last, self._last_proc = self._last_proc, (cpu_s, wall_s)
        if last is None or wall_s <= last[1]:
            return None
        return round(100.0 * (cpu_s - last[0]) / (wall_s - last[1]), 1)

    def _temperature_c(self) -> float | None:
        """The hottest CPU-like thermal zone (all zones if none is named like a CPU)."""
        readings: list[tuple[bool, float]] = []
        for is_cpu, temp in self._zones:
            milli = _read_int(temp)
            if milli is not None:
                readings.append((is_cpu, milli / 1000.0))
        cpu = [t for is_cpu, t in readings if is_cpu] or [t for _, t in readings]
        return round(max(cpu), 1) if cpu else None

    def _freq_mhz(self) -> float | None:
        freqs = [_read_int(p) for p in self._freq_files]
        khz = [f for f in freqs if f]
        return round(sum(khz) / len(khz) / 1000.0) if khz else None

    def _memory(self) -> dict[str, float] | None:
        text = _read(self.proc / "meminfo")
        if not text:
            return None
        kb: dict[str, int] = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                kb[key] = int(parts[0])
        if "MemTotal" not in kb or "MemAvailable" not in kb or not kb["MemTotal"]:
            return None
        total, avail = kb["MemTotal"], kb["MemAvailable"]
        return {"total_mb": round(total / 1024), "available_mb": round(avail / 1024),
                "used_pct": round(100.0 * (total - avail) / total, 1)}

    @staticmethod
    def _free_mb(path: str | Path) -> float | None:
        p = Path(path)
        while not p.exists() and p != p.parent:  # a folder not made yet: its disk
            p = p.parent
        try:
            st = os.statvfs(p)
        except OSError:
            return None
        return round(st.f_bavail * st.f_frsize / 2**20, 1)

    def _battery_pct(self) -> float | None:
        for capacity_file in self._batteries:
            capacity = _read_int(capacity_file)
            if capacity is not None:
                return float(capacity)
        return None
