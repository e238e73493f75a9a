"""Each input kind through the replay CLI: a video written here with cv2, an image folder, and
rosbag2 folders written here with rosbags (Image, CompressedImage, sqlite3 and mcap). Every log
line must equal the independent stock computation on the very pixels the input holds."""

from __future__ import annotations

import shutil

import cv2
import pytest
from helpers import read_video
from replay_expect import (
    assert_log_equals,
    expected_records,
    read_actions,
    read_log,
    run_cli,
    write_bag,
)

N = 12  # frames per input: enough to see several decisions, cheap to run


@pytest.mark.parametrize("suffix,fourcc", [(".mp4", "mp4v"), (".avi", "MJPG")])
def test_video_file(tmp_path, capsys, demo_model, demo_policy, seq_frames, suffix, fourcc):
    """320x240 video at 20 fps (so the stock resize is exercised). The codec is lossy: the
    expected values come from decoding that same file, not from the source JPEGs."""
    video = tmp_path / f"drive{suffix}"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*fourcc), 20, (320, 240))
    for p in seq_frames[30 : 30 + N]:
        w.write(cv2.resize(cv2.imread(str(p)), (320, 240), interpolation=cv2.INTER_CUBIC))
    w.release()
    decoded, _ = read_video(video)
    assert len(decoded) == N and decoded[0].shape == (240, 320, 3)

    log = tmp_path / "r.jsonl"
    code, out, _ = run_cli(["replay", "--model", str(demo_model), str(video), "--log", str(log)],
                           capsys)
    assert code == 0
    assert "at 20 fps" in out
    want = expected_records(demo_policy, read_actions(demo_model), decoded,
                            [k / 20 for k in range(N)])
    assert_log_equals(read_log(log), want)


def test_image_folder_sorted_by_number(tmp_path, capsys, demo_model, demo_policy, seq_frames):
    """Names sort with numbers as numbers (2.png before 10.png); PNG and JPEG mix."""
    folder = tmp_path / "frames"
    folder.mkdir()
    picked = seq_frames[50 : 50 + N]
    for k, p in enumerate(picked):
        if k % 2:
            cv2.imwrite(str(folder / f"{k}.png"), cv2.imread(str(p)))
        else:
            shutil.copy(p, folder / f"{k}.jpg")
    (folder / "notes.txt").write_text("not an image")
    log = tmp_path / "r.jsonl"
    code, _, _ = run_cli(["replay", "--model", str(demo_model), str(folder), "--fps", "30",
                          "--log", str(log)], capsys)
    assert code == 0
    frames = [cv2.imread(str(p)) for p in picked]  # PNG is lossless: same pixels as the JPEG
    want = expected_records(demo_policy, read_actions(demo_model), frames,
                            [k / 30 for k in range(N)])
    assert_log_equals(read_log(log), want)


def _stamps(n: int, start_ns: int = 1_700_000_000_000_000_000, period_ns: int = 66_666_667):
    return [start_ns + k * period_ns for k in range(n)]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_rosbag_image_and_compressed(tmp_path, capsys, demo_model, demo_policy, seq_frames,
                                     ros_msgs, storage):
    """Stock topic /camera_pkg/display_mjpeg (sensor_msgs/Image bgr8, empty header) is the
    default; --topic picks the CompressedImage topic. t comes from the bag timestamps."""
    picked = seq_frames[:N]
    bgr = [cv2.imread(str(p)) for p in picked]
    stamps = _stamps(N)
    cstamps = [s + 5_000_000 for s in stamps]  # the compressed topic is 5 ms later
    bag = write_bag(tmp_path / "bag", {
        "/camera_pkg/display_mjpeg": ("sensor_msgs/msg/Image",
                                      [(s, ros_msgs["image"](f)) for s, f in zip(stamps, bgr)]),
        "/cam/compressed": ("sensor_msgs/msg/CompressedImage",
                            [(s, ros_msgs["compressed"](p.read_bytes()))
                             for s, p in zip(cstamps, picked)]),
        "/status": ("std_msgs/msg/String", [(stamps[0], ros_msgs["string"]("ok"))]),
    }, storage=storage)
    actions = read_actions(demo_model)
    times = [(s - stamps[0]) / 1e9 for s in stamps]
    want = expected_records(demo_policy, actions, bgr, times)

    log = tmp_path / "img.jsonl"
    code, out, _ = run_cli(["replay", "--model", str(demo_model), str(bag), "--log", str(log)],
                           capsys)
    assert code == 0
    assert "/camera_pkg/display_mjpeg" in out
    assert_log_equals(read_log(log), want)

    log2 = tmp_path / "jpeg.jsonl"
    code, out, _ = run_cli(["replay", "--model", str(demo_model), str(bag), "--topic",
                            "/cam/compressed", "--log", str(log2)], capsys)
    assert code == 0
    assert "/cam/compressed" in out
    # the JPEG bytes decode to the same pixels cv2.imread gives: same records
    assert_log_equals(read_log(log2), want)


def test_rosbag_rgb8_and_images_array(tmp_path, capsys, demo_model, demo_policy, seq_frames,
                                      ros_msgs):
    """An rgb8 Image topic is converted to BGR; a DeepRacer-style message with an images[]
    array of CompressedImage (type definition carried in the bag) is readable too."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.LATEST)  # a fresh store: the session one stays unchanged
    cam_type = "deepracer_interfaces_pkg/msg/CameraMsg"
    store.register(get_types_from_msg("sensor_msgs/CompressedImage[] images", cam_type))
    CameraMsg = store.types[cam_type]
    picked = seq_frames[60 : 60 + N]
    bgr = [cv2.imread(str(p)) for p in picked]
    stamps = _stamps(N, period_ns=50_000_000)
    bag = write_bag(tmp_path / "bag", {
        "/rgb": ("sensor_msgs/msg/Image",
                 [(s, ros_msgs["image"](f, "rgb8")) for s, f in zip(stamps, bgr)]),
        "/camera_pkg/video_mjpeg": (cam_type, [
            (s, CameraMsg(images=[ros_msgs["compressed"](p.read_bytes())]))
            for s, p in zip(stamps, picked)
        ]),
    }, typestore=store)
    want = expected_records(demo_policy, read_actions(demo_model), bgr,
                            [k * 0.05 for k in range(N)])
    for topic in ("/rgb", "/camera_pkg/video_mjpeg"):
        log = tmp_path / f"{topic.strip('/').replace('/', '_')}.jsonl"
        code, out, _ = run_cli(["replay", "--model", str(demo_model), str(bag), "--topic", topic,
                                "--log", str(log)], capsys)
        assert code == 0, out
        assert_log_equals(read_log(log), want)


def test_unknown_topic_names_the_image_topics(tmp_path, capsys, demo_model, seq_frames,
                                              ros_msgs):
    bag = write_bag(tmp_path / "bag", {
        "/cam": ("sensor_msgs/msg/CompressedImage",
                 [(1000, ros_msgs["compressed"](seq_frames[0].read_bytes()))]),
    })
    code, _, err = run_cli(["replay", "--model", str(demo_model), str(bag), "--topic", "/nope"],
                           capsys)
    assert code == 2
    assert "no image topic '/nope'" in err and "/cam" in err
