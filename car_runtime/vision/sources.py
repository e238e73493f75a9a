"""Frame sources: camera, video file, image folder, rosbag2 -- one interface.

Every source can be used two ways:

- ``for frame in source``: every frame in order, as fast as possible (replay, bench). Each
  iteration starts from the beginning for files; ``seq`` starts at 1.
  ``source.iter_frames(paced=True)`` does the same in real time.
- ``source.start(slot)``: a background thread feeds a :class:`LatestFrameSlot` (newest wins,
  never a queue). Files are released at their native rate (frame k at ``t0 + k/fps``) when
  ``paced``, or as fast as possible otherwise; a camera delivers as the device does. At the end
  of input or on a fatal error the thread closes the slot; ``ended`` is then True and ``error``
  holds the exception, if any.

``t_capture_s`` is :func:`car_runtime.timing.now_s` when the frame is produced (released, for a
paced file), so ``now_s() - frame.t_capture_s`` is its age. ``media_t_s`` is its position in
the file in seconds.

Use :func:`open_source` to turn a ``--camera`` value into a source.
"""

from __future__ import annotations

import logging
import re
import threading
import zlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from car_runtime.errors import SourceError
from car_runtime.timing import RateMeter, now_s
from car_runtime.vision.frame import Frame, Image, LatestFrameSlot

log = logging.getLogger(__name__)

#: Rate an image folder is paced at when no ``--fps`` is given: the car camera's rate.
DEFAULT_FOLDER_FPS = 30.0
#: Rate a video is paced at if its container does not say.
FALLBACK_VIDEO_FPS = 30.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

_JOIN_TIMEOUT_S = 5.0


def check_fps(fps: float | None) -> None:
    """Refuse a requested frame rate that is not positive (``None`` = the source's own)."""
    if fps is not None and fps <= 0:
        raise SourceError(f"--fps must be > 0 (got {fps:g})")


class FrameSource(ABC):
    """Base class: lifecycle (start/stop/close, context manager), counters and ``health()``.

    Subclasses implement :meth:`_produce`, a generator of frames; pacing, ``seq`` and time
    stamping happen there.
    """

    #: Native rate: video fps, ``--fps`` for folders, the camera's read-back fps; None = unknown.
    fps: float | None = None
    #: Number of frames in a file source, if known (for progress bars); None for cameras.
    frame_count: int | None = None

    def __init__(self, description: str, *, paced: bool = True) -> None:
        self.description = description
        self.paced = paced
        self.ended = False
        self.error: BaseException | None = None
        self.frames = 0  # delivered (yielded or put in the slot)
        self.read_failures = 0
        self.duplicates = 0
        self.reconnects = 0
        self.late = 0  # paced frames released more than one period late
        self._rate = RateMeter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- the two ways to consume -----------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        """Every frame in order, as fast as possible, in the caller's thread."""
        return self._produce(paced=False)

    def iter_frames(self, *, paced: bool = False) -> Iterator[Frame]:
        """Like iterating, but ``paced=True`` releases files at their native rate (real time)."""
        return self._produce(paced=paced)

    def start(self, slot: LatestFrameSlot) -> None:
        """Feed ``slot`` from a background thread until end of input, error or :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError(f"{self.description}: already started")
        if self._closed:
            raise RuntimeError(f"{self.description}: closed")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._feed, args=(slot,), name=f"frames:{self.description}", daemon=True
        )
        self._thread.start()

    def _feed(self, slot: LatestFrameSlot) -> None:
        frames = self._produce(paced=self.paced)
        try:
            for frame in frames:
                if self._stop.is_set():
                    break
                slot.put(frame)
        except BaseException as exc:  # noqa: BLE001 -- recorded for the loop, which decides
            self.error = exc
            log.error("%s: %s", self.description, exc)
        finally:
            frames.close()
            self.ended = True
            slot.close()

    def stop(self) -> None:
        """Stop the background thread (if any) and wait for it."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("%s: reader thread did not stop within %.0f s", self.description,
                            _JOIN_TIMEOUT_S)

    def close(self) -> None:
        """Stop and release the underlying file/device. Idempotent."""
        self.stop()
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def health(self) -> dict[str, Any]:
        """Counters for status lines and diagnostics (safe to call from any thread)."""
        return {
            "source": self.description,
            "fps": round(float(self._rate.fps()), 2),
            "fps_nominal": self.fps,
            "frames": self.frames,
            "read_failures": self.read_failures,
            "duplicates": self.duplicates,
            "frozen": False,
            "fps_collapses": 0,
            "reconnects": self.reconnects,
            "late": self.late,
            "ended": self.ended,
            "error": None if self.error is None else str(self.error),
        }

    # -- for subclasses --------------------------------------------------------------------------
    @abstractmethod
    def _produce(self, paced: bool) -> Iterator[Frame]:
        """Yield frames (with ``seq`` from 1); pace them at :attr:`fps` if ``paced``."""

    def _release(self) -> None:
        """Release the file/device (called once by :meth:`close`)."""

    def _delivered(self, t_s: float) -> None:
        self.frames += 1
        self._rate.tick(t_s)

    def _sleep_until(self, t_s: float) -> bool:
        """Sleep (no busy wait) until monotonic ``t_s``; False if :meth:`stop` was called."""
        delay_s = t_s - now_s()
        if delay_s > 0:
            return not self._stop.wait(delay_s)
        return not self._stop.is_set()


