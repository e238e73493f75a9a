"""What a V4L2 camera offers, read with the kernel's own ioctls (no camera opened for capture).

``describe(path)`` opens ``/dev/videoN`` (only query ioctls: safe while another program
streams from it) and returns its driver, card name, whether it captures video, and every
format with its frame sizes and frame rates. The structures follow ``linux/videodev2.h``
(x86-64 and every other Linux ABI: all fields are 32-bit or bytes, no padding):

- ``v4l2_capability`` (104 bytes): driver[16] card[32] bus_info[32] version capabilities
  device_caps reserved[3];
- ``v4l2_fmtdesc`` (64): index type flags description[32] pixelformat mbus_code reserved[3];
- ``v4l2_frmsizeenum`` (44): index pixel_format type, then discrete {width height} or
  stepwise {min_w max_w step_w min_h max_h step_h}, reserved[2];
- ``v4l2_frmivalenum`` (52): index pixel_format width height type, then discrete
  {numerator denominator} or stepwise {min max step} fractions, reserved[2].

The decoding (``parse_*``) is pure; :func:`describe` only adds the syscalls.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path


def _ioc(direction: int, nr: int, size: int) -> int:
    """Linux ``_IOC(dir, 'V', nr, size)`` (asm-generic: read = 2, write = 1)."""
    return (direction << 30) | (size << 16) | (ord("V") << 8) | nr


CAPABILITY = struct.Struct("<16s32s32sIII3I")
FMTDESC = struct.Struct("<III32sII3I")
FRMSIZE = struct.Struct("<III6I2I")
FRMIVAL = struct.Struct("<IIIII6I2I")

VIDIOC_QUERYCAP = _ioc(2, 0, CAPABILITY.size)
VIDIOC_ENUM_FMT = _ioc(3, 2, FMTDESC.size)
VIDIOC_ENUM_FRAMESIZES = _ioc(3, 74, FRMSIZE.size)
VIDIOC_ENUM_FRAMEINTERVALS = _ioc(3, 75, FRMIVAL.size)

CAP_VIDEO_CAPTURE = 0x00000001
CAP_DEVICE_CAPS = 0x80000000
BUF_TYPE_VIDEO_CAPTURE = 1
FRMSIZE_TYPE_DISCRETE = 1
FRMIVAL_TYPE_DISCRETE = 1
#: Enumeration stops after this many entries (a driver that never says EINVAL).
MAX_ENTRIES = 64


def fourcc_text(code: int) -> str:
    return code.to_bytes(4, "little").decode("ascii", "replace").strip()


def fourcc_code(text: str) -> int:
    return int.from_bytes(text.encode("ascii").ljust(4), "little")


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass(frozen=True)
class Mode:
    """One frame size of a format and the frame rates offered for it (fps, highest first;
    for a stepwise range, its fastest and slowest rate)."""

    width: int
    height: int
    fps: tuple[float, ...] = ()


@dataclass(frozen=True)
class Format:
    fourcc: str  # e.g. "MJPG", "YUYV"
    description: str
    modes: tuple[Mode, ...] = ()


@dataclass
class CameraInfo:
    """What :func:`describe` found; ``error`` is set when the device could not be queried."""

    path: str
    driver: str = ""
    card: str = ""
    bus_info: str = ""
    captures: bool = False
    formats: list[Format] = field(default_factory=list)
    error: str = ""

    def offers(self, fourcc: str, width: int, height: int, min_fps: float) -> bool:
        return any(f.fourcc == fourcc and m.width == width and m.height == height
                   and any(r >= min_fps - 0.01 for r in m.fps)
                   for f in self.formats for m in f.modes)

    def to_json(self) -> dict:
        return {
            "path": self.path, "driver": self.driver, "card": self.card,
            "bus_info": self.bus_info, "captures": self.captures, "error": self.error,
            "formats": [{"fourcc": f.fourcc, "description": f.description,
                         "modes": [{"width": m.width, "height": m.height, "fps": list(m.fps)}
                                   for m in f.modes]} for f in self.formats],
        }


def parse_capability(raw: bytes) -> tuple[str, str, str, bool]:
    """``(driver, card, bus_info, captures video)`` from a filled ``v4l2_capability``; the
    node's own ``device_caps`` count when the driver sets them (a UVC camera's metadata node
    shares the device's capabilities but not its ``device_caps``)."""
    driver, card, bus, _version, caps, device_caps, *_ = CAPABILITY.unpack(raw)
    effective = device_caps if caps & CAP_DEVICE_CAPS else caps
    return _text(driver), _text(card), _text(bus), bool(effective & CAP_VIDEO_CAPTURE)


