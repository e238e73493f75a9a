"""Flight recorder costs, measured side by side in one process (and one kill -9 per round).

    python benchmarks/recording.py [--model models/shallow_ffc_discrete_realsize] [--frames 300]

1. Recording off vs on at 30 fps: the real DriveLoop (armed, memory recorder) on the bundled
   real footage re-encoded as 640x480 JPEGs (q80, like the car's MJPEG camera), alternating
   off/on segments of ``--frames`` frames; CPU time per frame (process, all threads: the
   writer thread counts) and frame age at the write, p50/p99. Targets: CPU <= 1.10x,
   age p99 <= 1.05x. Plus what the loop thread itself pays per write (the recorder's write
   listener + step hook).
2. Writer headroom: the same frames fed unpaced (as fast as the loop takes them) with the
   recorder on: frames recorded per second and frames dropped; plus the bare writer (serialize
   + write the three messages of a frame, flush every second) in frames/s.
3. Bag size per minute at 30 fps (from the recorded sessions).
4. kill -9: ``car-runtime run --record`` at 30 fps killed after 2, 3.5 and 5 s: frames driven
   (record: output) vs frames readable from the torn bag.
5. Saliency cost per frame on the model: batched vs one pass at a time.
"""

from __future__ import annotations

import argparse
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from car_runtime.actuation.calibration import Calibration
from car_runtime.actuation.output import Actuator, open_output
from car_runtime.controls import DriveControls, ModelInfo, ModelLoader
from car_runtime.config import RunConfig
from car_runtime.recording.catalog import list_sessions
from car_runtime.recording.recorder import FlightRecorder
from car_runtime.runtime import DriveLoop
from car_runtime.vision.sources import ImageFolderSource

ROOT = Path(__file__).resolve().parents[1]
FOOTAGE = ROOT / "car_runtime/data/footage/car-event-track-seq-160x120"


def make_frames(out: Path, count: int) -> None:
    src = sorted(FOOTAGE.glob("*.jpg"))
    out.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = cv2.resize(cv2.imread(str(src[i % len(src)])), (640, 480),
                         interpolation=cv2.INTER_CUBIC)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        (out / f"{i:06d}.jpg").write_bytes(buf.tobytes())


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def segment(cfg: RunConfig, loader: ModelLoader, frames: Path, fps: float, record: Path | None):
    """One DriveLoop run over ``frames`` at ``fps``; returns (cpu ms/frame, ages ms, recorder)."""
    cal = Calibration.defaults()
    with Actuator(open_output("record:", cal), cal, deadline_s=0.1) as actuator:
        loaded, pipeline = loader.load(cfg.model)
        source = ImageFolderSource(frames, fps=fps)
        loop = DriveLoop(source, pipeline, actuator, armed=True, max_frame_age_s=0.1)
        controls = DriveControls(loop, loader, ModelInfo.of(loaded, cfg.model))
        recorder = None
        if record is not None:
            recorder = FlightRecorder(controls, record, min_free_mb=0, config=cfg)
            _time_calls(recorder)
            recorder.start()
        c0 = cpu_s()
        loop.run()
        actuator.close()  # like `run`: the actuator's final neutral is recorded too
        if recorder is not None:
            recorder.close()
        cpu = cpu_s() - c0
        writes = actuator.output.writes  # type: ignore[attr-defined]
        ages = [w.context["frame_age_ms"] for w in writes
                if w.context.get("frame_age_ms") is not None and "event" not in w.context]
        source.close()
    return cpu * 1e3 / max(1, loop.stats.frames), np.asarray(ages), recorder, loop.stats


