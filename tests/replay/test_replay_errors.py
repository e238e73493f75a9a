"""Bad input -> one line ``error: ...`` on stderr, exit status 2, no traceback, no output file.

Run as real subprocesses of the installed entry point, the way a user meets them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from replay_expect import write_bag

def _replay(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "car_runtime.cli.main", "replay", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _make_input(case: str, tmp: Path, ros_msgs) -> tuple[Path, tuple[str, ...]]:
    if case == "missing":
        return tmp / "nope.mp4", ("does not exist",)
    if case == "not_a_video":
        (tmp / "x.mp4").write_text("this is not a video\n")
        return tmp / "x.mp4", ("cannot read video", "x.mp4")
    if case == "empty_folder":
        (tmp / "empty").mkdir()
        return tmp / "empty", ("no images",)
    write_bag(tmp / "nobag", {"/status": ("std_msgs/msg/String",
                                          [(1000, ros_msgs["string"]("hello"))])})
    return tmp / "nobag", ("no camera image topics", "/status")


@pytest.mark.parametrize("case", ["missing", "not_a_video", "empty_folder", "bag_without_images"])
def test_bad_input_is_one_line_exit_2(tmp_path, demo_model, ros_msgs, case):
    path, needles = _make_input(case, tmp_path, ros_msgs)
    log = tmp_path / "out.jsonl"
    proc = _replay(["--model", str(demo_model), str(path), "--log", str(log)], tmp_path)
    _assert_one_line_error(proc, *needles)
    assert not log.exists()
    assert not list(tmp_path.glob(".out.jsonl*")), "temp log left behind"


def test_bad_options_are_one_line_errors(tmp_path, demo_model, footage_seq_dir):
    proc = _replay(["--model", str(demo_model), str(footage_seq_dir), "--log",
                    str(tmp_path / "no_such_dir" / "r.jsonl")], tmp_path)
    _assert_one_line_error(proc, "does not exist")
    proc = _replay(["--model", str(demo_model), str(footage_seq_dir), "--start", "200"], tmp_path)
    _assert_one_line_error(proc, "no frames replayed", "--start frame 200")
    proc = _replay(["--model", str(demo_model), str(footage_seq_dir), "--max-speed-pct", "150"],
                   tmp_path)
    _assert_one_line_error(proc, "outside 0..100")


def test_corrupt_frame_names_the_file_and_leaves_no_output(tmp_path, demo_model, seq_frames):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, p in enumerate(seq_frames[:3]):
        (folder / f"{k:06d}.jpg").write_bytes(p.read_bytes())
    (folder / "000003.jpg").write_bytes(seq_frames[3].read_bytes()[:40])  # truncated JPEG
    video, log = tmp_path / "r.mp4", tmp_path / "r.jsonl"
    proc = _replay(["--model", str(demo_model), str(folder), "-o", str(video), "--log", str(log)],
                   tmp_path)
    _assert_one_line_error(proc, "000003.jpg", "could not be decoded")
    assert not video.exists() and not log.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left"
