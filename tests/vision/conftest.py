"""Real video files and image folders written with cv2 for the frame-source tests."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import pytest

#: Small frames keep encoding/decoding cheap; the logic under test does not depend on size.
W, H = 64, 48


def frame_of(value: int) -> np.ndarray:
    """A flat BGR frame whose pixels encode ``value`` (JPEG keeps flat colours within +-2)."""
    return np.full((H, W, 3), value, np.uint8)


def write_video(path: Path, values: Sequence[int], fps: float, fourcc: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened(), f"cv2 cannot write {fourcc} to {path}"
    for v in values:
        writer.write(frame_of(v))
    writer.release()
    return path


@pytest.fixture
def video(tmp_path) -> Callable[..., Path]:
    """``video(values, fps=30, fourcc="MJPG", name="v.avi")`` -> path of a real video file."""

    def make(values: Sequence[int], fps: float = 30.0, fourcc: str = "MJPG",
             name: str = "v.avi") -> Path:
        return write_video(tmp_path / name, values, fps, fourcc)

    return make
