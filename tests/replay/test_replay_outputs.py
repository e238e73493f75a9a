"""Replay outputs: the annotated video, the plot, --compare, and the atomic writes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import read_video
from replay_expect import read_log, run_cli

from car_runtime.overlay import FRAME_H, FRAME_W, PANEL_W
from car_runtime.replay import Position, frame_ranges

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_annotated_video_and_plot(tmp_path, capsys, demo_model, footage_seq_dir):
    video, plot, log = tmp_path / "r.mp4", tmp_path / "r.png", tmp_path / "r.jsonl"
    code, out, _ = run_cli(
        ["replay", "--model", str(demo_model), str(footage_seq_dir), "--end", "40",
         "-o", str(video), "--plot", str(plot), "--log", str(log)], capsys
    )
    assert code == 0
    assert f"wrote {log}, {video}, {plot}" in out
    frames, fps = read_video(video)
    assert len(frames) == 40
    assert frames[0].shape == (FRAME_H, FRAME_W + PANEL_W, 3)
    assert fps == pytest.approx(30)  # the default folder rate
    # the camera frame fills the left part: it matches the upscaled source frame
    src = cv2.resize(cv2.imread(str(footage_seq_dir / "000010.jpg")), (FRAME_W, FRAME_H))
    region = (slice(160, 400), slice(0, 400))  # away from the inset, arrow and text
    diff = np.abs(frames[10][region].astype(int) - src[region].astype(int))
    assert np.median(diff) < 12
    # the panel is drawn (not the camera image): its background is the dark panel grey
    panel = frames[10][:, FRAME_W:]
    assert np.median(panel) < 60
    data = plot.read_bytes()
    assert data[:8] == PNG_MAGIC
    img = cv2.imread(str(plot))
    assert img is not None and img.shape[0] > 400 and img.shape[1] > 600
    assert not list(tmp_path.glob(".*tmp*")), "temp files left behind"


def test_compare_reports_where_decisions_differ(tmp_path, capsys, demo_model,
                                                realsize_shallow_dir, footage_seq_dir):
    log_a, log_b, video = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.mp4"
    code, out, _ = run_cli(
        ["replay", "--model", str(demo_model), str(footage_seq_dir), "--end", "30",
         "--compare", str(realsize_shallow_dir), "--log", str(log_a), "--compare-log", str(log_b),
         "-o", str(video)], capsys
    )
    assert code == 0
    a, b = read_log(log_a), read_log(log_b)
    assert len(a) == len(b) == 30
    assert len(b[0]["output"]) == 5  # the shallow model's own action space
    differ = [ra["frame"] for ra, rb in zip(a, b)
              if (ra["angle"], ra["throttle"]) != (rb["angle"], rb["throttle"])]
    line = next(ln for ln in out.splitlines() if ln.startswith("compare:"))
    assert f"differ on {len(differ)}/30 frames ({100 * len(differ) / 30:.1f} %" in line
    if differ:
        assert line.endswith(frame_ranges(differ))
    frames, _ = read_video(video)
    assert len(frames) == 30 and frames[0].shape == (FRAME_H, FRAME_W + 2 * PANEL_W, 3)


def test_compare_with_itself_never_differs(tmp_path, capsys, demo_model, footage_seq_dir):
    code, out, _ = run_cli(
        ["replay", "--model", str(demo_model), str(footage_seq_dir), "--end", "20",
         "--compare", str(demo_model)], capsys
    )
    assert code == 0
    assert "compare: decisions differ on 0/20 frames (0.0 %" in out


def test_continuous_model_logs_null_action_and_raw_outputs(tmp_path, capsys, slim_models,
                                                           footage_seq_dir):
    model = slim_models["shallow_ffc_continuous_slim"]
    log, video = tmp_path / "r.jsonl", tmp_path / "r.mp4"
    code, out, _ = run_cli(["replay", "--model", str(model), str(footage_seq_dir), "--end", "5",
                            "--log", str(log), "-o", str(video)], capsys)
    assert code == 0
    assert "continuous; steering" in out
    for rec in read_log(log):
        assert rec["action_index"] is None and len(rec["output"]) == 2
        assert -1.0 <= rec["angle"] <= 1.0
    assert len(read_video(video)[0]) == 5


def test_frame_ranges_and_positions():
    assert frame_ranges([]) == ""
    assert frame_ranges([7]) == "7"
    assert frame_ranges([3, 4, 5, 9, 12, 13]) == "3-5, 9, 12-13"
    assert frame_ranges([5, 1, 2]) == "1-2, 5"
    assert Position.parse("120") == Position(120, "frame")
    assert Position.parse("2.5s") == Position(2.5, "s")
    assert Position.parse("4 s") == Position(4.0, "s")
    for bad in ("-3", "1.5", "abc", "s"):
        with pytest.raises(Exception, match="frame number"):
            Position.parse(bad)
