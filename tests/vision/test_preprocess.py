"""Frame -> model input, on real footage: ``stock`` is bit-exact with the car's OpenCV calls,
``training`` with an independent numpy version of what the simulator fed the network, ``fast``
with libjpeg's reduced-size grey decode."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from car_runtime.errors import ConfigError, SourceError
from car_runtime.vision.preprocess import Preprocessor, jpeg_size

H, W = 120, 160


def load_bgr(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img


def jpeg_bytes(img: np.ndarray, quality: int = 90, **flags: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    for key, value in flags.items():
        params += [getattr(cv2, key), value]
    ok, buf = cv2.imencode(".jpg", img, params)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def stills_640(footage_dir: Path) -> dict[str, bytes]:
    """Real 640x480 frames as JPEG bytes: the simulator stills as stored, the real-car PNGs
    encoded once at q90 (what an MJPEG camera sends)."""
    out = {p.name: p.read_bytes() for p in sorted((footage_dir / "sim-demo-stills-640x480").glob("*.jpg"))}
    for p in sorted((footage_dir / "car-foam-mat-track-640x480").glob("*.png")):
        out[p.stem + ".q90.jpg"] = jpeg_bytes(load_bgr(p))
    assert len(out) == 9
    return out


@pytest.fixture(scope="module")
def seq_160(footage_seq_dir: Path) -> dict[str, bytes]:
    """Every 7th frame of the real 160x120 car sequence (JPEG bytes)."""
    files = sorted(footage_seq_dir.glob("*.jpg"))
    assert len(files) == 100
    return {p.name: p.read_bytes() for p in files[::7]}


def decode(data: bytes, flag: int = cv2.IMREAD_COLOR) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    assert img is not None
    return img


def run(mode: str, *images, channels: int = 1) -> list[np.ndarray]:
    """The model input the Preprocessor writes, per channel (float32 views of one buffer)."""
    buf = np.full((1, H, W, channels), -1.0, np.float32)
    views = [buf[0, :, :, c] for c in range(channels)]
    Preprocessor(mode, H, W, channels)(list(images), views)
    return views


# ---- independent references --------------------------------------------------------------

def stock_reference(bgr: np.ndarray) -> np.ndarray:
    """aws-deepracer-inference-pkg: cv::resize (INTER_LINEAR) then cvtColor(BGR2GRAY)."""
    return cv2.cvtColor(cv2.resize(bgr, (W, H), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2GRAY)


def area_reference(img: np.ndarray) -> np.ndarray:
    """Area (box) downscale by an integer factor, rounded half-to-even, in numpy."""
    k = img.shape[0] // H
    assert img.shape[0] == k * H and img.shape[1] == k * W
    if k == 1:
        return img
    blocks = img.reshape(H, k, W, k, -1).astype(np.int64).sum(axis=(1, 3))
    return np.rint(blocks / (k * k)).astype(np.uint8).reshape((H, W) + img.shape[2:])


def training_reference(bgr: np.ndarray) -> np.ndarray:
    """rl_coach ObservationRGBToYFilter + ObservationToUInt8Filter(0, 255), on the area-resized
    image: float64 ``0.2989 r + 0.5870 g + 0.1140 b``, scaled /255*255, truncated by astype."""
    small = area_reference(bgr)
    r, g, b = small[:, :, 2], small[:, :, 1], small[:, :, 0]
    y = 0.2989 * r + 0.5870 * g + 0.1140 * b
    y = (y - 0) / (255 - 0)
    y *= 255
    return y.astype("uint8")


# ---- stock ---------------------------------------------------------------------------------

def test_stock_bgr_arrays_are_bit_exact(stills_640, seq_160, footage_dir):
    images = [decode(b) for b in list(stills_640.values()) + list(seq_160.values())]
    images += [load_bgr(p) for p in sorted((footage_dir / "car-foam-mat-track-640x480").glob("*.png"))]
    for img in images:
        (view,) = run("stock", img)
        np.testing.assert_array_equal(view, stock_reference(img).astype(np.float32))


def test_stock_jpeg_bytes_are_bit_exact(stills_640, seq_160):
    for name, data in {**stills_640, **seq_160}.items():
        (view,) = run("stock", data)
        np.testing.assert_array_equal(view, stock_reference(decode(data)), err_msg=name)


def test_stock_values_are_raw_0_255(stills_640):
    (view,) = run("stock", stills_640["dr-demo-1.jpg"])
    assert view.dtype == np.float32
    assert view.max() > 200 and view.min() < 60  # not normalised: the graph divides by 255
    assert np.array_equal(view, np.round(view))


def test_stock_grey_input_is_resized_linearly():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (480, 640), dtype=np.uint8)
    (view,) = run("stock", grey)
    np.testing.assert_array_equal(view, cv2.resize(grey, (W, H), interpolation=cv2.INTER_LINEAR))


# ---- training ------------------------------------------------------------------------------

def test_training_matches_numpy_reference(stills_640, seq_160):
    for name, data in {**stills_640, **seq_160}.items():
        bgr = decode(data)
        (view,) = run("training", bgr)
        np.testing.assert_array_equal(view, training_reference(bgr), err_msg=name)
        (view_bytes,) = run("training", data)
        np.testing.assert_array_equal(view_bytes, view, err_msg=name)


def test_training_luma_truncates_on_every_colour():
    """A spread of the 2^24 colours, as model-size (no resize) images: the float64 luma and the
    truncation agree with rl_coach on every pixel (float32 arithmetic would not)."""
    v = np.arange(256, dtype=np.uint8)
    b, g, r = np.meshgrid(v, v, v, indexing="ij")
    colours = np.stack([b.ravel(), g.ravel(), r.ravel()], axis=1)  # BGR
    pre = Preprocessor("training", H, W, 1)
    n = colours.shape[0] // (H * W)  # 873 tiles of 160x120 colours
    tiles = colours[: n * H * W].reshape(n, H, W, 3)
    view = np.empty((H, W), np.float32)
    for tile in tiles[::7]:  # 125 tiles x 19200 colours, spread over the cube
        pre.prepare([tile], [view])
        np.testing.assert_array_equal(view, training_reference(tile))


# ---- fast ----------------------------------------------------------------------------------

def test_fast_640_jpeg_is_reduced_grey_decode(stills_640):
    for name, data in stills_640.items():
        (view,) = run("fast", data)
        np.testing.assert_array_equal(view, decode(data, cv2.IMREAD_REDUCED_GRAYSCALE_4), err_msg=name)


def test_fast_160_jpeg_is_grey_decode(seq_160):
    for name, data in seq_160.items():
        (view,) = run("fast", data)
        np.testing.assert_array_equal(view, decode(data, cv2.IMREAD_GRAYSCALE), err_msg=name)


def test_fast_320_jpeg_uses_reduced_2(stills_640):
    small = cv2.resize(decode(stills_640["dr-demo-2.jpg"]), (320, 240), interpolation=cv2.INTER_AREA)
    data = jpeg_bytes(small)
    (view,) = run("fast", data)
    np.testing.assert_array_equal(view, decode(data, cv2.IMREAD_REDUCED_GRAYSCALE_2))


def test_fast_falls_back_for_other_sizes_and_arrays(stills_640, footage_dir):
    big = cv2.resize(decode(stills_640["dr-demo-3.jpg"]), (800, 600), interpolation=cv2.INTER_AREA)
    data = jpeg_bytes(big)  # 5x: no DCT scaling -> grey then INTER_AREA
    (view,) = run("fast", data)
    grey = cv2.cvtColor(decode(data), cv2.COLOR_BGR2GRAY)
    expected = cv2.resize(grey, (W, H), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(view, expected)
    bgr = load_bgr(next(iter(sorted((footage_dir / "car-foam-mat-track-640x480").glob("*.png")))))
    (view,) = run("fast", bgr)  # a BGR array (non-MJPEG camera)
    np.testing.assert_array_equal(
        view, cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (W, H), interpolation=cv2.INTER_AREA)
    )


def test_fast_is_close_to_training_not_identical(stills_640):
    diffs = []
    for data in stills_640.values():
        (fast,) = run("fast", data)
        (train,) = run("training", data)
        diffs.append(np.abs(fast - train))
    d = np.concatenate([x.ravel() for x in diffs])
    assert 0 < d.mean() < 3  # DCT-domain scaling ~ area averaging; BT.601 vs truncating luma


# ---- stereo, RGBA, errors ----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["stock", "training", "fast"])
def test_stereo_left_is_channel_0(stills_640, mode):
    left, right = stills_640["dr-demo-1.jpg"], stills_640["dr-demo-3.jpg"]
    v0, v1 = run(mode, left, right, channels=2)
    (only_left,) = run(mode, left)
    (only_right,) = run(mode, right)
    np.testing.assert_array_equal(v0, only_left)
    np.testing.assert_array_equal(v1, only_right)
    assert not np.array_equal(v0, v1)
    # extra images beyond the model's channels are ignored
    w0, w1 = run(mode, left, right, stills_640["dr-demo-2.jpg"], channels=2)
    np.testing.assert_array_equal(w0, v0)
    np.testing.assert_array_equal(w1, v1)


@pytest.mark.parametrize("mode", ["stock", "training", "fast"])
def test_rgba_png_bytes_and_bgra_arrays(footage_dir, mode):
    for png in sorted((footage_dir / "sim-demo-stills-640x480" / "png-rgba").glob("*.png")):
        bgra = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert bgra.shape == (480, 640, 4)
        bgr = cv2.cvtColor(bgra, cv2.COLOR_BGRA2BGR)
        (from_bytes,) = run(mode, png.read_bytes())
        (from_bgra,) = run(mode, bgra)
        (from_bgr,) = run(mode, bgr)
        np.testing.assert_array_equal(from_bytes, from_bgr)
        np.testing.assert_array_equal(from_bgra, from_bgr)
        if mode == "stock":
            np.testing.assert_array_equal(from_bgr, stock_reference(bgr))


def test_errors():
    with pytest.raises(ConfigError, match="preprocess mode 'nice'"):
        Preprocessor("nice", H, W, 1)
    pre = Preprocessor("stock", H, W, 2)
    with pytest.raises(SourceError, match="needs 2 camera image"):
        pre.decode([b"x"])
    with pytest.raises(SourceError, match="could not be decoded"):
        Preprocessor("stock", H, W, 1).decode([b"\xff\xd8\xff\xe0 not really a jpeg"])
    with pytest.raises(SourceError, match="could not be decoded"):
        Preprocessor("fast", H, W, 1).decode([b""])


# ---- jpeg_size -----------------------------------------------------------------------------

def test_jpeg_size_on_real_jpegs(stills_640, seq_160):
    for name, data in {**stills_640, **seq_160}.items():
        h, w = decode(data).shape[:2]
        assert jpeg_size(data) == (w, h), name


def test_jpeg_size_variants(stills_640, footage_dir):
    img = decode(stills_640["dr-demo-1.jpg"])
    assert jpeg_size(jpeg_bytes(img, IMWRITE_JPEG_PROGRESSIVE=1)) == (640, 480)  # SOF2
    assert jpeg_size(jpeg_bytes(img[:, :321])) == (321, 480)
    grey = jpeg_bytes(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    assert jpeg_size(grey) == (640, 480)
    png = next(iter((footage_dir / "sim-demo-stills-640x480" / "png-rgba").glob("*.png"))).read_bytes()
    assert jpeg_size(png) is None
    data = stills_640["dr-demo-1.jpg"]
    assert jpeg_size(b"") is None and jpeg_size(b"\xff\xd8") is None
    assert jpeg_size(data[:20]) is None  # cut inside the header segments
    assert jpeg_size(b"\xff\xd8\x00\x00garbage") is None
