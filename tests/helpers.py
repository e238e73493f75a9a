"""Small helpers shared by test modules (importable because conftest puts tests/ on sys.path)."""

from __future__ import annotations

import shutil
import sys
import tarfile
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