class _FileSource(FrameSource):
    """A finite, ordered sequence of images with a nominal rate: the shared pacing logic."""

    @abstractmethod
    def _images(self) -> Iterator[tuple[tuple[Image, ...], dict]]:
        """Yield ``(images, meta)`` for every frame in order, from the beginning."""

    def _produce(self, paced: bool) -> Iterator[Frame]:
        fps = self.fps or FALLBACK_VIDEO_FPS
        period_s = 1.0 / fps
        prev_key: tuple | None = None
        t0_s: float | None = None
        images_iter = self._images()
        try:
            for k, (images, meta) in enumerate(images_iter):
                key = content_key(images)
                if key == prev_key:
                    self.duplicates += 1  # counted, still delivered: a file may hold a still scene
                prev_key = key
                if paced:
                    if t0_s is None:
                        t0_s = now_s()
                    due_s = t0_s + k * period_s
                    if not self._sleep_until(due_s):
                        return
                    if now_s() - due_s > period_s:
                        self.late += 1
                t_s = now_s()
                self._delivered(t_s)
                yield Frame(seq=k + 1, t_capture_s=t_s, images=images, media_t_s=k * period_s,
                            meta=meta)
            self.ended = True
        finally:
            close = getattr(images_iter, "close", None)
            if close is not None:
                close()


