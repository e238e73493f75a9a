"""The car camera: an OpenCV V4L2 capture thread that keeps only the newest frame.

- Asks for MJPG at ``width x height @ fps`` (default 640x480@30, the DeepRacer camera's mode),
  reads the settings back, logs them and exposes them as :attr:`Camera.settings`.
- Delivers the camera's own JPEG bytes when it can (``CAP_PROP_CONVERT_RGB=0`` on V4L2), so
  the pipeline can use the cheap reduced-size grey decode; a camera that does not send MJPEG is
  decoded to BGR here instead.
- Asks V4L2 for the fewest driver buffers it allows (``CAP_PROP_BUFFERSIZE`` = 1; the driver
  may round up: the count it gave is read back and logged), so frames cannot queue up behind a
  stall and come out later looking fresh.
- Every frame gets a ``seq`` and a monotonic capture time: the driver's buffer timestamp when
  OpenCV exposes it on our clock -- on its V4L2 backend ``CAP_PROP_POS_MSEC`` is the
  ``VIDIOC_DQBUF`` buffer timestamp, which UVC cameras take on ``CLOCK_MONOTONIC`` when the frame
  starts arriving -- else the time ``grab()`` returned. The log says which
  (:class:`CaptureClock`); frame age = now minus that time, so with driver timestamps it also
  counts the time a frame waited in the driver. The thread puts each frame in a
  :class:`~car_runtime.vision.frame.LatestFrameSlot` (newest wins, never a queue).
- Health: read failures, frozen/duplicate frames (identical consecutive buffers are counted and
  *not* delivered, so a frozen camera looks like a stalled one to the drive loop and its deadline
  takes the car to neutral; in a stereo pair one repeated image is enough), fps collapse
  (measured fps under half the read-back fps over 2 s).
  All counted, logged at most every few seconds.
- Reconnects with exponential backoff after repeated read failures or a stall; gives up (sets
  ``error``, closes the slot) when no new frame arrived for ``lost_after_s``.
- Stereo: two devices, ``images=(left, right)``; both are grabbed before either is decoded so
  the pair is as close in time as the driver allows.

Without ``devices`` the stock scan is used: ``/dev/video4`` down to ``/dev/video0``, keeping
those that open and return a frame; two cameras = stereo with the higher index on the left.

Any spec ``cv2.VideoCapture`` can open also works (a video file, an ``http://`` MJPEG stream):
it is read with the default backend, raw packets are requested so MJPEG arrives as JPEG bytes,
and reads are paced at the read-back fps like a camera would deliver them. That is also how
the thread, health and reconnect logic are tested without hardware.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, Union

import numpy as np

from car_runtime.errors import SourceError
from car_runtime.timing import now_s
from car_runtime.vision.frame import Frame, Image
from car_runtime.vision.sources import FrameSource, content_key

# A stalled V4L2 camera otherwise blocks each read for OpenCV's default 10 s (the V4L2 backend
# ignores CAP_PROP_READ_TIMEOUT_MSEC); OpenCV reads this once, at the first capture.
os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", "1")

log = logging.getLogger(__name__)

DEFAULT_WIDTH = 640
DEFAULT_HEIGHT = 480
DEFAULT_FPS = 30.0
DEFAULT_FOURCC = "MJPG"
#: The stock camera node's scan order ("indices keep changing intermittently").
SCAN_INDICES = (4, 3, 2, 1, 0)
#: V4L2 buffers to ask for: the fewest (a driver may insist on more).
V4L2_BUFFERS = 1
#: A driver timestamp counts as "on our clock" when it is this recent at grab time.
MAX_DRIVER_LAG_S = 1.0

DeviceSpec = Union[int, str]


def limit_opencv_threads() -> None:
    """``cv2.setNumThreads(1)``: OpenVINO's inference threads own the (two) cores.

    OpenCV's own thread pool only speeds up large images; on 640x480 frames its wake-ups compete
    with inference and add jitter, while single-threaded cvtColor/resize cost tens of microseconds.
    """
    import cv2

    cv2.setNumThreads(1)


# -- auto-scan -------------------------------------------------------------------------------------
def _device_name(spec: DeviceSpec) -> str:
    return f"/dev/video{spec}" if isinstance(spec, int) else str(spec)


def assign_cameras(found: Sequence[int], *, stereo: bool = False) -> tuple[int, ...]:
    """Pick the camera(s) to use from the indices that answered a scan, like the stock node.

    Returns ``(index,)`` or, for ``stereo``, ``(left, right)`` with the HIGHER index on the left.
    With two cameras but a mono model, the left one is used.
    """
    ordered = sorted(set(found), reverse=True)
    if not ordered:
        raise SourceError(_no_camera_message(SCAN_INDICES))
    names = ", ".join(_device_name(i) for i in ordered)
    if stereo:
        if len(ordered) < 2:
            raise SourceError(
                f"a stereo model needs two cameras but only {names} answered; plug in both "
                "cameras or pass --camera LEFT,RIGHT"
            )
        if len(ordered) > 2:
            log.warning("found %d cameras (%s); using the two highest as left, right",
                        len(ordered), names)
        return ordered[0], ordered[1]
    if len(ordered) > 1:
        log.info("found %d cameras (%s); using %s (the left one)", len(ordered), names,
                 _device_name(ordered[0]))
    return (ordered[0],)


def probe_device(index: int) -> bool:
    """True if ``/dev/video<index>`` opens with V4L2 and returns a frame (the stock test).

    OpenCV's own warnings for absent devices ("can't open camera by index") are silenced
    during the probe: a scan expects most indices to be empty."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
    try:
        if not cap.isOpened():
            return False
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*DEFAULT_FOURCC))
        ok, _ = cap.read()
        return bool(ok)
    finally:
        cap.release()
        cv2.utils.logging.setLogLevel(level)


