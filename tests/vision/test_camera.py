"""The camera capture thread, run for real on video files written in the test.

There is no camera on the test machine, so the capture class is given a video file (any spec
cv2.VideoCapture opens): MJPG files arrive as JPEG packets exactly like a V4L2 MJPEG camera with
CONVERT_RGB=0, and the thread, slot, stamping, duplicate detection, reconnect and health code
all run unchanged. The device scan is tested as the pure function it is.
"""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import pytest

from car_runtime.errors import SourceError
from car_runtime.timing import now_s
from car_runtime.vision.camera import (
    SCAN_INDICES,
    Camera,
    FpsWatch,
    assign_cameras,
    auto_devices,
    is_jpeg_buffer,
    scan_cameras,
)
from car_runtime.vision.frame import LatestFrameSlot
from car_runtime.vision.sources import content_key

WAIT_S = 10.0
FAST = dict(backoff_s=(0.01, 0.05))  # quick reconnects for tests


def value_of(image) -> int:
    """The value a flat test frame was written with; test values are multiples of 5 (JPEG +-2)."""
    if isinstance(image, bytes):
        image = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    return int(round(float(np.asarray(image).mean()) / 5.0)) * 5


def take(frames, n: int) -> list:
    out = []
    for frame in frames:
        out.append(frame)
        if len(out) == n:
            break
    return out


# -- scan and left/right assignment (pure) ---------------------------------------------------------
@pytest.mark.parametrize(
    ("found", "stereo", "expected"),
    [
        ([4], False, (4,)),
        ([0], False, (0,)),
        ([4, 3], True, (4, 3)),  # higher index = left
        ([3, 4], True, (4, 3)),
        ([2, 0], True, (2, 0)),
        ([4, 3], False, (4,)),  # mono model, two cameras: use the left one
        ([4, 2, 0], True, (4, 2)),
    ],
)
def test_assign_cameras(found, stereo, expected):
    assert assign_cameras(found, stereo=stereo) == expected


def test_assign_cameras_errors():
    with pytest.raises(SourceError, match=r"no camera found \(tried /dev/video4..0\)"):
        assign_cameras([])
    with pytest.raises(SourceError, match="stereo model needs two cameras but only /dev/video3"):
        assign_cameras([3], stereo=True)


def test_scan_probes_in_stock_order():
    probed = []
    answers = {3: True, 1: True}

    def probe(index: int) -> bool:
        probed.append(index)
        return answers.get(index, False)

    assert SCAN_INDICES == (4, 3, 2, 1, 0)
    assert scan_cameras(probe=probe) == [3, 1]
    assert probed == [4, 3, 2, 1, 0]
    assert auto_devices(stereo=True, probe=probe) == (3, 1)
    assert auto_devices(stereo=False, probe=probe) == (3,)
    with pytest.raises(SourceError) as info:
        auto_devices(probe=lambda i: False)
    assert str(info.value) == (
        "no camera found (tried /dev/video4..0); plug in the camera or pass --camera FILE|DIR"
    )


# -- fps collapse (pure: times passed in) ----------------------------------------------------------
def _ticks(watch: FpsWatch, t0: float, seconds: float, fps: float) -> tuple[float, int]:
    collapses, t = 0, t0
    while t < t0 + seconds:
        collapses += watch.update(t)
        t += 1.0 / fps
    return t, collapses


def test_fps_watch_counts_each_collapse_once():
    watch = FpsWatch(30.0)
    t, n = _ticks(watch, 100.0, 5.0, 30.0)
    assert n == 0 and not watch.collapsed and watch.measured_fps == pytest.approx(30, abs=1)
    t, n = _ticks(watch, t, 3.0, 10.0)  # collapses to a third
    assert n == 1 and watch.collapsed and watch.measured_fps == pytest.approx(10, abs=1)
    t, n = _ticks(watch, t, 3.0, 30.0)  # recovers
    assert n == 0 and not watch.collapsed
    t, n = _ticks(watch, t, 3.0, 12.0)
    assert n == 1


def test_fps_watch_warm_up_and_unknown_rate():
    watch = FpsWatch(30.0, window_s=2.0)
    _, n = _ticks(watch, 0.0, 1.9, 5.0)  # slow start inside the first window: not judged
    assert n == 0
    watch.reset(10.0)
    _, n = _ticks(watch, 10.0, 1.5, 5.0)
    assert n == 0
    unknown = FpsWatch(None)
    _, n = _ticks(unknown, 0.0, 5.0, 1.0)
    assert n == 0


def test_is_jpeg_buffer():
    ok, jpg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert ok and is_jpeg_buffer(jpg.reshape(1, -1)) and is_jpeg_buffer(jpg.reshape(-1))
    grey = np.full((48, 64), 0xFF, np.uint8)
    grey[0, 1] = 0xD8  # a decoded image that happens to start like a JPEG is not one
    assert not is_jpeg_buffer(grey)
    assert not is_jpeg_buffer(np.zeros((1, 100), np.uint8))
    assert not is_jpeg_buffer(None)


