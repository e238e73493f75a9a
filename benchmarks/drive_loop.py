"""Drive-loop cost with a paced 30 fps file camera, against bare decode + bare infer.

    python benchmarks/drive_loop.py [--model models/shallow_ffc_discrete_realsize] [--frames 300]

Runs the real :class:`~car_runtime.runtime.DriveLoop` (armed, memory recorder, 100 ms deadline)
on the bundled real footage re-encoded as 640x480 JPEGs (q80, like the car's MJPEG camera),
paced at 30 fps, then in the same process times a bare ``cv2.imdecode`` and a bare
``policy.infer()`` on the same frames. Prints: total per-frame cost (decode -> PWM write) as a
ratio to bare decode + bare infer (target <= 1.5), frame age at write p50/p99, CPU time per
frame, peak RSS (target <= 200 MB), and the time from a forced camera stall to neutral.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from car_runtime.actuation.calibration import Calibration
from car_runtime.actuation.output import Actuator, open_output
from car_runtime.model.policy import load_model
from car_runtime.pipeline import Pipeline
from car_runtime.runtime import DriveLoop
from car_runtime.vision.sources import ImageFolderSource

ROOT = Path(__file__).resolve().parents[1]
FOOTAGE = ROOT / "car_runtime/data/footage/car-event-track-seq-160x120"


def make_frames(out: Path, count: int) -> list[bytes]:
    """The real 160x120 frames upscaled to 640x480 and JPEG-encoded (q80), cycled to ``count``."""
    src = sorted(FOOTAGE.glob("*.jpg"))
    blobs = []
    for i in range(count):
        img = cv2.resize(cv2.imread(str(src[i % len(src)])), (640, 480), interpolation=cv2.INTER_CUBIC)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        assert ok
        (out / f"{i:06d}.jpg").write_bytes(buf.tobytes())
        blobs.append(buf.tobytes())
    return blobs


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/shallow_ffc_discrete_realsize"))
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=None, help="inference threads (all cores)")
    ap.add_argument("--preprocess", default="stock", choices=("stock", "training", "fast"))
    args = ap.parse_args()
    cv2.setNumThreads(1)
    cal = Calibration.defaults()

    with tempfile.TemporaryDirectory() as tmp, load_model(args.model, threads=args.threads) as loaded:
        folder = Path(tmp)
        blobs = make_frames(folder, args.frames)
        pipeline = Pipeline(loaded.policy, max_speed_pct=50, preprocess=args.preprocess)
        with Actuator(open_output("record:", cal), cal, deadline_s=0.1) as actuator, \
                ImageFolderSource(folder, fps=args.fps) as source:
            loop = DriveLoop(source, pipeline, actuator, armed=True, max_frame_age_s=0.1)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            loop.run()
            cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
            writes = list(actuator.output.writes)
        stages = pipeline.timer.summary()
        ages = [w.context["frame_age_ms"] for w in writes if w.context.get("frame_seq")]

        # Bare costs, same process, same frames.
        decode_ms, infer_ms = [], []
        for blob in blobs:
            t = time.perf_counter()
            cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
            decode_ms.append((time.perf_counter() - t) * 1e3)
        for _ in range(args.frames):
            t = time.perf_counter()
            loaded.policy.infer()
            infer_ms.append((time.perf_counter() - t) * 1e3)
        # The same bare infer, but paced like the camera: OpenVINO's worker threads fall asleep
        # between frames and waking them costs time that a back-to-back loop never pays.
        paced_infer_ms = []
        for _ in range(min(args.frames, 120)):
            time.sleep(1.0 / args.fps)
            t = time.perf_counter()
            loaded.policy.infer()
            paced_infer_ms.append((time.perf_counter() - t) * 1e3)

        # Forced stall: a camera delivering every 0.5 s; time from each command to neutral.
        stall_ms = []
        small = folder / "stall"
        small.mkdir()
        for i in range(6):
            (small / f"{i:06d}.jpg").write_bytes(blobs[i])
        with Actuator(open_output("record:", cal), cal, deadline_s=0.1) as actuator, \
                ImageFolderSource(small, fps=2) as source:
            DriveLoop(source, Pipeline(loaded.policy), actuator, armed=True,
                      max_frame_age_s=1.0).run()
            w = actuator.output.writes
            for a, b in zip(w, w[1:]):
                if a.context.get("frame_seq") and b.context.get("event") == "deadline":
                    stall_ms.append((b.t_s - a.t_s) * 1e3)

    bare = pct(decode_ms, 50) + pct(infer_ms, 50)
    bare_paced = pct(decode_ms, 50) + pct(paced_infer_ms, 50)
    result = {
        "model": Path(args.model).name,
        "frames": loop.stats.frames,
        "driven": loop.stats.driven,
        "stale": loop.stats.stale,
        "skipped": loop.stats.skipped,
        "total_p50_ms": stages["total"]["p50_ms"],
        "total_p99_ms": stages["total"]["p99_ms"],
        "bare_decode_p50_ms": pct(decode_ms, 50),
        "bare_infer_p50_ms": pct(infer_ms, 50),
        "bare_infer_paced_p50_ms": pct(paced_infer_ms, 50),
        "ratio_total_to_bare_decode_plus_infer": stages["total"]["p50_ms"] / bare,
        "ratio_total_to_bare_decode_plus_paced_infer": stages["total"]["p50_ms"] / bare_paced,
        "frame_age_at_write_p50_ms": pct(ages, 50),
        "frame_age_at_write_p99_ms": pct(ages, 99),
        "cpu_ms_per_frame": cpu_s * 1e3 / max(1, loop.stats.frames),
        "cpu_load_pct_at_fps": 100.0 * cpu_s / wall_s,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "stall_to_neutral_ms": [round(x, 2) for x in stall_ms],
        "stages": {k: {"p50_ms": round(v["p50_ms"], 3), "p99_ms": round(v["p99_ms"], 3)}
                   for k, v in stages.items()},
    }
    print(json.dumps(result, indent=2))
    print(
        f"\ntotal p50 {result['total_p50_ms']:.2f} ms vs bare decode+infer {bare:.2f} ms: "
        f"{result['ratio_total_to_bare_decode_plus_infer']:.2f}x (target <= 1.5), vs bare decode + "
        f"bare infer paced at {args.fps:g} fps {bare_paced:.2f} ms: "
        f"{result['ratio_total_to_bare_decode_plus_paced_infer']:.2f}x; frame age at "
        f"write p50 {result['frame_age_at_write_p50_ms']:.2f} / p99 "
        f"{result['frame_age_at_write_p99_ms']:.2f} ms; CPU {result['cpu_ms_per_frame']:.2f} ms/"
        f"frame; RSS {result['rss_mb']:.0f} MB (target <= 200); stall -> neutral "
        f"{min(stall_ms):.1f}-{max(stall_ms):.1f} ms (deadline 100 ms)"
    )


if __name__ == "__main__":
    main()