def scan_cameras(
    indices: Sequence[int] = SCAN_INDICES, probe: Callable[[int], bool] = probe_device
) -> list[int]:
    """The indices (in scan order) whose device opens and returns a test frame."""
    return [i for i in indices if probe(i)]


def auto_devices(
    *,
    stereo: bool = False,
    indices: Sequence[int] = SCAN_INDICES,
    probe: Callable[[int], bool] = probe_device,
) -> tuple[int, ...]:
    """Scan like the stock camera node and assign mono/left/right; SourceError if none."""
    found = scan_cameras(indices, probe)
    if not found:
        raise SourceError(_no_camera_message(indices))
    log.info("camera scan: %s answered", ", ".join(_device_name(i) for i in found))
    return assign_cameras(found, stereo=stereo)


def _no_camera_message(indices: Sequence[int]) -> str:
    tried = (f"/dev/video{indices[0]}..{indices[-1]}" if len(indices) > 1
             else f"/dev/video{indices[0]}")
    return f"no camera found (tried {tried}); plug in the camera or pass --camera FILE|DIR"


# -- health helpers (pure: times are passed in) ----------------------------------------------------
class FpsWatch:
    """Detects an fps collapse: fewer than ``min_ratio x nominal`` frames/s over ``window_s``.

    Judged only after a full window since :meth:`reset`; recovers at ``recover_ratio`` (hysteresis,
    so a rate hovering at the threshold is counted once).
    """

    def __init__(
        self,
        nominal_fps: float | None,
        *,
        window_s: float = 2.0,
        min_ratio: float = 0.5,
        recover_ratio: float = 0.8,
    ) -> None:
        self.nominal_fps = nominal_fps
        self.window_s = window_s
        self.min_ratio = min_ratio
        self.recover_ratio = recover_ratio
        self._times: collections.deque[float] = collections.deque()
        self._t_start_s: float | None = None
        self.collapsed = False
        self.measured_fps = 0.0

    def reset(self, t_s: float) -> None:
        """Start a new warm-up window at ``t_s`` (after opening or reconnecting)."""
        self._times.clear()
        self._t_start_s = t_s
        self.collapsed = False

    def update(self, t_s: float) -> bool:
        """Record a frame at ``t_s``; True exactly when a collapse begins."""
        if self._t_start_s is None:
            self._t_start_s = t_s
        self._times.append(t_s)
        while self._times and self._times[0] <= t_s - self.window_s:
            self._times.popleft()
        if not self.nominal_fps or t_s - self._t_start_s < self.window_s:
            return False
        self.measured_fps = len(self._times) / self.window_s
        if self.collapsed:
            if self.measured_fps >= self.recover_ratio * self.nominal_fps:
                self.collapsed = False
            return False
        if self.measured_fps < self.min_ratio * self.nominal_fps:
            self.collapsed = True
            return True
        return False


