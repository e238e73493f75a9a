"""What the cockpit shows live: the newest frame, its decision and write, recent frame ages.

:class:`LiveFeed` is a drive-loop step hook. In the loop thread it only stores references
(the frame's own JPEG bytes or array, a few numbers) and one float in a ring; the model input
(160x120) is copied there only while someone watches it, at most ``model_fps``. Encoding and
everything else happens in the web thread, which reads the newest values without locks.

While someone watches, the hook also applies the live view's rate cap (a token bucket at
``video_fps``): a frame that passes becomes :attr:`LiveFeed.shown` and wakes the web thread
once (``notify``); the others are skipped for good without waking it. So the web thread wakes
once per frame it sends, never per camera frame.
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

    def __init__(self, loop: "DriveLoop", *, model_fps: float = 5.0, video_fps: float = 15.0) -> None:
        self.loop = loop
        self.model_period_s = 1.0 / model_fps
        self.video_fps = video_fps
        self.frame: LiveFrame | None = None  # the newest decided frame (telemetry)
        self.shown: LiveFrame | None = None  # the newest frame within the live view's rate cap
        self.model_view: ModelView | None = None
        # Set by the web thread: the hook copies the model input only while model_viewers > 0
        # and runs the camera rate cap only while camera_viewers > 0.
        self.model_viewers = 0
        self.camera_viewers = 0
        self.notify: Any = None  # set by the web thread while someone watches: wakes it
        self.last_write: tuple[float, float, str] | None = None  # (angle, throttle, event)
        self._ages_ms = np.zeros(AGE_RING)
        self._age_count = 0
        self._last_model_s = -1e9
        self._tokens = 1.0
        self._tokens_at_s = 0.0

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
        live = self.frame = LiveFrame(frame.seq, frame.t_capture_s, frame.images[0], d.action_index,
                                      d.steering_deg, d.speed_mps, w.angle, w.throttle, state.value)
        notify = self.notify
        if notify is None:
            return
        t = now_s()
        wake = False
        if self.camera_viewers > 0:
            # Token bucket: on average at most video_fps; a frame is shown as it arrives
            # (fresh) or skipped for good, never late. 0.9: camera jitter must not halve the rate.
            self._tokens = min(1.0, self._tokens + (t - self._tokens_at_s) * self.video_fps)
            self._tokens_at_s = t
            if self._tokens >= 0.9:
                self._tokens -= 1.0
                self.shown = live
                wake = True
        if self.model_viewers > 0 and t - self._last_model_s >= self.model_period_s:
            self._last_model_s = t
            self.model_view = ModelView(frame.seq, frame.t_capture_s,
                                        self.loop.pipeline.model_input())
            wake = True
        if wake:
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