def _time_calls(recorder: FlightRecorder) -> None:
    """Time what the drive loop's side pays per write: the write listener and the step hook
    (``recorder.calls_ns``: ns per write, listener + hook)."""
    on_write, on_step = recorder.on_write, recorder.on_step
    pending: list[int] = []
    recorder.calls_ns = []  # type: ignore[attr-defined]

    def timed_write(w):
        t = time.perf_counter_ns()
        on_write(w)
        pending.append(time.perf_counter_ns() - t)

    def timed_step(result, w, state):
        t = time.perf_counter_ns()
        on_step(result, w, state)
        recorder.calls_ns.append(time.perf_counter_ns() - t + (pending.pop() if pending else 0))
        pending.clear()

    recorder.on_write, recorder.on_step = timed_write, timed_step  # type: ignore[method-assign]


def bare_writer(frames: Path, n: int, out: Path) -> float:
    """Frames/s of serialize + write of the three messages per frame, flush every second."""
    from car_runtime.recording import messages
    from car_runtime.recording.bagwriter import BagWriter

    c = messages.classes()
    blobs = [np.frombuffer(p.read_bytes(), np.uint8) for p in sorted(frames.glob("*.jpg"))]
    bag = BagWriter(out, "mcap")
    t0 = last = time.perf_counter()
    for i in range(n):
        t_ns = time.time_ns()
        stamp = c.Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9)
        img = c.CompressedImage(header=c.Header(stamp=stamp, frame_id=str(i)), format="jpeg",
                                data=blobs[i % len(blobs)])
        res = [c.InferResults(class_label=k, class_prob=0.2, x_min=0.0, y_min=0.0, x_max=0.0,
                              y_max=0.0) for k in range(5)]
        bag.write(messages.RL_RESULTS, t_ns, c.InferResultsArray(results=res, images=[img]))
        bag.write(messages.AUTO_DRIVE, t_ns, c.ServoCtrlMsg(angle=0.1, throttle=0.4,
                                                            source_stamp=stamp))
        bag.write(messages.WRITES, t_ns, c.DriveWrite(
            stamp=stamp, t=1.0, state="armed", event="", angle=0.1, throttle=0.4,
            servo_ns=1450000, motor_ns=1400000, frame_seq=i, frame_age_ms=5.0, clamped="",
            decided=True, action_index=1, steering_deg=10.0, speed_mps=1.0, decision_angle=0.1,
            decision_throttle=0.4, decision_valid=True, output=np.full(5, 0.2, np.float32),
            recording_dropped=0, deadline_misses=0))
        if time.perf_counter() - last >= 1.0:
            bag.flush()
            last = time.perf_counter()
    bag.close()
    return n / (time.perf_counter() - t0)


