"""``car-runtime bench``: the real console script on the bundled models, plus the measurement
module in-process. Real OpenVINO, real JPEG frames, real outputs (memory / JSONL recorder);
no timing thresholds -- only relations that hold for every possible measurement."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import car_runtime_cmd

from car_runtime import bench
from car_runtime.errors import SourceError
from car_runtime.vision.preprocess import jpeg_size

STAGES = ("decode", "preprocess", "infer", "decide", "actuate", "total")
PCTS = ("p50_ms", "p90_ms", "p99_ms", "max_ms")
TOP_KEYS = {"model", "device", "openvino", "load_s", "compile_s", "first_decision_s", "stages",
            "fps", "cpu_ms_per_frame", "rss_mb"}
REPO = Path(__file__).resolve().parents[2]


def run_bench(*args: object, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*car_runtime_cmd(), "bench", *map(str, args)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str,
                          native_noise: bool = False) -> None:
    """Exit 2 and one ``error: ...`` line, no traceback. ``native_noise``: OpenVINO's C++ TF
    frontend may log its own parse errors straight to fd 2 before ours (not Python's output)."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    ours = [line for line in lines if line.startswith("error: ")]
    assert len(ours) == 1 and lines[-1] == ours[0], proc.stderr
    if not native_noise:
        assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in ours[0]


def check_schema(doc: dict, model: str) -> None:
    """The exact --json document, positive finite numbers, ordered percentiles, and total
    dominating every stage (true per frame, hence for every order statistic)."""
    assert set(doc) == TOP_KEYS
    assert doc["model"] == model and doc["device"] == "CPU"
    import openvino

    assert doc["openvino"] and openvino.__version__.startswith(doc["openvino"])
    for key in ("load_s", "compile_s", "first_decision_s", "fps", "cpu_ms_per_frame", "rss_mb"):
        assert isinstance(doc[key], float) and math.isfinite(doc[key]) and doc[key] > 0, key
    assert doc["compile_s"] < doc["load_s"] < doc["first_decision_s"]
    assert set(doc["stages"]) == set(STAGES)
    for name, st in doc["stages"].items():
        assert set(st) == set(PCTS), name
        assert all(isinstance(st[k], float) and st[k] > 0 for k in PCTS), (name, st)
        assert st["p50_ms"] <= st["p90_ms"] <= st["p99_ms"] <= st["max_ms"], (name, st)
    total = doc["stages"]["total"]
    for name in STAGES[:-1]:
        for k in PCTS:
            assert total[k] >= doc["stages"][name][k], (name, k)


# ------------------------------------------------------------------------------------- the CLI


def test_json_is_exactly_the_schema(demo_model: Path) -> None:
    proc = run_bench("--model", demo_model, "--frames-count", 40, "--warmup", 3, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)  # stdout is the JSON document and nothing else
    check_schema(doc, str(demo_model))


def test_table_verdict_and_plot(demo_model: Path, tmp_path: Path) -> None:
    png = tmp_path / "latency.png"
    proc = run_bench("--model", demo_model, "--frames-count", 30, "--warmup", 2,
                     "--camera-fps", 15, "--plot", png)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for name in STAGES:
        assert any(line.split()[:1] == [name] and len(line.split()) == 5
                   for line in out.splitlines()), name
    assert "640x480" in out and "JPEG" in out  # says what the default frames are
    verdict = next(line for line in out.splitlines() if line.startswith("verdict"))
    words = verdict.split()
    # "verdict   p99 total X ms = Y % of the 66.7 ms frame period at 15 fps: ..."
    x_ms, y_pct = float(words[3]), float(words[6])
    assert words[1:3] == ["p99", "total"] and "66.7 ms frame period at 15 fps" in verdict
    assert y_pct == pytest.approx(100 * x_ms / (1000 / 15), abs=0.15)
    total_row = next(line.split() for line in out.splitlines() if line.startswith("total"))
    assert float(total_row[3]) == pytest.approx(x_ms, abs=0.006)  # verdict quotes the p99 column
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] > img.shape[0] > 200
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, no temp left behind


@pytest.mark.parametrize("case", ["missing", "not-a-tarball", "garbage-pb"])
def test_bad_model_is_one_line_exit_2(
    case: str, tmp_path: Path, realsize_shallow_dir: Path
) -> None:
    if case == "missing":
        model = tmp_path / "nope.tar.gz"
    elif case == "not-a-tarball":
        model = tmp_path / "model.tar.gz"
        model.write_bytes(os.urandom(4096))
    else:
        model = tmp_path / "m"
        model.mkdir()
        (model / "model.pb").write_bytes(b"\x0a\x05hello" + os.urandom(512))
        shutil.copy(realsize_shallow_dir / "model_metadata.json", model)
    proc = run_bench("--model", model, "--frames-count", 5, "--json")
    assert_one_line_error(proc, native_noise=case == "garbage-pb")
    assert proc.stdout == ""


