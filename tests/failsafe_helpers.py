"""`car-runtime run --arm` on a sysfs-shaped tree in a temp dir, driven by real frames, watched
from outside through its duty files: for the signal, guardian and stuck-output tests.

Only the wire is fake (regular files where the kernel has PWM attributes); the runtime, the
guardian, the model, the signals and the processes are real.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers import car_runtime_cmd

sys.path.insert(0, str(Path(__file__).resolve().parent / "actuation"))
from actuation_fakes import FakeSysfs  # noqa: E402

from car_runtime.actuation.calibration import Calibration  # noqa: E402

SERVO_MID, MOTOR_MID = Calibration.defaults().neutral_ns()
SHM = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def long_frames(footage_seq_dir: Path, dest: Path, repeat: int = 4) -> Path:
    """The 100 real frames, ``repeat`` times over (symlinks; 4: 400 frames = 13 s at 30 fps)."""
    dest.mkdir()
    frames = sorted(footage_seq_dir.glob("*.jpg"))
    for r in range(repeat):
        for i, p in enumerate(frames):
            (dest / f"{r:04d}{i:04d}.jpg").symlink_to(p)
    return dest


class Car:
    """One ``car-runtime run --arm --output sysfs:<tmp>`` process and its duty files."""

    def __init__(self, tmp_path: Path, model: Path, frames: Path, *extra: str, fps: float = 30,
                 arm: bool = True, popen: dict | None = None) -> None:
        # The tree lives in memory (tmpfs) when it can, like the kernel's sysfs: on a busy disk a
        # regular file's O_TRUNC write can take longer than the 100 ms deadline, and the guardian
        # (rightly) calls that a stuck write.
        self._shm = tempfile.mkdtemp(prefix="car-sysfs-", dir=SHM) if SHM else None
        self.sys = FakeSysfs(Path(self._shm or tmp_path) / "root", exported=(0, 1))
        chip = self.sys.chip()
        self.motor_file = chip / "pwm0" / "duty_cycle"
        self.servo_file = chip / "pwm1" / "duty_cycle"
        self.out_path = tmp_path / "stdout.txt"
        self.err_path = tmp_path / "stderr.txt"
        self.cmd = [*car_runtime_cmd(), "run", "--model", str(model), "--camera", str(frames),
                    "--fps", str(fps), "--output", f"sysfs:{self.sys.pwm}",
                    "--calibration", str(tmp_path / "absent-calibration.json"),
                    "--status-interval", "0", "--max-frame-age-ms", "1000",
                    *(["--arm"] if arm else []), *extra]
        kw = dict(stdout=open(self.out_path, "w"), stderr=open(self.err_path, "w"))
        kw.update(popen or {})
        self.proc = subprocess.Popen(self.cmd, **kw)

    # -- the wire ------------------------------------------------------------------------------
    def duty(self) -> tuple[int | None, int | None]:
        """(motor, servo) as the files hold them now (None while a file is mid-rewrite)."""
        return _read_int(self.motor_file), _read_int(self.servo_file)

    def at_mid(self) -> bool:
        return self.duty() == (MOTOR_MID, SERVO_MID)

    def driving(self) -> bool:
        m, _ = self.duty()
        return m not in (None, 0, MOTOR_MID)  # 0: the kernel's value before the run wrote

    def wait_driving(self, timeout_s: float = 120) -> None:
        end = time.monotonic() + timeout_s
        while not self.driving():
            if self.proc.poll() is not None:
                raise AssertionError(f"run ended ({self.proc.returncode}) before driving:\n"
                                     f"{self.stderr()}")
            if time.monotonic() > end:
                raise AssertionError(f"never drove:\n{self.stderr()}")
            time.sleep(0.01)
        time.sleep(0.3)  # a few frames in: steady driving

    def wait_mid(self, since: float, timeout_s: float = 10) -> float:
        """Poll the files until both are at mid; seconds from ``since`` (time.monotonic())."""
        end = since + timeout_s
        while not self.at_mid():
            if time.monotonic() > end:
                raise AssertionError(f"not at mid after {timeout_s} s: {self.duty()}\n{self.stderr()}")
            time.sleep(0.0005)
        return time.monotonic() - since

    def watch_no_driving(self, seconds: float) -> int:
        """Poll for ``seconds``; raise if a driving pulse shows up. Returns the polls made."""
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            m, s = self.duty()
            assert m in (MOTOR_MID, None) and s in (SERVO_MID, None), (m, s, self.stderr())
            n += 1
            time.sleep(0.001)
        return n

    # -- the process ---------------------------------------------------------------------------
    def send(self, sig: int) -> float:
        t = time.monotonic()
        os.kill(self.proc.pid, sig)
        return t

    def state(self) -> str:
        """The kernel's process state letter (R, S, T stopped, Z...)."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return "gone"
        return stat.rsplit(")", 1)[1].split()[0]

    def wait_state(self, letter: str, timeout_s: float = 10) -> None:
        end = time.monotonic() + timeout_s
        while self.state() != letter:
            if time.monotonic() > end:
                raise AssertionError(f"process state {self.state()!r}, expected {letter!r}")
            time.sleep(0.005)

    def wait(self, timeout_s: float = 60) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def guardian_pids(self) -> list[int]:
        """Guardian processes started for this run (from its log line)."""
        pids = []
        for line in self.stderr().splitlines():
            if "guardian pid " in line:
                pids.append(int(line.split("guardian pid ")[1].split()[0]))
        return pids

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.kill()
            except ProcessLookupError:
                pass
            self.proc.wait()

    def __enter__(self) -> "Car":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        if self._shm:
            shutil.rmtree(self._shm, ignore_errors=True)
        for pid in self.guardian_pids():  # never leave a guardian behind after a test
            if is_guardian(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def is_guardian(pid: int) -> bool:
    """True if ``pid`` is (still) a car-runtime guardian process."""
    try:
        return b"car_runtime.actuation.guardian" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _read_int(path: Path) -> int | None:
    """The file's integer; None for anything else (a FIFO or directory in its place is never
    opened for reading: that would unblock or disturb what the test set up)."""
    try:
        if not path.is_file():
            return None
        text = path.read_text()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None  # caught between truncate and write
