"""Frame: what a camera or file source delivers, and the newest-wins slot between threads."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Union

import numpy as np

#: One camera image: a decoded BGR (H, W, 3) / grey (H, W) uint8 array, or encoded JPEG bytes.
Image = Union[np.ndarray, bytes]


@dataclass(slots=True)
class Frame:
    """One capture: ``images`` holds one image per camera (stereo: ``(left, right)``).

    ``t_capture_s`` is on the :func:`car_runtime.timing.now_s` clock (monotonic), so
    ``now_s() - t_capture_s`` is the frame's age. ``media_t_s`` is the position in a file
    (seconds from its start), or the same as capture time for a live camera.
    """

    seq: int
    t_capture_s: float
    images: tuple[Image, ...]
    media_t_s: float = 0.0
    meta: dict = field(default_factory=dict)


class LatestFrameSlot:
    """Holds only the newest frame. Writers overwrite; readers wait for one newer than they saw.

    Never a queue: a slow reader skips frames instead of falling behind. ``close()`` wakes
    waiting readers; :meth:`wait_newer` then returns ``None``.

    With ``audit=N`` the slot keeps the last N ``("put"|"take", seq)`` events, in lock order,
    so a test or a field audit can prove every take was the newest frame put so far.
    """

    def __init__(self, audit: int = 0) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.overwritten = 0  # frames replaced before any reader took them
        self.audit: deque[tuple[str, int]] | None = deque(maxlen=audit) if audit else None

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None and not self._taken:
                self.overwritten += 1
            self._frame = frame
            self._taken = False
            if self.audit is not None:
                self.audit.append(("put", frame.seq))
            self._cond.notify_all()

    _taken = True

    def latest(self) -> Frame | None:
        """The newest frame without waiting (may be one already seen)."""
        with self._cond:
            return self._frame

    def wait_newer(self, after_seq: int, timeout_s: float | None) -> Frame | None:
        """Block until a frame with ``seq > after_seq`` exists; ``None`` on timeout or close."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._closed or (self._frame is not None and self._frame.seq > after_seq),
                timeout=timeout_s,
            )
            if not ok or self._frame is None or self._frame.seq <= after_seq:
                return None
            self._taken = True
            if self.audit is not None:
                self.audit.append(("take", self._frame.seq))
            return self._frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