def parse_fmtdesc(raw: bytes) -> tuple[str, str]:
    """``(fourcc, description)`` from a filled ``v4l2_fmtdesc``."""
    _i, _t, _flags, desc, pixfmt, *_ = FMTDESC.unpack(raw)
    return fourcc_text(pixfmt), _text(desc)


def parse_frmsize(raw: bytes) -> list[tuple[int, int]]:
    """Frame sizes from a filled ``v4l2_frmsizeenum``: the discrete size, or a stepwise
    range's largest and smallest."""
    _i, _fmt, kind, a, b, c, d, e, f, *_ = FRMSIZE.unpack(raw)
    if kind == FRMSIZE_TYPE_DISCRETE:
        return [(a, b)]
    return [(b, e), (a, d)]  # max_w x max_h, min_w x min_h


def parse_frmival(raw: bytes) -> list[float]:
    """Frame rates (fps) from a filled ``v4l2_frmivalenum``: 1 / the interval; a stepwise
    range gives its fastest and slowest rate."""
    _i, _fmt, _w, _h, kind, n1, d1, n2, d2, *_ = FRMIVAL.unpack(raw)
    if kind == FRMIVAL_TYPE_DISCRETE:
        return [d1 / n1] if n1 else []
    return [r for r in ((d1 / n1) if n1 else 0.0, (d2 / n2) if n2 else 0.0) if r > 0]


def _enumerate(fd: int, request: int, pack, parse) -> list:
    """Call an ENUM ioctl with index 0, 1, ... until the driver answers EINVAL."""
    found = []
    for index in range(MAX_ENTRIES):
        buf = bytearray(pack(index))
        try:
            fcntl.ioctl(fd, request, buf)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                break
            raise
        found.append(parse(bytes(buf)))
    return found


def describe(path: str | Path) -> CameraInfo:
    """Query ``path`` (a V4L2 device node). Never raises for a device problem: the reason is
    in :attr:`CameraInfo.error` (not a V4L2 device, permission denied, busy...)."""
    info = CameraInfo(str(path))
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except PermissionError:
        info.error = "permission denied (add the user to group video)"
        return info
    except OSError as exc:
        info.error = f"cannot open: {exc.strerror or exc}"
        return info
    try:
        buf = bytearray(CAPABILITY.size)
        fcntl.ioctl(fd, VIDIOC_QUERYCAP, buf)
        info.driver, info.card, info.bus_info, info.captures = parse_capability(bytes(buf))
        if not info.captures:
            return info
        fmts = _enumerate(fd, VIDIOC_ENUM_FMT,
                          lambda i: FMTDESC.pack(i, BUF_TYPE_VIDEO_CAPTURE, 0, b"", 0, 0, 0, 0, 0),
                          parse_fmtdesc)
        for fourcc, desc in fmts:
            code = fourcc_code(fourcc)
            sizes = [s for found in _enumerate(
                fd, VIDIOC_ENUM_FRAMESIZES, lambda i: FRMSIZE.pack(i, code, 0, *([0] * 8)),
                parse_frmsize) for s in found]
            modes = []
            for w, h in dict.fromkeys(sizes):
                rates = _enumerate(
                    fd, VIDIOC_ENUM_FRAMEINTERVALS,
                    lambda i, w=w, h=h: FRMIVAL.pack(i, code, w, h, 0, *([0] * 8)), parse_frmival)
                fps = sorted({round(r, 2) for found in rates for r in found}, reverse=True)
                modes.append(Mode(w, h, tuple(fps)))
            info.formats.append(Format(fourcc, desc, tuple(modes)))
    except OSError as exc:
        info.error = ("not a V4L2 device" if exc.errno in (errno.ENOTTY, errno.EINVAL)
                      else f"query failed: {exc.strerror or exc}")
    finally:
        os.close(fd)
    return info
