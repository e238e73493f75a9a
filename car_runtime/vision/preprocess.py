"""Camera image -> model input, exactly like the stock car by default.

Modes (``--preprocess``):

- ``stock`` (default): decode to BGR, ``cv2.resize`` to the input size with INTER_LINEAR, then
  ``cvtColor(BGR2GRAY)``; raw 0..255 as float32 (the graph divides by 255 itself). This is what
  the stock camera + inference nodes do.
- ``training``: INTER_AREA resize of the colour image, then truncating luma
  ``Y = 0.2989 R + 0.5870 G + 0.1140 B`` -- how the simulator fed the network during training.
- ``fast``: for JPEG frames whose size is 1x/2x/4x/8x the input, a reduced-size grey JPEG decode
  (libjpeg DCT scaling) straight to the input size; other frames fall back to grey + INTER_AREA.
  Much cheaper on the Atom; close to ``training``.

Stereo: image 0 (left camera) -> channel 0, image 1 (right) -> channel 1.
Work is split in two timed steps: :meth:`Preprocessor.decode` (JPEG bytes -> pixels) and
:meth:`Preprocessor.prepare` (pixels -> the model's input buffer).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from car_runtime.errors import ConfigError, SourceError
from car_runtime.vision.frame import Image

MODES = ("stock", "training", "fast")
_REDUCED_GREY = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
                 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
#: rl_coach ObservationRGBToYFilter weights (R, G, B); evaluated in float64, R first, as there.
_LUMA_R, _LUMA_G, _LUMA_B = 0.2989, 0.5870, 0.1140


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF marker, or None if ``data`` is not a JPEG."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg_len = (data[i + 2] << 8) | data[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            h = (data[i + 5] << 8) | data[i + 6]
            w = (data[i + 7] << 8) | data[i + 8]
            return w, h
        i += 2 + seg_len
    return None


class Preprocessor:
    """Fill a :class:`~car_runtime.model.policy.Policy` input from a frame's images."""

    def __init__(self, mode: str, height: int, width: int, channels: int) -> None:
        if mode not in MODES:
            raise ConfigError(f"preprocess mode {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self.height, self.width, self.channels = height, width, channels
        self._small = np.empty((height, width, 3), dtype=np.uint8)  # stock-mode scratch
        self._grey = np.empty((height, width), dtype=np.uint8)
        self._luma = np.empty((height, width), dtype=np.float64)  # training-mode scratch
        self._term = np.empty((height, width), dtype=np.float64)

    # -- step 1: decode --------------------------------------------------------------------------
    def decode(self, images: Sequence[Image]) -> list[np.ndarray]:
        """Decode JPEG/PNG bytes to pixel arrays (BGR, or grey in ``fast`` mode)."""
        if len(images) < self.channels:
            raise SourceError(
                f"the model needs {self.channels} camera image(s) per frame but the source gave "
                f"{len(images)}; connect both cameras or use a single-camera model"
            )
        return [self._decode_one(img) for img in images[: self.channels]]

    def _decode_one(self, img: Image) -> np.ndarray:
        if isinstance(img, np.ndarray):
            return img
        buf = np.frombuffer(img, dtype=np.uint8)
        flag = cv2.IMREAD_COLOR
        if self.mode == "fast":
            size = jpeg_size(img)
            if size is not None:
                w, h = size
                for k, grey_flag in _REDUCED_GREY.items():
                    if w == self.width * k and h == self.height * k:
                        flag = grey_flag
                        break
        try:
            out = cv2.imdecode(buf, flag) if buf.size else None  # cv2 asserts on empty input
        except cv2.error:
            out = None
        if out is None:
            raise SourceError("a frame could not be decoded (not a JPEG/PNG image); check the source")
        return out

    # -- step 2: prepare -------------------------------------------------------------------------
    def prepare(self, pixels: Sequence[np.ndarray], views: Sequence[np.ndarray]) -> None:
        """Write each image, as float32 0..255 grey at the model size, into ``views[c]``."""
        for c in range(self.channels):
            np.copyto(views[c], self.grey(pixels[c]), casting="unsafe")

    def grey(self, img: np.ndarray) -> np.ndarray:
        """One image -> (H, W) grey at the model size (uint8; for ``training`` a float64 scratch
        view of whole numbers, overwritten by the next call)."""
        size = (self.width, self.height)
        same = img.shape[0] == self.height and img.shape[1] == self.width
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if self.mode == "stock":  # into preallocated buffers: no allocation per frame
            if img.ndim == 2:
                return img if same else cv2.resize(img, size, dst=self._grey,
                                                   interpolation=cv2.INTER_LINEAR)
            small = img if same else cv2.resize(img, size, dst=self._small,
                                                interpolation=cv2.INTER_LINEAR)
            return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY, dst=self._grey)
        if self.mode == "training":
            small = img if same else cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            if small.ndim == 2:
                return small
            return self._training_luma(small)
        # fast
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return img if same else cv2.resize(img, size, interpolation=cv2.INTER_AREA)

    def _training_luma(self, bgr: np.ndarray) -> np.ndarray:
        """rl_coach's ``0.2989 r + 0.5870 g + 0.1140 b`` (float64, this order), then
        ``ObservationToUInt8Filter(0, 255)``: ``y / 255 * 255`` truncated -- bit-exact."""
        y, t = self._luma, self._term
        np.multiply(bgr[:, :, 2], _LUMA_R, out=y)
        np.multiply(bgr[:, :, 1], _LUMA_G, out=t)
        y += t
        np.multiply(bgr[:, :, 0], _LUMA_B, out=t)
        y += t
        y /= 255.0
        y *= 255.0
        return np.trunc(y, out=y)

    def __call__(self, images: Sequence[Image], views: Sequence[np.ndarray]) -> None:
        self.prepare(self.decode(images), views)