def kill_round(model: str, frames: Path, tmp: Path, after_s: float) -> tuple[int, int]:
    from car_runtime.actuation.recorder import read_records

    root, jsonl = tmp / f"kill{after_s}", tmp / f"kill{after_s}.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "car_runtime.cli.main", "run", "--model", model, "--camera",
         str(frames), "--fps", "30", "--output", f"record:{jsonl}", "--arm", "--record",
         str(root), "--status-interval", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (jsonl.exists() and any(r.get("frame_seq") for r in read_records(jsonl))):
        time.sleep(0.02)
    time.sleep(after_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    driven = sum(r.get("frame_seq") is not None for r in read_records(jsonl))
    sessions = list_sessions(root)
    return driven, sessions[0].frames if sessions else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/shallow_ffc_discrete_realsize"))
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    cfg = RunConfig(model=args.model).validate()
    with tempfile.TemporaryDirectory() as td, ModelLoader(cfg) as loader:
        tmp = Path(td)
        frames = tmp / "frames"
        make_frames(frames, args.frames)
        print(f"model {Path(args.model).name}, {args.frames} 640x480 JPEG frames "
              f"(~{np.mean([p.stat().st_size for p in frames.glob('*.jpg')]) / 1e3:.0f} kB)")

        # 1. off vs on at 30 fps, interleaved
        res = {"off": [], "on": []}
        for r in range(args.rounds):
            for mode in ("off", "on"):
                rec = tmp / f"rec{r}" if mode == "on" else None
                cpu, ages, recorder, stats = segment(cfg, loader, frames, 30.0, rec)
                res[mode].append((cpu, ages, recorder, stats))
        cpu = {m: np.mean([x[0] for x in v]) for m, v in res.items()}
        ages = {m: np.concatenate([x[1] for x in v]) for m, v in res.items()}
        p99 = {m: np.percentile(a, 99) for m, a in ages.items()}
        p50 = {m: np.percentile(a, 50) for m, a in ages.items()}
        dropped = sum(x[2].facts()["dropped_total"] for x in res["on"])
        print(f"\n1. 30 fps, {args.rounds} x {args.frames} frames each, off/on interleaved")
        print(f"   CPU per frame: off {cpu['off']:.2f} ms, on {cpu['on']:.2f} ms -> "
              f"{cpu['on'] / cpu['off']:.3f}x (target <= 1.10)")
        print(f"   frame age p50: off {p50['off']:.2f} ms, on {p50['on']:.2f} ms; p99: off "
              f"{p99['off']:.2f} ms, on {p99['on']:.2f} ms -> {p99['on'] / p99['off']:.3f}x "
              f"(target <= 1.05)")
        print(f"   recorder dropped {dropped} writes; stale: off "
              f"{sum(x[3].stale for x in res['off'])}, on {sum(x[3].stale for x in res['on'])}")
        calls = np.concatenate([x[2].calls_ns for x in res["on"]]) / 1e3
        print(f"   the loop thread's share (write listener + step hook) per write: p50 "
              f"{np.percentile(calls, 50):.1f} us, p99 {np.percentile(calls, 99):.1f} us")

        # 3. size per minute
        sessions = [s for r in range(args.rounds) for s in list_sessions(tmp / f"rec{r}")]
        per_frame = sum(s.size_bytes for s in sessions) / max(1, sum(s.frames for s in sessions))
        print(f"\n3. bag size: {per_frame / 1e3:.1f} kB per frame -> "
              f"{per_frame * 30 * 60 / 1e6:.0f} MB per minute at 30 fps")

        # 2. headroom
        cpu_u, _a, recorder, stats = segment(cfg, loader, frames, 1000.0, tmp / "fast")
        (fast,) = list_sessions(tmp / "fast")
        wall = fast.duration_s or 1e-9
        print(f"\n2. unpaced: the loop took {stats.frames} frames in {wall:.2f} s "
              f"({stats.frames / wall:.0f} fps); recorded {fast.frames}, dropped "
              f"{recorder.facts()['dropped_total']}")
        fps = bare_writer(frames, 1500, tmp / "bare")
        print(f"   bare writer (serialize + write 3 messages, 640x480 JPEG): {fps:.0f} frames/s "
              f"= {fps / 30:.0f}x the camera's 30 fps")

        # 4. kill -9
        print("\n4. kill -9 at 30 fps: driven frames vs frames readable from the torn bag")
        for after in (2.0, 3.5, 5.0):
            driven, kept = kill_round(args.model, frames, tmp, after)
            print(f"   killed after {after:.1f} s: driven {driven}, readable {kept} "
                  f"({driven - kept} lost = {(driven - kept) / 30:.2f} s)")

        # 5. saliency
        from car_runtime.model.archive import open_model
        from car_runtime.saliency import OcclusionSaliency

        x = np.random.default_rng(0).integers(0, 255, (120, 160, 1)).astype(np.float32)
        with open_model(args.model) as bundle:
            print("\n5. saliency per frame (20 px patch, stride 10):")
            for batch in (55, 1):
                sal = OcclusionSaliency(bundle.model_path, bundle.metadata, batch=batch)
                for _ in range(12):
                    sal.heat(x)
                sal.seconds = sal.seconds[2:]
                print(f"   batch {batch:2d}: {sal.cost_line()}")


if __name__ == "__main__":
    main()
