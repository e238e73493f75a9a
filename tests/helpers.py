"""Small helpers shared by test modules (importable because conftest puts tests/ on sys.path)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def car_runtime_cmd() -> list[str]:
    """The installed ``car-runtime`` console script (falls back to ``python -m``)."""
    script = Path(sys.executable).parent / "car-runtime"
    if script.exists():
        return [str(script)]
    found = shutil.which("car-runtime")
    return [found] if found else [sys.executable, "-m", "car_runtime.cli.main"]


def read_video(path: str | Path) -> tuple[list[np.ndarray], float]:
    """Every frame of a video file, and its fps."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot open {path}"
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


def extract_all(tar: tarfile.TarFile, dest: str | Path) -> None:
    """``tar.extractall`` with the "data" filter where this Python has it (3.10.12+, 3.11.4+,
    3.12): older patch levels have no ``filter`` argument. Only for archives the tests made."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
    else:  # pragma: no cover - Python < 3.10.12 / 3.11.4
        tar.extractall(dest)


# -- running as an unprivileged user (root only) -----------------------------------------------
#: The unprivileged account the permission tests run as (exists on every Debian/Ubuntu).
UNPRIVILEGED = ("nobody", "nogroup")


def as_unprivileged(argv: list[str], user: tuple[str, str] = UNPRIVILEGED) -> list[str]:
    """``argv`` run as ``user`` (name, group) with no supplementary groups (needs root)."""
    return ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", "--", *argv]


@functools.lru_cache(maxsize=1)
def can_switch_user() -> bool:
    """Root with setpriv, and the unprivileged user can run this Python and import car_runtime
    (not so when the checkout or the venv sits in a folder only root may enter, e.g. /root)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    r = subprocess.run(as_unprivileged([sys.executable, "-c", "import car_runtime"]),
                       capture_output=True, timeout=60, cwd="/")
    return r.returncode == 0


def open_tmp_dir() -> Path:
    """A fresh folder under /tmp that other users may enter (pytest's tmp_path is 0700, so an
    unprivileged process could not reach anything in it); the caller removes it."""
    path = Path(tempfile.mkdtemp(prefix="car-runtime-test-", dir="/tmp"))
    path.chmod(0o755)
    return path


def mcap_records(path: str | Path) -> list[tuple[str, int, bytes]]:
    """(topic, log time ns, raw message bytes) of every message of an MCAP file, read with the
    independent ``mcap`` package."""
    from mcap.reader import make_reader

    with open(path, "rb") as fh:
        return [(channel.topic, message.log_time, bytes(message.data))
                for _schema, channel, message in make_reader(fh).iter_messages()]
def wait_until(predicate, timeout_s: float = 10.0, what: str = "condition", poll_s: float = 0.005):
    """Poll ``predicate`` until it is truthy and return its value; fail naming ``what`` after
    ``timeout_s`` (generous: never a speed assertion)."""
    end = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll_s)
