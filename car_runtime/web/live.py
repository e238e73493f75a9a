"""What the cockpit shows live: the newest frame, its decision and write, recent frame ages.

:class:`LiveFeed` is a drive-loop step hook. In the loop thread it only stores references
(the frame's own JPEG bytes or array, a few numbers) and one float in a ring; the model input
(160x120) is copied there only while someone watches it, at most ``model_fps``. Encoding and
everything else happens in the web thread, which reads the newest values without locks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from car_runtime.timing import now_s

if TYPE_CHECKING:
    from car_runtime.actuation.output import DutyWrite
    from car_runtime.control.safety import State
    from car_runtime.pipeline import StepResult
    from car_runtime.runtime import DriveLoop

AGE_RING = 512


@dataclass(slots=True, frozen=True)
class LiveFrame:
    """One decided frame: the camera image (JPEG bytes or a BGR/grey array) and what the car
    did with it."""

    seq: int
    t_capture_s: float
    image: Any  # bytes | np.ndarray
    action: int | None
    steering_deg: float
    speed_mps: float
    angle: float  # applied (after the safety gate: 0 when not driving)
    throttle: float
    state: str


@dataclass(slots=True, frozen=True)
class ModelView:
    seq: int
    t_capture_s: float
    pixels: np.ndarray  # uint8 (H, W), a private copy


class LiveFeed:
    """Step hook feeding the live view and the telemetry (see the module docstring)."""

    def __init__(self, loop: "DriveLoop", *, model_fps: float = 5.0) -> None:
        self.loop = loop
        self.model_period_s = 1.0 / model_fps
        self.frame: LiveFrame | None = None
        self.model_view: ModelView | None = None
        self.model_viewers = 0  # set by the web thread; the hook copies the model input only if > 0
        self.notify: Any = None  # set by the web thread while someone watches: called per frame
        self.last_write: tuple[float, float, str] | None = None  # (angle, throttle, event)
        self._ages_ms = np.zeros(AGE_RING)
        self._age_count = 0
        self._last_model_s = -1e9

    def __call__(self, result: "StepResult | None", w: "DutyWrite", state: "State") -> None:
        ctx = w.context
        age = ctx.get("frame_age_ms")
        if age is not None:
            self._ages_ms[self._age_count % AGE_RING] = age
            self._age_count += 1
        if result is None:
            self.last_write = (w.angle, w.throttle, str(ctx.get("event", "")))
            return
        frame, d = result.frame, result.decision
        self.last_write = (w.angle, w.throttle, "")
        self.frame = LiveFrame(frame.seq, frame.t_capture_s, frame.images[0], d.action_index,
                               d.steering_deg, d.speed_mps, w.angle, w.throttle, state.value)
        if self.model_viewers > 0:
            t = now_s()
            if t - self._last_model_s >= self.model_period_s:
                self._last_model_s = t
                self.model_view = ModelView(frame.seq, frame.t_capture_s,
                                            self.loop.pipeline.model_input())
        notify = self.notify
        if notify is not None:
            notify()  # call_soon_threadsafe: a deque append and a byte on a socket

    def frame_age_ms(self) -> dict[str, float] | None:
        """p50/p99 of the recent writes' frame ages (None before any)."""
        n = min(self._age_count, AGE_RING)
        if n == 0:
            return None
        ages = self._ages_ms[:n].copy()
        p50, p99 = np.percentile(ages, (50, 99))
        return {"p50": round(float(p50), 2), "p99": round(float(p99), 2)}


def encode_jpeg(image: Any, quality: int = 80) -> bytes:
    """JPEG bytes for the live view: the camera's own JPEG bytes unchanged; anything else
    (an array, PNG bytes from an image folder) encoded here, in the web thread."""
    import cv2

    if isinstance(image, (bytes, bytearray, memoryview)):
        if bytes(image[:2]) == b"\xff\xd8":
            return bytes(image)
        image = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("cannot decode the frame")
    ok, buf = cv2.imencode(".jpg", np.asarray(image), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode the frame as JPEG")
    return buf.tobytes()
