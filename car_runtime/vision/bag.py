"""ROS 2 bag (rosbag2, sqlite3 or mcap) as a frame source, read with the pure-Python ``rosbags``.

Readable topics (found from the bag's metadata, no ROS install needed):

- ``sensor_msgs/msg/Image`` (``bgr8``, ``rgb8``, ``mono8``, ``bgra8``, ``rgba8``, ``yuv422``/
  ``uyvy``, ``yuyv``): delivered as a decoded BGR (or grey) array;
- ``sensor_msgs/msg/CompressedImage`` (JPEG/PNG): delivered as the encoded bytes, decoded by the
  pipeline exactly like a camera frame;
- any message with an ``images`` array of those (the DeepRacer ``CameraMsg`` /
  ``InferResultsArray``), when the bag carries the type's definition (rosbag2 Iron and later):
  image 0 is the left/only camera, image 1 the right one (stereo).

Topic choice: ``topic=`` (``--topic``) or, by default, the stock camera topic
``/camera_pkg/display_mjpeg`` if present, else the first image topic in the bag.
A frame's ``media_t_s`` is its bag timestamp (recording time) minus the first frame's, because the
stock camera publishes with an empty header stamp. ``fps`` is the topic's mean rate, from the
bag's metadata, unless given.

Torn bags (a recording cut by kill -9 or a power cut: no ``metadata.yaml``, an MCAP file without
its end) are read up to their last complete chunk (:func:`car_runtime.recording.catalog.readable_bag`);
:attr:`BagSource.damage` then says what was lost.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from car_runtime.errors import SourceError
from car_runtime.timing import now_s
from car_runtime.vision.frame import Frame, Image
from car_runtime.vision.sources import FALLBACK_VIDEO_FPS, FrameSource, check_fps, content_key

log = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
#: Preferred topics, best first: the stock camera node's display stream (first camera).
STOCK_TOPICS = ("/camera_pkg/display_mjpeg", "/camera_pkg/display_mjpeg/compressed")

#: sensor_msgs/Image encoding -> (channels, cv2 conversion to BGR or None).
_ENCODINGS: dict[str, tuple[int, str | None]] = {
    "bgr8": (3, None),
    "8uc3": (3, None),
    "rgb8": (3, "COLOR_RGB2BGR"),
    "mono8": (1, None),
    "8uc1": (1, None),
    "bgra8": (4, "COLOR_BGRA2BGR"),
    "8uc4": (4, "COLOR_BGRA2BGR"),
    "rgba8": (4, "COLOR_RGBA2BGR"),
    "yuv422": (2, "COLOR_YUV2BGR_UYVY"),
    "uyvy": (2, "COLOR_YUV2BGR_UYVY"),
    "yuv422_yuy2": (2, "COLOR_YUV2BGR_YUY2"),
    "yuyv": (2, "COLOR_YUV2BGR_YUY2"),
}


def image_to_array(msg: Any) -> np.ndarray:
    """A deserialized ``sensor_msgs/Image`` -> BGR (H, W, 3) or grey (H, W) uint8 array."""
    import cv2

    enc = str(msg.encoding).lower()
    if enc not in _ENCODINGS:
        raise SourceError(
            f"bag image encoding {msg.encoding!r} is not supported (use one of "
            f"{', '.join(sorted(_ENCODINGS))}); record bgr8 or a CompressedImage topic"
        )
    channels, conversion = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    row = w * channels
    if h <= 0 or w <= 0 or step < row or data.size < h * step - (step - row):
        raise SourceError(
            f"bag image is inconsistent ({w}x{h} {msg.encoding}, step {step}, {data.size} bytes); "
            "the bag is damaged or was written with a wrong step"
        )
    if data.size < h * step:  # last row may be unpadded
        data = np.concatenate([data, np.zeros(h * step - data.size, np.uint8)])
    arr = data[: h * step].reshape(h, step)[:, :row]
    arr = arr.reshape(h, w) if channels == 1 else arr.reshape(h, w, channels)
    if conversion is not None:
        arr = cv2.cvtColor(arr, getattr(cv2, conversion))
    return np.ascontiguousarray(arr)


def _to_image(msg: Any, msgtype: str) -> Image:
    if msgtype == COMPRESSED_TYPE or (msgtype != IMAGE_TYPE and not hasattr(msg, "encoding")):
        return bytes(np.asarray(msg.data, dtype=np.uint8).tobytes())
    return image_to_array(msg)


class BagSource(FrameSource):
    """Frames from one image topic of a rosbag2 folder (see the module docstring).

    ``images`` holds a BGR/grey array (``Image``) or the encoded bytes (``CompressedImage``);
    ``meta`` has ``topic``, ``stamp_ns`` (the bag timestamp) and, for images with a header,
    ``header_stamp_ns`` and ``frame_id`` (the first image's; the community logger's frame counter).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        topic: str | None = None,
        fps: float | None = None,
        paced: bool = True,
        stereo: bool = False,
        **_ignored: Any,
    ) -> None:
        self.path = Path(path)
        super().__init__(f"bag:{self.path}", paced=paced)
        check_fps(fps)
        self.stereo = stereo
        self.damage = None  # catalog.Damage for a torn bag
        self._stack = ExitStack()
        try:
            self._reader = self._open_reader()
        except BaseException:
            self._stack.close()
            raise
        try:
            self._select(topic)
            duration_s = (self._last_ns - self._first_ns) / 1e9 if self._last_ns else 0.0
            count = self.frame_count or 0
            rate = (count - 1) / duration_s if count > 1 and duration_s > 0 else None
            self.fps = fps or rate or FALLBACK_VIDEO_FPS
        except BaseException:
            self._reader.close()
            self._stack.close()
            raise

    # -- opening ---------------------------------------------------------------------------------
    def _open_reader(self) -> Any:
        try:
            from rosbags.highlevel import AnyReader, AnyReaderError
            from rosbags.typesys import Stores, get_typestore
        except ModuleNotFoundError as exc:
            raise SourceError(
                f"reading a rosbag needs the rosbags package ({exc.name} is missing); install it "
                "with `pip install 'car-runtime[replay]'`"
            ) from None
        from car_runtime.recording.catalog import readable_bag

        if not self.path.is_dir():
            raise SourceError(f"rosbag folder {self.path} does not exist; check the path")
        try:
            path, self.damage = self._stack.enter_context(readable_bag(self.path))
        except OSError as exc:
            raise SourceError(f"cannot read rosbag {self.path}: {exc.strerror or exc}") from None
        if self.damage is not None:
            log.warning("%s: %s", self.path, self.damage.describe())
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_FOXY))
        try:
            reader.open()
        except (AnyReaderError, OSError, ValueError, KeyError) as exc:
            raise SourceError(
                f"cannot read rosbag {self.path} ({_first_line(exc)}); is it a complete rosbag2 "
                "folder (metadata.yaml + .db3/.mcap files)?"
            ) from None
        except Exception as exc:  # e.g. sqlite3 or mcap errors on a damaged file
            raise SourceError(
                f"cannot read rosbag {self.path} ({type(exc).__name__}: {_first_line(exc)}); "
                "the bag may be damaged or still being recorded"
            ) from None
        return reader

    def _image_topics(self) -> dict[str, str]:
        """``{topic: msgtype}`` for every topic whose messages carry camera images."""
        out: dict[str, str] = {}
        fielddefs = self._reader.typestore.fielddefs
        for conn in self._reader.connections:
            if conn.topic in out:
                continue
            if conn.msgtype in IMAGE_TYPES or _has_images_array(fielddefs, conn.msgtype):
                out[conn.topic] = conn.msgtype
        return out

    def _select(self, topic: str | None) -> None:
        topics = self._image_topics()
        all_topics = sorted({c.topic for c in self._reader.connections})
        if not topics:
            listed = ", ".join(all_topics) or "none"
            raise SourceError(
                f"rosbag {self.path} has no camera image topics (topics: {listed}); record "
                "sensor_msgs/Image or CompressedImage, e.g. /camera_pkg/display_mjpeg"
            )
        if topic is None:
            topic = next((t for t in STOCK_TOPICS if t in topics), next(iter(topics)))
            if len(topics) > 1:
                log.info("%s: using topic %s (also: %s; pick one with --topic)", self.path, topic,
                         ", ".join(t for t in topics if t != topic))
        elif topic not in topics:
            raise SourceError(
                f"rosbag {self.path} has no image topic {topic!r}; image topics are: "
                f"{', '.join(topics)} (pass one of them to --topic)"
            )
        self.topic = topic
        self.msgtype = topics[topic]
        if self.stereo and self.msgtype in IMAGE_TYPES:
            raise SourceError(
                f"a stereo model needs two images per frame but {topic} ({self.msgtype}) has one; "
                "pick a topic with an images[] array (e.g. /camera_pkg/video_mjpeg) with --topic"
            )
        self._connections = [c for c in self._reader.connections if c.topic == topic]
        self.frame_count = sum(c.msgcount for c in self._connections) or None
        self._first_ns = self._reader.start_time
        self._last_ns = self._reader.end_time
        self.description = f"bag:{self.path}:{topic}"

    # -- reading ---------------------------------------------------------------------------------
    def _messages(self) -> Iterator[tuple[int, tuple[Image, ...], dict]]:
        reader = self._reader
        if reader is None:
            raise SourceError(f"rosbag {self.path} is closed")
        for conn, stamp_ns, raw in reader.messages(connections=self._connections):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as exc:  # bad CDR, missing type definition
                raise SourceError(
                    f"cannot decode a {conn.msgtype} message on {conn.topic} in {self.path} "
                    f"({type(exc).__name__}: {_first_line(exc)}); the bag lacks this type's "
                    "definition or is damaged -- record sensor_msgs/Image or CompressedImage"
                ) from None
            if conn.msgtype in IMAGE_TYPES:
                images: tuple[Image, ...] = (_to_image(msg, conn.msgtype),)
                first = msg
            else:
                images = tuple(_to_image(m, getattr(m, "__msgtype__", "")) for m in msg.images)
                if not images:
                    continue  # an empty images[] array carries no frame
                first = msg.images[0]
            yield stamp_ns, images, _header_meta(first)

    def _produce(self, paced: bool) -> Iterator[Frame]:
        t0_s: float | None = None
        first_ns: int | None = None
        prev_key: tuple | None = None
        period_s = 1.0 / (self.fps or FALLBACK_VIDEO_FPS)
        messages = self._messages()
        try:
            for k, (stamp_ns, images, header) in enumerate(messages):
                if first_ns is None:
                    first_ns = stamp_ns
                media_t_s = (stamp_ns - first_ns) / 1e9
                key = content_key(images)
                if key == prev_key:
                    self.duplicates += 1
                prev_key = key
                if paced:
                    if t0_s is None:
                        t0_s = now_s()
                    due_s = t0_s + media_t_s
                    if not self._sleep_until(due_s):
                        return
                    if now_s() - due_s > period_s:
                        self.late += 1
                t_s = now_s()
                self._delivered(t_s)
                yield Frame(seq=k + 1, t_capture_s=t_s, images=images, media_t_s=media_t_s,
                            meta={"topic": self.topic, "stamp_ns": stamp_ns, **header})
        finally:
            messages.close()

    def _release(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                reader.close()
            except Exception:  # already closed or half-open: nothing left to release
                log.debug("closing %s failed", self.path, exc_info=True)
        self._stack.close()


def _header_meta(msg: Any) -> dict:
    """``header_stamp_ns`` and ``frame_id`` of an image message with a header, and ``format``
    of a CompressedImage (else {})."""
    header = getattr(msg, "header", None)
    if header is None:
        return {}
    stamp = header.stamp
    meta = {"header_stamp_ns": int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec),
            "frame_id": str(header.frame_id)}
    fmt = getattr(msg, "format", None)
    if isinstance(fmt, str):
        meta["format"] = fmt
    return meta


def _has_images_array(fielddefs: dict, msgtype: str) -> bool:
    """True if ``msgtype`` has a field ``images`` that is a sequence of Image/CompressedImage."""
    spec = fielddefs.get(msgtype)
    if not spec:
        return False
    for name, desc in spec[1]:
        if name != "images":
            continue
        # desc is (Nodetype.SEQUENCE|ARRAY, ((Nodetype.NAME, "sensor_msgs/msg/Image"), n))
        try:
            inner = desc[1][0]
            return inner[1] in IMAGE_TYPES
        except (TypeError, IndexError):
            return False
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