class VideoFileSource(_FileSource):
    """A video file read with ``cv2.VideoCapture``; ``images=(bgr,)``.

    Plays at the container's fps (or ``fps`` if given). Each iteration re-reads from the start.
    """

    def __init__(self, path: str | Path, *, fps: float | None = None, paced: bool = True) -> None:
        import cv2

        from car_runtime.vision.camera import limit_opencv_threads

        limit_opencv_threads()
        self.path = Path(path)
        super().__init__(f"video:{self.path}", paced=paced)
        if not self.path.is_file():
            raise SourceError(f"video file {self.path} does not exist; check the path")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(_unreadable_video(self.path))
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise SourceError(_unreadable_video(self.path))
        native_fps = cap.get(cv2.CAP_PROP_FPS)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None
        self.height, self.width = first.shape[:2]
        native = native_fps if np.isfinite(native_fps) and 0 < native_fps < 1000 else None
        check_fps(fps)
        self.fps = fps or native
        if self.fps is None:
            log.warning("%s: the file does not say its frame rate; playing at %g fps (pass --fps)",
                        self.path, FALLBACK_VIDEO_FPS)
            self.fps = FALLBACK_VIDEO_FPS
        self._cap: Any = cap
        self._first: np.ndarray | None = first
        self._lock = threading.Lock()

    def _images(self) -> Iterator[tuple[tuple[Image, ...], dict]]:
        import cv2

        with self._lock:
            cap, first = self._cap, self._first
            self._cap, self._first = None, None
        if cap is None:  # a later iteration: open again from the start
            cap = cv2.VideoCapture(str(self.path))
            ok, first = cap.read()
            if not ok:
                cap.release()
                raise SourceError(_unreadable_video(self.path))
        try:
            frame = first
            while frame is not None:
                yield (frame,), {}
                ok, frame = cap.read()
                if not ok:
                    frame = None
        finally:
            cap.release()

    def _release(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class ImageFolderSource(_FileSource):
    """Images in a folder, sorted by name; ``images=(raw file bytes,)``, decoded by the pipeline.

    Names sort with numbers compared as numbers (``2.jpg`` before ``10.jpg``). Paced at ``fps``
    (default :data:`DEFAULT_FOLDER_FPS`, the car camera's 30 fps). ``stereo=True`` reads the
    subfolders ``left/`` and ``right/`` and pairs their images by sorted position:
    ``images=(left, right)``. ``meta["file"]`` is the (left) image's name.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float | None = None,
        paced: bool = True,
        stereo: bool = False,
    ) -> None:
        self.path = Path(path)
        super().__init__(f"folder:{self.path}", paced=paced)
        if not self.path.is_dir():
            raise SourceError(f"image folder {self.path} does not exist; check the path")
        check_fps(fps)
        self.fps = fps or DEFAULT_FOLDER_FPS
        if stereo:
            left, right = self.path / "left", self.path / "right"
            if not (left.is_dir() and right.is_dir()):
                raise SourceError(
                    f"a stereo model needs two images per frame but {self.path} has no left/ and "
                    "right/ subfolders; put each camera's images in left/ and right/"
                )
            self._files = [_list_images(left), _list_images(right)]
            if len(self._files[0]) != len(self._files[1]):
                n = min(len(f) for f in self._files)
                log.warning("%s: left/ has %d images, right/ %d; using the first %d pairs",
                            self.path, len(self._files[0]), len(self._files[1]), n)
                self._files = [f[:n] for f in self._files]
        else:
            self._files = [_list_images(self.path)]
        self.frame_count = len(self._files[0])

    def _images(self) -> Iterator[tuple[tuple[Image, ...], dict]]:
        for paths in zip(*self._files):
            try:
                images = tuple(p.read_bytes() for p in paths)
            except OSError as exc:
                raise SourceError(f"cannot read {exc.filename}: {exc.strerror}; check the file "
                                  "permissions") from exc
            yield images, {"file": paths[0].name}


def content_key(images: tuple[Image, ...]) -> tuple:
    """A cheap fingerprint of a frame's images, to spot identical consecutive frames.

    Encoded bytes: length and CRC-32 of the whole buffer (~10 us for a 50 KB JPEG). Arrays: the
    shape and the CRC-32 of 8 evenly spaced rows, first and last included (~15 KB of CRC for
    a 640x480 BGR frame).
    """
    parts: list = []
    for img in images:
        if isinstance(img, (bytes, bytearray, memoryview)):
            parts.append((len(img), zlib.crc32(img)))
        else:
            arr = np.asarray(img)
            crc = 0
            if arr.ndim and arr.shape[0]:
                last = arr.shape[0] - 1
                for r in sorted({(i * last) // 7 for i in range(8)}):  # first..last, 8 rows
                    crc = zlib.crc32(np.ascontiguousarray(arr[r]), crc)
            parts.append((arr.shape, crc))
    return tuple(parts)


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _list_images(folder: Path) -> list[Path]:
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=_natural_key,
    )
    if not files:
        raise SourceError(
            f"no images ({', '.join('*' + s for s in IMAGE_SUFFIXES)}) in {folder}; "
            "point --camera at a folder of camera frames"
        )
    return files


def _unreadable_video(path: Path) -> str:
    return (
        f"cannot read video {path} (not a video, or a codec OpenCV's FFmpeg lacks); "
        f"convert it with `ffmpeg -i {path.name} -c:v mjpeg out.avi` or pass a folder of images"
    )


def _is_device(spec: str) -> bool:
    """A camera index or a device node (``/dev/video4``, ``/dev/v4l/by-id/...``), not a file."""
    if spec.isdigit():
        return True
    return spec.startswith("/dev/") and not Path(spec).is_file() and not Path(spec).is_dir()


def open_source(
    spec: str | None,
    *,
    fps: float | None = None,
    paced: bool = True,
    stereo: bool = False,
    **opts: Any,
) -> FrameSource:
    """Open what ``--camera`` names.

    - ``"auto"``, ``""`` or ``None``: scan for the car camera(s) like the stock node
      (``/dev/video4`` .. ``/dev/video0``);
    - ``"0"``..``"9"`` or ``/dev/videoN``: that camera; ``"4,3"``: a stereo pair (left, right);
    - a file: :class:`VideoFileSource` (``fps`` overrides the file's rate);
    - a folder: :class:`ImageFolderSource` paced at ``fps`` (default 30); a folder holding
      ``metadata.yaml`` (or a torn recording's ``.mcap``/``.db3``) is a rosbag2 and opens
      ``car_runtime.vision.bag.BagSource``.

    ``opts`` go to the camera (``width``, ``height``, ``fourcc``...) or to the bag reader
    (e.g. ``topic``). Raises :class:`SourceError` naming the fix for anything unusable.
    """
    spec = (spec or "").strip()
    if spec.lower() in ("", "auto"):
        from car_runtime.vision.camera import Camera, auto_devices

        return Camera(auto_devices(stereo=stereo), fps=fps, **opts)
    parts = [p.strip() for p in spec.split(",")]
    if all(_is_device(p) for p in parts) and len(parts) <= 2:
        from car_runtime.vision.camera import Camera

        devices = [int(p) if p.isdigit() else p for p in parts]
        if stereo and len(devices) != 2:
            raise SourceError(
                f"a stereo model needs two cameras; pass --camera LEFT,RIGHT (e.g. 4,3), "
                f"not {spec!r}"
            )
        return Camera(devices, fps=fps, **opts)
    path = Path(spec).expanduser()
    if not path.exists():
        raise SourceError(
            f"--camera {spec}: no such file, folder or device; pass a camera index, /dev/videoN, "
            "a video file or an image folder"
        )
    if path.is_dir():
        if is_rosbag_folder(path):
            return _open_bag(path, fps=fps, paced=paced, stereo=stereo, **opts)
        return ImageFolderSource(path, fps=fps, paced=paced, stereo=stereo)
    if stereo:
        raise SourceError(
            f"a stereo model needs two images per frame but {path} is a single video; pass two "
            "cameras (--camera 4,3) or a folder with left/ and right/ subfolders"
        )
    return VideoFileSource(path, fps=fps, paced=paced)


def is_rosbag_folder(path: Path) -> bool:
    """A rosbag2 folder: ``metadata.yaml``, or (a recording cut off before it closed) an
    ``.mcap`` / ``.db3`` file and no images."""
    if (path / "metadata.yaml").is_file():
        return True
    return any(path.glob("*.mcap")) or any(path.glob("*.db3"))


def _open_bag(path: Path, **kwargs: Any) -> FrameSource:
    try:
        from car_runtime.vision.bag import BagSource
    except ModuleNotFoundError as exc:
        if exc.name == "car_runtime.vision.bag":
            raise SourceError(
                f"rosbag input needs car_runtime.vision.bag, which this install lacks; update "
                f"car-runtime, or export {path} to images or a video"
            ) from exc
        raise SourceError(
            f"rosbag input needs the {exc.name} package; install it with "
            "`pip install 'car-runtime[replay]'`"
        ) from exc
    return BagSource(path, **kwargs)
