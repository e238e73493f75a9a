"""sensor_msgs/Image -> pixels: every supported encoding, padded rows, and refusals."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from car_runtime.errors import SourceError
from car_runtime.vision.bag import image_to_array

RNG = np.random.default_rng(7)
BGR = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)


def _msg(arr: np.ndarray, encoding: str, pad: int = 0):
    h, w = arr.shape[:2]
    rows = arr.reshape(h, -1)
    step = rows.shape[1] + pad
    data = np.zeros((h, step), np.uint8)
    data[:, : rows.shape[1]] = rows
    return SimpleNamespace(encoding=encoding, height=h, width=w, step=step, data=data.reshape(-1))


@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_give_bgr(pad):
    assert np.array_equal(image_to_array(_msg(BGR, "bgr8", pad)), BGR)
    assert np.array_equal(image_to_array(_msg(BGR[:, :, ::-1].copy(), "rgb8", pad)), BGR)
    bgra = cv2.cvtColor(BGR, cv2.COLOR_BGR2BGRA)
    assert np.array_equal(image_to_array(_msg(bgra, "bgra8", pad)), BGR)
    rgba = cv2.cvtColor(BGR, cv2.COLOR_BGR2RGBA)
    assert np.array_equal(image_to_array(_msg(rgba, "rgba8", pad)), BGR)


def test_mono_and_yuv():
    grey = BGR[:, :, 0].copy()
    out = image_to_array(_msg(grey, "mono8", 3))
    assert out.shape == (6, 8) and np.array_equal(out, grey)
    yuyv = RNG.integers(16, 235, (6, 8, 2), dtype=np.uint8)
    want = cv2.cvtColor(yuyv, cv2.COLOR_YUV2BGR_YUY2)
    assert np.array_equal(image_to_array(_msg(yuyv, "yuyv")), want)


def test_refuses_unknown_encoding_and_short_data():
    with pytest.raises(SourceError, match="bayer_rggb8"):
        image_to_array(_msg(BGR[:, :, 0].copy(), "bayer_rggb8"))
    m = _msg(BGR, "bgr8")
    m.data = m.data[:20]
    with pytest.raises(SourceError, match="inconsistent"):
        image_to_array(m)