def test_plot_without_matplotlib_names_the_fix(demo_model: Path, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    png = tmp_path / "p.png"
    proc = run_bench("--model", demo_model, "--frames-count", 5, "--plot", png,
                     env={"PYTHONPATH": str(shadow.parent)})
    assert_one_line_error(proc, "pip install matplotlib")
    assert not png.exists()


@pytest.mark.parametrize("args", [
    ["--frames-count", "0"],
    ["--warmup", "-1"],
    ["--threads", "0"],
    ["--frames", "a", "--camera", "0"],
    ["--camera-fps", "0"],
])
def test_bad_flags_exit_2(demo_model: Path, args: list[str]) -> None:
    proc = run_bench("--model", demo_model, *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_missing_frames_folder_is_one_line(demo_model: Path, tmp_path: Path) -> None:
    proc = run_bench("--model", demo_model, "--frames", tmp_path / "nothing-here")
    assert_one_line_error(proc, "--frames")


def test_actuate_writes_every_frame_to_a_real_output_with_the_motor_at_neutral(
    demo_model: Path, tmp_path: Path
) -> None:
    record = tmp_path / "writes.jsonl"
    n, warmup = 25, 4
    proc = run_bench("--model", demo_model, "--frames-count", n, "--warmup", warmup,
                     "--output", f"record:{record}", "--json")
    assert proc.returncode == 0, proc.stderr
    writes = [json.loads(line) for line in record.read_text().splitlines()]
    per_frame = [w for w in writes if w.get("frame_seq") is not None]
    assert len(per_frame) == 1 + warmup + n  # the cold frame, the warm-up, the measured frames
    assert [w["frame_seq"] for w in per_frame] == list(range(1, 2 + warmup + n))
    assert all(w["state"] == "armed" for w in per_frame)
    motor_mid = writes[0]["motor_ns"]  # the start write is neutral
    assert all(w["throttle"] == 0.0 and w["motor_ns"] == motor_mid for w in writes)
    assert len({w["servo_ns"] for w in per_frame}) > 1  # steering follows the model
    assert writes[-1]["event"] == "close" and writes[-1]["servo_ns"] == writes[0]["servo_ns"]


# --------------------------------------------------------------------------------- in-process


@pytest.fixture(scope="module")
def demo_loaded(demo_model: Path):
    settings = bench.BenchSettings(model=str(demo_model), frames_count=60, warmup=3)
    loaded = bench.load(settings)
    yield settings, loaded
    loaded.close()


def test_stage_samples_are_frame_aligned_and_sum_below_total(demo_loaded) -> None:
    settings, loaded = demo_loaded
    supply = bench.open_supply(channels=1)
    try:
        result = bench.measure(loaded, settings, supply)
    finally:
        supply.close()
    samples = result.samples_ms
    assert all(samples[name].shape == (settings.frames_count,) for name in STAGES)
    stage_sum = sum(samples[name] for name in STAGES[:-1])
    assert np.all(stage_sum <= samples["total"])  # per frame: total spans every stage
    for name in STAGES:
        assert result.stages[name]["p50_ms"] == pytest.approx(float(np.median(samples[name])))
        assert result.stages[name]["max_ms"] == float(samples[name].max())
    # every measured frame was written: as a command, or as neutral if it aged past 100 ms
    assert result.driven + result.stale == settings.frames_count
    assert result.first_decision_s > result.load_s
    assert result.compiled["precision"] == "f32"  # f32 asked, f32 compiled, even on bf16 hosts
    check_schema(result.to_json(), settings.model)


def test_default_frames_are_camera_like_jpegs(footage_seq_dir: Path) -> None:
    jpegs = bench.camera_like_jpegs(footage_seq_dir)
    assert len(jpegs) == len(list(footage_seq_dir.glob("*.jpg")))
    assert {jpeg_size(j) for j in jpegs} == {(640, 480)}
    img = cv2.imdecode(np.frombuffer(jpegs[0], np.uint8), cv2.IMREAD_COLOR)
    src = cv2.imread(str(sorted(footage_seq_dir.glob("*.jpg"))[0]))
    up = cv2.resize(src, (640, 480), interpolation=cv2.INTER_LINEAR)
    assert np.abs(img.astype(int) - up.astype(int)).mean() < 4  # the same picture, JPEG q80
    source = bench.MemorySource([(j,) for j in jpegs[:3]], "memory:test")
    frames = [f for _, f in zip(range(7), source)]
    assert [f.seq for f in frames] == list(range(1, 8))
    assert [f.images[0] for f in frames] == [jpegs[i % 3] for i in range(7)]  # cycles


def test_video_and_folder_frames(demo_loaded, tmp_path: Path, footage_seq_dir: Path) -> None:
    settings, loaded = demo_loaded
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15, (640, 480))
    for path in sorted(footage_seq_dir.glob("*.jpg"))[:8]:
        writer.write(cv2.resize(cv2.imread(str(path)), (640, 480)))
    writer.release()
    few = replace(settings, frames_count=20, warmup=2)  # more frames than the clip: it cycles
    for spec, kind in ((video, "video"), (footage_seq_dir, "folder")):
        supply = bench.open_supply(str(spec), channels=1)
        try:
            result = bench.measure(loaded, few, supply)
        finally:
            supply.close()
        assert result.driven + result.stale == 20 and kind in result.frames
        assert (kind == "video") == any("already decoded" in n for n in result.notes)


def test_live_source_goes_through_the_latest_frame_slot(demo_loaded, footage_seq_dir: Path) -> None:
    """The camera path (a source thread feeding the newest-wins slot, as in ``run``), driven by
    a real folder source paced like a fast camera."""
    from car_runtime.vision.sources import open_source

    settings, loaded = demo_loaded
    source = open_source(str(footage_seq_dir), fps=200.0, paced=True)
    supply = bench.FrameSupply(source, "paced folder", live=True)
    try:
        result = bench.measure(loaded, replace(settings, frames_count=15, warmup=2), supply)
        assert result.samples_ms["total"].size == 15
        assert result.driven <= 15 <= result.driven + result.stale  # stale: skipped or neutral
        assert not source.running  # the reader thread is stopped after measuring
        with pytest.raises(SourceError, match="stopped delivering"):  # 100 frames, then it ends
            bench.measure(loaded, replace(settings, frames_count=200, warmup=0), supply)
    finally:
        supply.close()


def test_stereo_model_gets_both_images(data_dir: Path) -> None:
    model = data_dir / "models" / "shallow_stereo_discrete_slim"
    result = bench.bench(bench.BenchSettings(model=str(model), frames_count=10, warmup=1),
                         show_progress=False)
    assert result.driven + result.stale == 10 and "1x120x160x2" in result.model_info
    assert any("stereo" in n for n in result.notes)


def test_sweep_covers_the_grid_and_picks_the_lowest_p99(demo_model: Path) -> None:
    settings = bench.BenchSettings(model=str(demo_model), frames_count=6, warmup=1)
    result = bench.sweep(settings, rounds=2, show_progress=False)
    cores = os.cpu_count() or 1
    grid = {(r.settings.threads, r.settings.hint, r.settings.preprocess) for r in result.results}
    assert grid == {(t, h, p) for t in range(1, cores + 1) for h in ("latency", "throughput")
                    for p in ("stock", "fast")}
    assert all(r.settings.frames_count == 6 and r.samples_ms["total"].size == 6
               for r in result.results)  # the rounds add up to the asked frames
    doc = result.to_json()
    assert len(doc["runs"]) == len(grid)
    for run in doc["runs"]:
        check_schema({k: run[k] for k in TOP_KEYS}, str(demo_model))
    best = min(doc["runs"], key=lambda r: r["stages"]["total"]["p99_ms"])
    assert (doc["best"]["threads"], doc["best"]["hint"], doc["best"]["preprocess"]) == (
        best["threads"], best["hint"], best["preprocess"])
    assert "fastest" in bench.format_sweep(result, 30.0)


def test_benchmark_app_comparison_script(demo_model: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "vs_benchmark_app.py"), "--model",
         os.path.relpath(demo_model, REPO), "--time", "1", "--repeat", "1", "--frames-count", "30",
         "--warmup", "3", "--json"],
        capture_output=True, text=True, timeout=300, cwd=REPO,  # a relative model path
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["rounds"]) == 1
    r = doc["rounds"][0]
    assert r["benchmark_app_median_ms"] > 0 and r["bare_infer_median_ms"] > 0
    st = doc["bench"]["stages"]
    assert r["infer_p50_ms"] == st["infer"]["p50_ms"]  # one round: pooled == the round
    assert doc["infer_ratio"] == pytest.approx(
        st["infer"]["p50_ms"] / r["benchmark_app_median_ms"], rel=0.01)
    assert doc["total_ratio"] == pytest.approx(
        st["total"]["p50_ms"] / (st["decode"]["p50_ms"] + st["infer"]["p50_ms"]), rel=0.01)
