"""Small helpers shared by test modules (importable because conftest puts tests/ on sys.path)."""

from __future__ import annotations

import shutil
import sys
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


def mcap_records(path: str | Path) -> list[tuple[str, int, bytes]]:
    """(topic, log time ns, raw message bytes) of every message of an MCAP file, read with the
    independent ``mcap`` package."""
    from mcap.reader import make_reader

    with open(path, "rb") as fh:
        return [(channel.topic, message.log_time, bytes(message.data))
                for _schema, channel, message in make_reader(fh).iter_messages()]
