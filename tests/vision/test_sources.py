"""File frame sources on real files: video written with cv2, the bundled real footage folder."""

from __future__ import annotations

import glob
import sys
import time

import cv2
import numpy as np
import pytest

from car_runtime import data
from car_runtime.errors import SourceError
from car_runtime.timing import now_s
from car_runtime.vision.frame import LatestFrameSlot
from car_runtime.vision.sources import (
    DEFAULT_FOLDER_FPS,
    ImageFolderSource,
    VideoFileSource,
    content_key,
    open_source,
)

FOOTAGE = data.FOOTAGE
WAIT_S = 10.0  # generous: only bounds a hang, never asserts speed


def value_of(image) -> int:
    if isinstance(image, bytes):
        image = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    return int(round(float(np.asarray(image).mean())))


def drain(slot: LatestFrameSlot, delay_s: float = 0.0) -> list:
    """Take frames from the slot until it closes; optionally a slow consumer."""
    seen, last = [], 0
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        frame = slot.wait_newer(last, timeout_s=WAIT_S)
        if frame is None:
            break
        seen.append(frame)
        last = frame.seq
        if delay_s:
            time.sleep(delay_s)
    return seen


# -- video files -----------------------------------------------------------------------------------
def test_video_iterates_every_frame_in_order(video):
    values = [10 * i for i in range(12)]
    with VideoFileSource(video(values, fps=25.0)) as src:
        assert src.fps == 25.0 and src.frame_count == 12
        t_before = now_s()
        frames = list(src)
        assert [f.seq for f in frames] == list(range(1, 13))
        assert [abs(value_of(f.images[0]) - v) <= 2 for f, v in zip(frames, values)] == [True] * 12
        assert all(isinstance(f.images[0], np.ndarray) and f.images[0].shape == (48, 64, 3)
                   for f in frames)
        assert [f.media_t_s for f in frames] == pytest.approx([k / 25.0 for k in range(12)])
        stamps = [f.t_capture_s for f in frames]
        assert t_before <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= now_s()
        # A second pass starts again from the first frame.
        again = list(src)
        assert [f.seq for f in again] == list(range(1, 13))
        assert abs(value_of(again[0].images[0]) - values[0]) <= 2
        assert src.health()["frames"] == 24


def test_video_fps_override_and_duplicates_counted_but_delivered(video):
    with VideoFileSource(video([0, 50, 50, 50, 100], fps=30.0), fps=10.0) as src:
        frames = list(src)
    assert src.fps == 10.0
    assert len(frames) == 5  # a file may show a still scene: nothing is dropped
    assert src.duplicates == 2
    assert frames[-1].media_t_s == pytest.approx(0.4)


@pytest.mark.parametrize("content", [b"", b"this is not a video at all" * 100])
def test_unreadable_video_is_a_one_line_error(tmp_path, content):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(content)
    with pytest.raises(SourceError, match="cannot read video .*clip.mp4.*ffmpeg") as info:
        open_source(str(bad))
    assert "\n" not in str(info.value)


# -- image folders ---------------------------------------------------------------------------------
def test_folder_gives_raw_bytes_in_name_order():
    files = sorted(FOOTAGE.glob("*.jpg"))
    assert len(files) == 100
    with open_source(str(FOOTAGE)) as src:
        assert isinstance(src, ImageFolderSource)
        assert src.fps == DEFAULT_FOLDER_FPS == 30.0 and src.frame_count == 100
        frames = list(src)
    assert [f.seq for f in frames] == list(range(1, 101))
    assert [f.meta["file"] for f in frames] == [p.name for p in files]
    assert all(f.images == (p.read_bytes(),) for f, p in zip(frames, files))
    assert frames[30].media_t_s == pytest.approx(1.0)


def test_folder_natural_sort_and_filtering(tmp_path):
    for name in ("10.jpg", "2.JPG", "1.png", "frame_003.jpeg"):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "sub.jpg").mkdir()  # a folder with an image-like name is not an image
    with ImageFolderSource(tmp_path, fps=5) as src:
        names = [f.meta["file"] for f in src]
    assert names == ["1.png", "2.JPG", "10.jpg", "frame_003.jpeg"]


def test_stereo_folder_pairs_left_and_right(tmp_path):
    for side in ("left", "right"):
        (tmp_path / side).mkdir()
        for i in range(3):
            (tmp_path / side / f"{i}.jpg").write_bytes(f"{side}{i}".encode())
    (tmp_path / "right" / "3.jpg").write_bytes(b"extra")  # unmatched: dropped with a warning
    with open_source(str(tmp_path), stereo=True) as src:
        frames = list(src)
    assert [f.images for f in frames] == [(b"left0", b"right0"), (b"left1", b"right1"),
                                          (b"left2", b"right2")]
    with pytest.raises(SourceError, match="left/ and right/"):
        open_source(str(tmp_path / "left"), stereo=True)


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match=r"no images \(\*\.jpg, \*\.jpeg, \*\.png\) in"):
        open_source(str(tmp_path))
    with pytest.raises(SourceError, match="no such file, folder or device"):
        open_source(str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="fps must be > 0"):
        ImageFolderSource(FOOTAGE, fps=0)