class _LogLimiter:
    """Log each kind of message at most once per ``interval_s``, saying how many were skipped."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def __call__(self, key: str, level: int, msg: str, t_s: float) -> None:
        last = self._last.get(key)
        if last is not None and t_s - last < self.interval_s:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        skipped = self._skipped.pop(key, 0)
        self._last[key] = t_s
        log.log(level, "%s%s", msg, f" ({skipped} similar messages skipped)" if skipped else "")


class CaptureClock:
    """Picks each frame's capture time: the driver's buffer timestamp (``driver_ms``, from
    ``CAP_PROP_POS_MSEC`` on V4L2) when it is on the monotonic clock, else ``grab_s`` (the time
    ``grab()`` returned).

    The driver's clock counts as verified once a timestamp falls at most ``MAX_DRIVER_LAG_S``
    before its grab (never after it: a CLOCK_REALTIME stamp is decades off). From then on a
    larger lag is believed -- it is a frame that waited in the driver (after a stall), and its
    true age is what keeps it from being driven on. Pure (times are passed in); :meth:`stamp`
    returns the time and whether the source changed (the caller logs that)."""

    STALE_LIMIT_S = 3600.0  # a verified driver stamp older than this is a broken clock instead

    def __init__(self, use_driver: bool = True) -> None:
        self.use_driver = use_driver
        self.verified = False
        self.source: str | None = None
        self.driver_frames = 0
        self.grab_frames = 0
        self.why_not = "" if use_driver else "not a V4L2 device"

    def stamp(self, driver_ms: float | None, grab_s: float) -> tuple[float, bool]:
        before = self.source
        t = None
        if self.use_driver and driver_ms is not None and np.isfinite(driver_ms) and driver_ms > 0:
            lag_s = grab_s - driver_ms / 1e3
            limit_s = self.STALE_LIMIT_S if self.verified else MAX_DRIVER_LAG_S
            if 0 <= lag_s <= limit_s:
                t = driver_ms / 1e3
                self.verified = True
            else:
                self.why_not = (f"the driver's timestamp is {lag_s:+.3f} s from the grab time: "
                                "not on CLOCK_MONOTONIC")
        elif self.use_driver:
            self.why_not = "the driver gave no buffer timestamp"
        if t is None:
            self.grab_frames += 1
            self.source = "grab"
            return grab_s, before != self.source
        self.driver_frames += 1
        self.source = "driver"
        return t, before != self.source

    def describe(self) -> str:
        if self.source == "driver":
            return "the driver's buffer timestamps (V4L2, CLOCK_MONOTONIC)"
        return f"the grab time ({self.why_not})"


# -- one device ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptureSettings:
    """What a device actually gave us (read back after asking)."""

    device: str
    width: int
    height: int
    fps: float
    fourcc: str
    encoded: str  # "jpeg": frames are the camera's JPEG bytes; "bgr": decoded arrays
    buffers: int = 0  # V4L2 driver buffers in use (0: not a V4L2 device)


def is_jpeg_buffer(buf: Any) -> bool:
    """True for an encoded JPEG as OpenCV returns it: a 1-D or 1xN uint8 buffer starting FF D8."""
    if not isinstance(buf, np.ndarray) or buf.dtype != np.uint8 or buf.size < 4:
        return False
    if not (buf.ndim == 1 or (buf.ndim == 2 and buf.shape[0] == 1)):
        return False
    flat = buf.reshape(-1)
    return bool(flat[0] == 0xFF and flat[1] == 0xD8)


def _fourcc_text(value: float) -> str:
    code = int(value)
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text if text.isprintable() and code else "?"


class _Capture:
    """One ``cv2.VideoCapture``: open and configure it, read settings back, grab/retrieve."""

    def __init__(self, spec: DeviceSpec, width: int, height: int, fps: float, fourcc: str) -> None:
        self.spec = spec
        self.name = _device_name(spec)
        self.is_v4l2 = isinstance(spec, int) or str(spec).startswith("/dev/")
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.cap: Any = None
        self.encoded = True  # try JPEG passthrough first

    def open(self, *, probe: bool) -> CaptureSettings:
        """Open and configure; with ``probe``, read one frame to choose JPEG or BGR delivery."""
        self._open_cap()
        if probe:
            ok, buf = self.cap.read()
            if not ok:
                self.release()
                raise SourceError(
                    f"camera {self.name} opened but returned no frame; check the cable, or that "
                    "no other program (e.g. the stock deepracer-core service) is using it"
                )
            if self.encoded and not is_jpeg_buffer(buf):
                log.info("%s does not deliver MJPEG; decoding frames to BGR in the capture "
                         "thread", self.name)
                self.release()
                self.encoded = False
                self._open_cap()
        return self.settings()

    def _open_cap(self) -> None:
        import cv2

        if self.is_v4l2:
            cap = cv2.VideoCapture(self.spec, cv2.CAP_V4L2)
        else:
            params = [cv2.CAP_PROP_FORMAT, -1] if self.encoded else []  # FFmpeg raw packets
            cap = cv2.VideoCapture(str(self.spec), cv2.CAP_ANY, params)
        if not cap.isOpened():
            cap.release()
            hint = (f"check it is plugged in (ls -l {self.name}) and that you are in the video "
                    "group" if self.is_v4l2 else "check the path or URL")
            raise SourceError(f"cannot open camera {self.name}; {hint}")
        if self.is_v4l2:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_CONVERT_RGB, 0 if self.encoded else 1)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, V4L2_BUFFERS)  # before streaming starts
        self.cap = cap

    def settings(self) -> CaptureSettings:
        import cv2

        cap = self.cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        return CaptureSettings(
            device=self.name,
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=float(fps) if np.isfinite(fps) and fps > 0 else 0.0,
            fourcc=_fourcc_text(cap.get(cv2.CAP_PROP_FOURCC)),
            encoded="jpeg" if self.encoded else "bgr",
            buffers=int(cap.get(cv2.CAP_PROP_BUFFERSIZE)) if self.is_v4l2 else 0,
        )

    def grab(self) -> bool:
        return self.cap is not None and bool(self.cap.grab())

    def driver_ms(self) -> float | None:
        """The grabbed buffer's driver timestamp in ms (V4L2 only), else None."""
        import cv2

        if not self.is_v4l2 or self.cap is None:
            return None
        return float(self.cap.get(cv2.CAP_PROP_POS_MSEC))

    def retrieve(self) -> Image | None:
        ok, buf = self.cap.retrieve()
        if not ok or buf is None:
            return None
        if self.encoded:
            return buf.tobytes() if is_jpeg_buffer(buf) else None
        return buf

    def release(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


# -- the camera ------------------------------------------------------------------------------------
class Camera(FrameSource):
    """A mono or stereo camera feeding the newest-frame slot; see the module docstring.

    ``devices``: an index, a path, or two of them (left, right). Opens at construction: a
    missing or silent device raises :class:`SourceError` at once.
    """

    def __init__(
        self,
        devices: DeviceSpec | Sequence[DeviceSpec],
        *,
        width: int = DEFAULT_WIDTH,
        height: int = DEFAULT_HEIGHT,
        fps: float | None = None,
        fourcc: str = DEFAULT_FOURCC,
        paced: bool = True,
        max_read_failures: int = 5,
        frozen_after_s: float = 0.5,
        stall_s: float = 1.0,
        lost_after_s: float = 5.0,
        backoff_s: tuple[float, float] = (0.1, 2.0),
        log_interval_s: float = 5.0,
    ) -> None:
        specs = [devices] if isinstance(devices, (int, str)) else list(devices)
        if len(specs) not in (1, 2):
            raise SourceError(f"a camera is one device or a stereo pair, not {len(specs)} devices")
        super().__init__("camera:" + ",".join(_device_name(s) for s in specs), paced=paced)
        limit_opencv_threads()
        requested_fps = fps or DEFAULT_FPS
        self._captures = [_Capture(s, width, height, requested_fps, fourcc) for s in specs]
        self.max_read_failures = max_read_failures
        self.frozen_after_s = frozen_after_s
        self.stall_s = stall_s
        self.lost_after_s = lost_after_s
        self.backoff_s = backoff_s
        self.frozen = False
        self.frozen_events = 0
        self.fps_collapses = 0
        self._log = _LogLimiter(log_interval_s)
        self.settings: list[CaptureSettings] = []
        try:
            for cap in self._captures:
                s = cap.open(probe=True)
                self.settings.append(s)
                log.info("%s: asked %dx%d@%g %s, got %dx%d@%g %s, delivering %s%s", s.device,
                         width, height, requested_fps, fourcc, s.width, s.height, s.fps, s.fourcc,
                         s.encoded, f", {s.buffers} driver buffer(s) (asked {V4L2_BUFFERS})"
                         if cap.is_v4l2 else "")
                if (s.width, s.height) != (width, height) and cap.is_v4l2:
                    log.warning("%s runs at %dx%d, not the requested %dx%d", s.device, s.width,
                                s.height, width, height)
        except BaseException:
            self._release()
            raise
        self.fps = self.settings[0].fps or requested_fps
        self._fps_watch = FpsWatch(self.fps)
        self.clock = CaptureClock(use_driver=all(c.is_v4l2 for c in self._captures))

    @property
    def stereo(self) -> bool:
        return len(self._captures) == 2

    def health(self) -> dict[str, Any]:
        h = super().health()
        h.update(
            frozen=self.frozen,
            frozen_events=self.frozen_events,
            fps_collapses=self.fps_collapses,
            settings=[dataclasses.asdict(s) for s in self.settings],
            capture_clock=self.clock.source,
            driver_stamped=self.clock.driver_frames,
            grab_stamped=self.clock.grab_frames,
        )
        return h

    def _release(self) -> None:
        for cap in self._captures:
            cap.release()

    # -- the capture loop ----------------------------------------------------------------------
    def _produce(self, paced: bool) -> Iterator[Frame]:
        pace = paced and not any(c.is_v4l2 for c in self._captures)  # devices pace themselves
        period_s = 1.0 / self.fps if self.fps else 0.0
        seq = 0
        t_last_new_s = now_s()  # time of the last frame that was not a duplicate
        next_due_s = t_last_new_s
        prev_key: tuple | None = None
        failures_in_row = 0
        self._fps_watch.reset(t_last_new_s)
        while not self._stop.is_set():
            if pace:
                if not self._sleep_until(next_due_s):
                    return
                next_due_s = max(next_due_s + period_s, now_s())
            ok = all([c.grab() for c in self._captures])  # grab all first: a tight stereo pair
            t_s = now_s()
            t_capture_s = t_s
            if ok:  # the earliest of the pair's driver timestamps (the older frame) if usable
                stamps = [self.clock.stamp(c.driver_ms(), t_s) for c in self._captures]
                t_capture_s = min(t for t, _ in stamps)
                if any(changed for _, changed in stamps):
                    log.info("%s: capture time = %s", self.description, self.clock.describe())
            images = tuple(c.retrieve() for c in self._captures) if ok else ()
            if not ok or any(img is None for img in images):
                self.read_failures += 1
                failures_in_row += 1
                self._log("read", logging.WARNING,
                          f"{self.description}: read failed ({self.read_failures} so far)", t_s)
                if failures_in_row >= self.max_read_failures or t_s - t_last_new_s >= self.stall_s:
                    if not self._reconnect(t_last_new_s):
                        return
                    failures_in_row, prev_key = 0, None
                    next_due_s = now_s()
                continue
            failures_in_row = 0
            key = content_key(images)
            # Stereo: one frozen camera is enough to make the pair a repeat.
            if prev_key is not None and any(a == b for a, b in zip(key, prev_key)):
                self.duplicates += 1
                stuck_s = t_s - t_last_new_s
                if not self.frozen and stuck_s >= self.frozen_after_s:
                    self.frozen = True
                    self.frozen_events += 1
                    self._log("frozen", logging.WARNING,
                              f"{self.description}: frozen, the same image for {stuck_s:.2f} s "
                              f"({self.duplicates} duplicates so far)", t_s)
                if stuck_s >= self.stall_s:
                    if not self._reconnect(t_last_new_s):
                        return
                    prev_key = None
                    next_due_s = now_s()
                continue
            prev_key = key
            if self.frozen:
                self.frozen = False
                log.info("%s: live again", self.description)
            t_last_new_s = t_s
            seq += 1
            self._delivered(t_s)
            if self._fps_watch.update(t_s):
                self.fps_collapses += 1
                self._log("fps", logging.WARNING,
                          f"{self.description}: fps collapsed to "
                          f"{self._fps_watch.measured_fps:.1f} (expected {self.fps:g})", t_s)
            yield Frame(seq=seq, t_capture_s=t_capture_s, images=images, media_t_s=t_capture_s)

    def _reconnect(self, t_last_new_s: float) -> bool:
        """Reopen every device with exponential backoff. False if stopped; SourceError if lost."""
        delay_s, max_delay_s = self.backoff_s
        while True:
            self._release()
            waited_s = now_s() - t_last_new_s
            if waited_s >= self.lost_after_s:
                raise SourceError(
                    f"camera lost: {self.description} gave no new frame for {waited_s:.1f} s "
                    "despite reconnecting; check the USB cable and `ls /dev/video*`"
                )
            self._log("reconnect", logging.WARNING,
                      f"{self.description}: no frames, reconnecting in {delay_s:.1f} s", now_s())
            if self._stop.wait(delay_s):
                return False
            try:
                for cap in self._captures:
                    cap.open(probe=False)
            except SourceError as exc:
                self._log("reopen", logging.WARNING, f"{exc}", now_s())
                delay_s = min(delay_s * 2, max_delay_s)
                continue
            self.reconnects += 1
            log.info("%s: reconnected (%d so far)", self.description, self.reconnects)
            self._fps_watch.reset(now_s())
            return True
