#!/usr/bin/env python3
"""The brain's costs on this machine, as ratios to bare ``infer()`` measured in the same run.

Model: the real-size shallow fixture (``models/shallow_ffc_discrete_realsize``, 23.4 MB
``model.pb``), packed first into a console-layout ``model.tar.gz`` in a temp folder.

Measured:

- ``load``: archive -> compiled model ready (:func:`~car_runtime.model.policy.load_model`:
  extract, read, reshape, compile, temp folder removed). The first load in the process (which
  also starts OpenVINO's CPU plugin) and the median of ``--loads`` further loads;
- ``first decision``: archive -> first :class:`~car_runtime.control.actions.Decision`, i.e. load
  + building the :class:`~car_runtime.pipeline.Pipeline` + one 640x480 JPEG frame through
  decode, preprocess, infer and decide (cold);
- ``infer``: bare ``Policy.infer()`` (the reused request, input already in place), median and
  p99 over ``--runs`` calls after a warm-up;
- per-frame preprocessing, median/p99 over ``--runs`` calls, for a real 640x480 frame given as a
  BGR array (``stock``, ``training``, ``fast``) and as JPEG bytes (decode + prepare; ``stock``,
  ``training``, ``fast``).

OpenCV runs on 1 thread and OpenVINO on all cores, as in ``car-runtime run``. Prints a table and
then one JSON object. Speed is measured here, never asserted in tests.

Usage::

    python benchmarks/brain.py [--model DIR] [--runs 500] [--loads 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "shallow_ffc_discrete_realsize"
FRAME_PNG = (REPO / "tests" / "data" / "footage" / "car-foam-mat-track-640x480"
             / "testing_images_lane_turn.png")


def pack(model_dir: Path, out: Path) -> Path:
    """Console layout: agent/model.pb + model_metadata.json at the root."""
    import tarfile

    with tarfile.open(out, "w:gz") as tar:
        tar.add(model_dir / "model.pb", arcname="agent/model.pb")
        tar.add(model_dir / "model_metadata.json", arcname="model_metadata.json")
    return out


def timeit_ms(fn: Callable[[], object], runs: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        samples[i] = time.perf_counter_ns() - t0
    ms = samples / 1e6
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="model folder (model.pb + model_metadata.json) to pack and measure")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args(argv)

    from car_runtime.model.policy import load_model
    from car_runtime.pipeline import Pipeline
    from car_runtime.timing import now_s
    from car_runtime.vision.frame import Frame
    from car_runtime.vision.preprocess import Preprocessor

    cv2.setNumThreads(1)
    bgr = cv2.imread(str(FRAME_PNG), cv2.IMREAD_COLOR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok and bgr.shape == (480, 640, 3)
    jpeg = buf.tobytes()

    with tempfile.TemporaryDirectory() as tmp:
        archive = pack(args.model, Path(tmp) / "model.tar.gz")
        # archive -> first decision (the first load in this process: plugin start included)
        t0 = time.perf_counter()
        loaded = load_model(archive)
        pipeline = Pipeline(loaded.policy, max_speed_pct=100)
        decision = pipeline.step(Frame(seq=0, t_capture_s=now_s(), images=(jpeg,))).decision
        first_decision_s = time.perf_counter() - t0
        first_load_s = loaded.load_s
        assert decision.valid
        parts = []  # (load, read, compile) per further load
        for _ in range(args.loads):
            again = load_model(archive)
            parts.append((again.load_s, again.policy.read_s, again.policy.compile_s))
        loads = [p[0] for p in parts]
        archive_mb = archive.stat().st_size / 1e6

    policy = loaded.policy
    h, w = policy.input_hw
    view = policy.camera_view(0)
    np.copyto(view, cv2.cvtColor(cv2.resize(bgr, (w, h)), cv2.COLOR_BGR2GRAY))
    infer = timeit_ms(policy.infer, args.runs)

    rows: dict[str, dict[str, float]] = {}
    for mode in ("stock", "training", "fast"):
        pre = Preprocessor(mode, h, w, 1)
        rows[f"BGR 640x480 -> input ({mode})"] = timeit_ms(lambda: pre.prepare([bgr], [view]), args.runs)
    for mode in ("stock", "training", "fast"):
        pre = Preprocessor(mode, h, w, 1)
        rows[f"JPEG 640x480 -> input ({mode})"] = timeit_ms(lambda: pre([jpeg], [view]), args.runs)
    rows["JPEG decode only (IMREAD_COLOR)"] = timeit_ms(
        lambda: cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), args.runs)

    base = infer["median_ms"]
    print(f"model {args.model.name}: archive {archive_mb:.1f} MB, input {list(policy.input.shape)} "
          f"{policy.input.layout}, output {list(policy.output.shape)}, f32, "
          f"LATENCY hint, {os.cpu_count()} inference threads, cv2 1 thread")
    print(f"{'':40} {'median':>9} {'p99':>9} {'x infer':>8}")
    print(f"{'load archive -> ready (first in process)':40} {first_load_s * 1e3:7.0f}ms {'':>9} "
          f"{first_load_s * 1e3 / base:8.0f}")
    print(f"{f'load archive -> ready (median of {args.loads})':40} {statistics.median(loads) * 1e3:7.0f}ms "
          f"{'':>9} {statistics.median(loads) * 1e3 / base:8.0f}")
    med = sorted(parts)[len(parts) // 2]
    print(f"{'  of which read_model / compile':40} {med[1] * 1e3:7.0f}ms {med[2] * 1e3:7.0f}ms "
          f"(rest: extract + checks {(med[0] - med[1] - med[2]) * 1e3:.0f} ms)")
    print(f"{'archive -> first decision':40} {first_decision_s * 1e3:7.0f}ms {'':>9} "
          f"{first_decision_s * 1e3 / base:8.0f}")
    print(f"{'bare infer()':40} {base:7.3f}ms {infer['p99_ms']:7.3f}ms {1.0:8.2f}")
    for name, r in rows.items():
        print(f"{name:40} {r['median_ms']:7.3f}ms {r['p99_ms']:7.3f}ms {r['median_ms'] / base:8.2f}")
    result = {
        "model": args.model.name,
        "archive_mb": archive_mb,
        "runs": args.runs,
        "load_first_s": first_load_s,
        "load_median_s": statistics.median(loads),
        "load_all_s": loads,
        "load_median_parts_s": {"total": med[0], "read_model": med[1], "compile": med[2]},
        "first_decision_s": first_decision_s,
        "infer": infer,
        "preprocess": rows,
        "ratios_to_infer_median": {
            "load_first": first_load_s * 1e3 / base,
            "load_median": statistics.median(loads) * 1e3 / base,
            "first_decision": first_decision_s * 1e3 / base,
            "infer_p99": infer["p99_ms"] / base,
            **{name: r["median_ms"] / base for name, r in rows.items()},
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