# -- the capture thread on real files --------------------------------------------------------------
def test_mjpeg_is_delivered_as_the_cameras_own_jpeg_bytes(video):
    values = [10 * i for i in range(10)]
    path = video(values, fps=30.0)
    # The packets as stored in the file: what a V4L2 MJPEG camera hands over.
    raw = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_FORMAT, -1])
    packets = []
    while True:
        ok, buf = raw.read()
        if not ok:
            break
        packets.append(buf.tobytes())
    raw.release()

    with Camera(str(path), **FAST) as cam:
        (s,) = cam.settings
        assert (s.width, s.height, s.fps, s.fourcc, s.encoded) == (64, 48, 30.0, "MJPG", "jpeg")
        assert cam.fps == 30.0 and not cam.stereo
        t_before = now_s()
        frames = take(cam, 9)
    # The opening probe used the first packet; the rest arrive byte for byte, in order.
    assert [f.images for f in frames] == [(p,) for p in packets[1:10]]
    assert [f.seq for f in frames] == list(range(1, 10))
    stamps = [f.t_capture_s for f in frames]
    assert t_before <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= now_s()
    assert all(f.media_t_s == f.t_capture_s for f in frames)


def test_non_mjpeg_falls_back_to_bgr(video):
    values = [0, 60, 120, 180, 240]
    path = video(values, fps=30.0, fourcc="mp4v", name="v.mp4")
    with Camera(str(path), **FAST) as cam:
        assert cam.settings[0].encoded == "bgr"
        frames = take(cam, 5)  # reopened in BGR mode after the probe: from the first frame
    assert all(isinstance(f.images[0], np.ndarray) and f.images[0].shape == (48, 64, 3)
               for f in frames)
    means = [float(f.images[0].mean()) for f in frames]
    assert means == pytest.approx(values, abs=8)  # mp4v is lossier than JPEG


def test_identical_consecutive_frames_are_counted_not_delivered(video):
    # A camera that repeats its buffer is frozen: its repeats must not look like fresh frames.
    values = [0, 10, 20, 20, 20, 20, 20, 30, 40, 40, 50]
    with Camera(str(video(values)), frozen_after_s=0.0, **FAST) as cam:
        frames = take(cam, 5)  # values 10, 20, 30, 40, 50 (0 went to the opening probe)
        h = cam.health()
    assert [value_of(f.images[0]) for f in frames] == [10, 20, 30, 40, 50]
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5]
    keys = [content_key(f.images) for f in frames]
    assert all(a != b for a, b in zip(keys, keys[1:]))
    assert h["duplicates"] == 5 and h["frozen_events"] == 2 and not h["frozen"]


def test_frozen_camera_in_real_time(video, caplog):
    values = [0, 10, 20] + [30] * 25 + [40, 50]  # 25 identical frames = 0.5 s at 50 fps
    with caplog.at_level(logging.WARNING, logger="car_runtime.vision.camera"):
        with Camera(str(video(values, fps=50.0)), frozen_after_s=0.1, stall_s=30,
                    **FAST) as cam:
            seen = take(cam.iter_frames(paced=True), 5)  # paced at the file's 50 fps, like a camera
            h = cam.health()
    assert [value_of(f.images[0]) for f in seen] == [10, 20, 30, 40, 50]
    assert h["duplicates"] == 24 and h["frozen_events"] == 1 and not h["frozen"]
    assert any("frozen, the same image" in r.getMessage() for r in caplog.records)
    # The frame after the freeze is stamped when it really arrived, >= 24 periods later.
    assert seen[3].t_capture_s - seen[2].t_capture_s >= 24 / 50.0 - 1e-3


def test_read_failures_trigger_a_reconnect_and_seq_continues(video):
    # End of file behaves like an unplugged camera: reads fail, the device is reopened.
    values = [10 * i for i in range(6)]
    with Camera(str(video(values)), max_read_failures=3, **FAST) as cam:
        frames = take(cam, 5 + 6 + 6)
        h = cam.health()
    assert [f.seq for f in frames] == list(range(1, 18))
    # First pass from frame 1 (the probe took frame 0), then whole passes after each reopen.
    assert [value_of(f.images[0]) for f in frames] == values[1:] + values + values
    assert h["reconnects"] == 2 and h["read_failures"] == 6
    assert h["frames"] == 17


