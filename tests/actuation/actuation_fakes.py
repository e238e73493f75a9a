"""Fakes at the wire for the actuation tests: a sysfs tree shaped like the kernel's, a tiny
"kernel" thread that reacts to ``export`` writes, a Maestro simulator on a pty, and an audit-hook
log of the files opened for writing (the order in which attributes were written)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from helpers import wait_until  # noqa: F401 - the actuation tests import it from here

PWM_ATTRS = {"period": "0", "duty_cycle": "0", "enable": "0", "polarity": "normal"}
GPIO_ATTRS = {"direction": "in", "value": "1", "active_low": "0", "edge": "none"}


class FakeSysfs:
    """``<root>/sys/class/pwm/pwmchipN -> ../../devices/pci0000:00/<pci>/pwm/pwmchipN`` (real
    symlinks), ``<root>/sys/class/gpio/{export,unexport}``; with ``start()``, a thread plays the
    kernel: a number written to an ``export`` file creates ``pwmN``/``gpioN`` with its attributes."""

    def __init__(self, root: Path, chips: dict[str, str] | None = None, *, npwm: int = 5,
                 exported: tuple[int, ...] = (), gpio: bool = True) -> None:
        self.root = Path(root)
        self.pwm = self.root / "sys/class/pwm"
        self.gpio = self.root / "sys/class/gpio"
        self.pwm.mkdir(parents=True)
        self.exports: list[tuple[str, str]] = []  # (export file, value) in the order handled
        chips = {"pwmchip0": "0000:00:17.0"} if chips is None else chips
        self.chip_dirs: dict[str, Path] = {}
        for name, pci in chips.items():
            real = self.root / "sys/devices/pci0000:00" / pci / "pwm" / name
            real.mkdir(parents=True)
            for f, v in (("export", ""), ("unexport", ""), ("npwm", str(npwm))):
                (real / f).write_text(v)
            (self.pwm / name).symlink_to(os.path.relpath(real, self.pwm))
            self.chip_dirs[name] = real
            for ch in exported:
                self._make(real / f"pwm{ch}", PWM_ATTRS)
        if gpio:
            self.gpio_real = self.root / "sys/devices/platform/INT3452:01/gpio"
            self.gpio_real.mkdir(parents=True)
            self.gpio.mkdir(parents=True)
            for f in ("export", "unexport"):
                (self.gpio / f).write_text("")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def chip(self, name: str = "pwmchip0") -> Path:
        return self.pwm / name

    @staticmethod
    def _make(d: Path, attrs: dict[str, str]) -> None:
        """Create ``d`` with its attribute files at once (built aside, then renamed into place),
        as the kernel's directory appears together with its attributes."""
        tmp = d.parent / f".{d.name}.building"
        tmp.mkdir()
        for f, v in attrs.items():
            (tmp / f).write_text(v)
        tmp.rename(d)

    def _poll_once(self) -> None:
        targets = [(p / "export", "pwm") for p in self.chip_dirs.values()]
        if self.gpio.is_dir():
            targets.append((self.gpio / "export", "gpio"))
        for export, kind in targets:
            if export.stat().st_size == 0:
                continue
            value = export.read_text()
            if not value.strip():
                continue
            export.write_text("")
            self.exports.append((str(export), value))
            n = int(value)
            if kind == "pwm":
                self._make(export.parent / f"pwm{n}", PWM_ATTRS)
            else:
                real = self.gpio_real / f"gpio{n}"
                self._make(real, GPIO_ATTRS)
                (self.gpio / f"gpio{n}").symlink_to(os.path.relpath(real, self.gpio))

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self._poll_once()

    def start(self) -> "FakeSysfs":
        self._thread = threading.Thread(target=self._run, name="fake-kernel", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class WriteLog:
    """Files opened for writing under ``root`` (via ``os.open``/``open``) by the thread that
    entered the ``with`` block, in order: a PEP 578 audit hook observes the real open calls;
    nothing is replaced."""

    _active: list["WriteLog"] = []
    _installed = False

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.paths: list[str] = []
        self.thread = threading.get_ident()
        if not WriteLog._installed:
            sys.addaudithook(WriteLog._hook)
            WriteLog._installed = True

    @staticmethod
    def _hook(event: str, args: tuple) -> None:
        if event != "open" or not WriteLog._active:
            return
        path, mode, flags = args
        if isinstance(flags, int):
            writing = flags & (os.O_WRONLY | os.O_RDWR)
        else:
            writing = mode is not None and any(c in str(mode) for c in "wa+")
        if not writing or path is None:
            return
        p = os.fsdecode(path) if not isinstance(path, int) else ""
        for log in WriteLog._active:
            if p.startswith(log.root) and threading.get_ident() == log.thread:
                log.paths.append(os.path.relpath(p, log.root))

    def __enter__(self) -> "WriteLog":
        self.thread = threading.get_ident()
        WriteLog._active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        WriteLog._active.remove(self)


class MaestroSim:
    """A Pololu Maestro on the far end of a pty: parses compact-protocol set-target commands
    (0x84, channel, low 7 bits, high 7 bits) and records (channel, target) in order.
    Any byte that breaks the protocol is kept in ``errors``."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.port = os.ttyname(self.slave)
        self.raw = bytearray()
        self.targets: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="maestro-sim", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import select

        buf = bytearray()
        while not self._stop:
            r, _, _ = select.select([self.master], [], [], 0.05)
            if not r:
                continue
            try:
                data = os.read(self.master, 1024)
            except OSError:
                return
            with self._cond:
                self.raw += data
                buf += data
                while len(buf) >= 4:
                    cmd, ch, lo, hi = buf[:4]
                    del buf[:4]
                    if cmd != 0x84 or ch > 0x7F or lo > 0x7F or hi > 0x7F:
                        self.errors.append(bytes((cmd, ch, lo, hi)).hex())
                        continue
                    self.targets.append((ch, lo | hi << 7))
                self._cond.notify_all()

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[tuple[int, int]]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.targets) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"controller got {len(self.targets)} of {n} commands: {self.raw.hex()}")
                self._cond.wait(left)
            return list(self.targets)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        os.close(self.master)
        os.close(self.slave)