# -- background thread: pacing, newest wins, end, stop ---------------------------------------------
def test_paced_folder_releases_frame_k_at_t0_plus_k_over_fps(tmp_path):
    for i in range(15):
        (tmp_path / f"{i:03d}.jpg").write_bytes(bytes([i]))
    fps = 50.0
    with ImageFolderSource(tmp_path, fps=fps) as src:
        frames = list(src.iter_frames(paced=True))  # the pacing the thread uses, in this thread
    assert [f.seq for f in frames] == list(range(1, 16))
    t0 = frames[0].t_capture_s
    # Never released early (the schedule is a lower bound; lateness is counted, not asserted).
    for f in frames:
        assert f.t_capture_s >= t0 + (f.seq - 1) / fps - 1e-3
        assert f.media_t_s == pytest.approx((f.seq - 1) / fps)


def test_paced_thread_releases_everything_then_closes_the_slot(tmp_path):
    for i in range(15):
        (tmp_path / f"{i:03d}.jpg").write_bytes(bytes([i]))
    slot = LatestFrameSlot()
    with ImageFolderSource(tmp_path, fps=50.0) as src:
        src.start(slot)
        frames = drain(slot)
        assert src.ended and src.error is None and slot.closed and not src.running
    assert src.frames == 15  # all released; a busy machine may make the consumer skip some
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs)) and seqs[-1] == 15


def test_slow_consumer_gets_the_newest_frame_not_a_backlog(tmp_path):
    for i in range(40):
        (tmp_path / f"{i:03d}.jpg").write_bytes(bytes([i]))
    slot = LatestFrameSlot()
    with ImageFolderSource(tmp_path, fps=200.0) as src:
        src.start(slot)
        frames = drain(slot, delay_s=0.03)
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs))
    assert seqs[-1] == 40  # the last frame survives the end of input
    assert len(seqs) < 40 and slot.overwritten > 0  # skipped, never queued


def test_unpaced_start_and_video_through_the_slot(video):
    slot = LatestFrameSlot()
    with open_source(str(video(list(range(0, 200, 10)), fps=1.0)), paced=False) as src:
        assert isinstance(src, VideoFileSource)
        src.start(slot)  # at 1 fps this would take 20 s if it were paced
        frames = drain(slot)
        assert src.ended and src.error is None
    assert frames[-1].seq == 20
    assert abs(value_of(frames[-1].images[0]) - 190) <= 2


def test_stop_ends_the_thread_promptly_and_closes_the_slot(tmp_path):
    for i in range(100):
        (tmp_path / f"{i:03d}.jpg").write_bytes(bytes([i]))
    slot = LatestFrameSlot()
    src = ImageFolderSource(tmp_path, fps=2.0)  # 50 s of input
    src.start(slot)
    assert slot.wait_newer(0, timeout_s=WAIT_S).seq == 1
    src.stop()
    assert not src.running and slot.closed and src.ended and src.error is None
    with pytest.raises(RuntimeError, match="closed"):
        src.close()
        src.start(slot)


def test_read_error_in_the_thread_is_recorded_and_closes_the_slot(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.jpg").write_bytes(b"x")
    src = ImageFolderSource(tmp_path, fps=100.0)
    (tmp_path / "3.jpg").unlink()  # disappears after listing
    slot = LatestFrameSlot()
    src.start(slot)
    frames = drain(slot)
    src.close()
    assert [f.seq for f in frames][-1] <= 3
    assert isinstance(src.error, SourceError) and "cannot read" in str(src.error)
    assert src.health()["error"] and slot.closed


# -- open_source dispatch --------------------------------------------------------------------------
def test_rosbag_folder_without_the_bag_module(tmp_path, monkeypatch):
    (tmp_path / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    monkeypatch.setitem(sys.modules, "car_runtime.vision.bag", None)  # as if bag.py were absent
    with pytest.raises(SourceError, match="rosbag input needs"):
        open_source(str(tmp_path))


def test_stereo_video_is_refused(video):
    with pytest.raises(SourceError, match="stereo model needs two images"):
        open_source(str(video([1, 2, 3])), stereo=True)


@pytest.mark.skipif(bool(glob.glob("/dev/video*")), reason="a real camera is attached")
def test_auto_without_a_camera_names_the_fix():
    for spec in (None, "", "auto"):
        with pytest.raises(SourceError) as info:
            open_source(spec)
        assert str(info.value) == (
            "no camera found (tried /dev/video4..0); plug in the camera or pass --camera FILE|DIR"
        )
    with pytest.raises(SourceError, match=r"cannot open camera /dev/video7"):
        open_source("7")
    with pytest.raises(SourceError, match="stereo model needs two cameras"):
        open_source("/dev/video4", stereo=True)


def test_content_key():
    a = np.zeros((48, 64, 3), np.uint8)
    b = a.copy()
    b[47, 0, 0] = 1  # the last row is among the sampled rows
    assert content_key((a,)) == content_key((a.copy(),))
    assert content_key((a,)) != content_key((b,))
    assert content_key((b"jpeg-1",)) == content_key((b"jpeg-1",))
    assert content_key((b"jpeg-1",)) != content_key((b"jpeg-2",))
    assert content_key((b"l", b"r")) != content_key((b"l", b"x"))


def test_health_is_reported(video):
    with VideoFileSource(video([0, 1, 2])) as src:
        list(src)
        h = src.health()
    assert h["frames"] == 3 and h["fps_nominal"] == 30.0 and h["source"].startswith("video:")
    assert {"fps", "read_failures", "duplicates", "frozen", "reconnects", "late", "ended",
            "error"} <= set(h)