def test_camera_lost_ends_the_thread_with_an_error(video):
    path = video([1, 2, 3, 4])
    slot = LatestFrameSlot()
    cam = Camera(str(path), max_read_failures=2, lost_after_s=0.3, **FAST)
    path.unlink()  # the open capture still reads the file; reopening fails: the device is gone
    cam.start(slot)
    seen, last = [], 0
    while (frame := slot.wait_newer(last, timeout_s=WAIT_S)) is not None:
        seen.append(frame.seq)
        last = frame.seq
    cam.close()
    assert seen[-1] == 3 and slot.closed and cam.ended
    assert isinstance(cam.error, SourceError)
    assert str(cam.error).startswith("camera lost: camera:") and "ls /dev/video*" in str(cam.error)
    assert cam.health()["reconnects"] == 0 and cam.health()["read_failures"] >= 2


def test_stereo_pair_is_left_then_right(video):
    left = video([10, 20, 30, 40], name="left.avi")
    right = video([110, 120, 130, 140], name="right.avi")
    with Camera([str(left), str(right)], **FAST) as cam:
        assert cam.stereo and cam.description == f"camera:{left},{right}"
        frames = take(cam, 3)
    assert [tuple(value_of(i) for i in f.images) for f in frames] == [
        (20, 120), (30, 130), (40, 140)
    ]


def test_stereo_pair_with_one_frozen_camera_is_not_delivered(video):
    left = video([10, 20, 30, 40, 50], name="left.avi")
    right = video([110, 120, 120, 140, 150], name="right.avi")  # the right one repeats once
    with Camera([str(left), str(right)], frozen_after_s=0.0, **FAST) as cam:
        frames = take(cam, 3)
        h = cam.health()
    assert [tuple(value_of(i) for i in f.images) for f in frames] == [
        (20, 120), (40, 140), (50, 150)
    ]
    assert [f.seq for f in frames] == [1, 2, 3]
    assert h["duplicates"] == 1 and h["frozen_events"] == 1


def test_newest_wins_with_a_slow_consumer(video):
    slot = LatestFrameSlot()
    with Camera(str(video(list(range(0, 250, 5)), fps=100.0)), **FAST) as cam:
        cam.start(slot)
        seen, last = [], 0
        while len(seen) < 5:
            frame = slot.wait_newer(last, timeout_s=WAIT_S)
            assert frame is not None
            seen.append(frame)
            last = frame.seq
            time.sleep(0.05)  # much slower than the camera
        assert cam.running
        h = cam.health()
    assert not cam.running
    seqs = [f.seq for f in seen]
    assert seqs == sorted(set(seqs))
    assert seqs[-1] - seqs[0] > len(seqs) - 1 and slot.overwritten > 0  # skipped, not queued
    assert h["fps"] > 0 and h["fps_nominal"] == 100.0


def test_missing_device_names_the_fix(tmp_path):
    with pytest.raises(SourceError, match=r"cannot open camera .*nothing\.avi; check the path"):
        Camera(str(tmp_path / "nothing.avi"))
    with pytest.raises(SourceError, match="one device or a stereo pair"):
        Camera([0, 1, 2])


# -- capture time: the driver's buffer timestamp when it is on our clock -----------------------
def test_capture_clock_prefers_the_drivers_monotonic_timestamp():
    from car_runtime.vision.camera import CaptureClock

    clock = CaptureClock(use_driver=True)
    t, changed = clock.stamp(99_990.0, 100.0)  # stamped 10 ms before the grab returned
    assert t == pytest.approx(99.99) and changed and clock.source == "driver"
    # After a stall, a frame that waited 2.5 s in the driver keeps its true (old) time.
    t, changed = clock.stamp(102_500.0, 105.0)
    assert t == pytest.approx(102.5) and not changed
    assert clock.driver_frames == 2 and "CLOCK_MONOTONIC" in clock.describe()


@pytest.mark.parametrize("driver_ms, why", [
    (0.0, "no buffer timestamp"),  # OpenCV before the first frame / drivers without stamps
    (1.7e12, "not on CLOCK_MONOTONIC"),  # a CLOCK_REALTIME stamp: in the "future"
    (95_000.0, "not on CLOCK_MONOTONIC"),  # 5 s old before the clock was ever verified
    (float("nan"), "no buffer timestamp"),
])
def test_capture_clock_falls_back_to_the_grab_time(driver_ms, why):
    from car_runtime.vision.camera import CaptureClock

    clock = CaptureClock(use_driver=True)
    t, changed = clock.stamp(driver_ms, 100.0)
    assert t == 100.0 and changed and clock.source == "grab"
    assert why in clock.describe()


def test_file_camera_uses_the_grab_time_and_says_so(video, caplog):
    with caplog.at_level(logging.INFO, logger="car_runtime.vision.camera"):
        with Camera(str(video([0, 10, 20, 30])), **FAST) as cam:
            take(cam, 2)
            h = cam.health()
    assert h["capture_clock"] == "grab" and h["grab_stamped"] >= 2 and h["driver_stamped"] == 0
    assert h["settings"][0]["buffers"] == 0  # not a V4L2 device: no driver buffers asked for
    assert any("capture time = the grab time (not a V4L2 device)" in r.getMessage()
               for r in caplog.records)
