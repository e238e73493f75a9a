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
