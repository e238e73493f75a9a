"""System facts for the cockpit, read from ``/proc`` and ``/sys`` when present.

Every field is ``None`` when this machine does not expose it (a laptop has no battery in
``/sys/class/power_supply``, a container may have no thermal zones): absent, never invented.
The DeepRacer's own battery board sits on I2C and is not exposed there, so its level shows as
absent. ``proc``/``sys`` roots are parameters so tests can give a tree of their own.
"""

from __future__ import annotations

import os
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


#: How often the thermal zones, CPU frequency files and batteries are looked for again (a
#: sample only reads the files found: globbing /sys every second costs more than reading).
DISCOVER_S = 30.0


class SystemFacts:
    """``sample()`` -> dict of CPU %, temperature, frequency, memory, disk, battery.

    CPU percentages are over the time since the previous ``sample()`` (the first call gives
    ``None``): ``cpu_pct`` is the whole machine (100 = every core busy), ``process_cpu_pct`` is
    this process in percent of one core.
    """

    def __init__(self, *, proc: str | Path = "/proc", sys: str | Path = "/sys",
                 disk_paths: dict[str, str | Path] | None = None) -> None:
        self.proc = Path(proc)
        self.sys = Path(sys)
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
