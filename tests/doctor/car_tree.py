"""A car-shaped system tree in a temp dir for the doctor tests (the actuation tests' FakeSysfs
for /sys, plus /dev, /proc and /etc)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "actuation"))

from actuation_fakes import FakeSysfs  # noqa: E402

from car_runtime import data  # noqa: E402

#: /proc/cpuinfo of a Goldmont core (the car's Atom E3930 class), first CPU, as the kernel
#: prints it; what matters to the doctor: sse4_2 present, no avx/avx2.
ATOM_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 92
model name\t: Intel(R) Atom(TM) Processor E3930 @ 1.30GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts rep_good nopl xtopology tsc_reliable nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq dtes64 monitor ds_cpl vmx est tm2 ssse3 sdbg cx16 xtpr pdcm sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave rdrand lahf_lm 3dnowprefetch cpuid_fault cat_l2 pti tpr_shadow vnmi flexpriority ept vpid ept_ad fsgsbase tsc_adjust smep erms mpx rdt_a rdseed smap clflushopt intel_pt sha_ni xsaveopt xsavec xgetbv1 xsaves dtherm ida arat pln pts md_clear arch_capabilities

processor\t: 1
model name\t: Intel(R) Atom(TM) Processor E3930 @ 1.30GHz
flags\t\t: fpu sse4_2
"""


class CarTree:
    """``root/{sys,dev,proc,etc}`` shaped like the car's, plus a config in etc/car-runtime."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fs = FakeSysfs(root, exported=(0, 1))
        self.dev = root / "dev"
        self.proc = root / "proc"
        self.etc = root / "etc"
        self.dev.mkdir()
        self.proc.mkdir()
        (self.proc / "cpuinfo").write_text(ATOM_CPUINFO)
        self.units = self.etc / "systemd" / "system"
        self.units.mkdir(parents=True)
        self.calibration = root / "calibration.json"
        self.calibration.write_bytes((data.CALIBRATION / "calibration.json").read_bytes())
        self.models = root / "models"
        self.models.mkdir()

    def config(self, **values: object) -> Path:
        path = self.etc / "car-runtime" / "config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        settings = {"output": f"sysfs:{self.fs.pwm}", "calibration": str(self.calibration),
                    "models_dir": str(self.models), **values}
        path.write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
        return path

    def process(self, pid: int, *argv: str) -> None:
        (self.proc / str(pid)).mkdir()
        (self.proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    def unit(self, name: str, text: str = "[Service]\nExecStart=/bin/true\n", *,
             enabled: bool = False) -> None:
        (self.units / name).write_text(text)
        if enabled:
            wants = self.units / "multi-user.target.wants"
            wants.mkdir(exist_ok=True)
            (wants / name).symlink_to(self.units / name)
