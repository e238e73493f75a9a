"""Replay speed as a multiple of real time, for 30 fps inputs (model load excluded).

    python benchmarks/replay_speed.py [--frames 1000] [--repeat 3]

Writes 30 fps mp4 clips (160x120 and 640x480) from the bundled real footage, then replays them
in-process through ``car_runtime.replay`` on the bundled demo model and the real-size shallow
model: log only, and log + annotated video. Targets: log only >= 20x, with video >= 5x.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import cv2

from car_runtime.replay import ReplayOptions, replay

ROOT = Path(__file__).resolve().parents[1]
FOOTAGE = ROOT / "car_runtime/data/footage/car-event-track-seq-160x120"
MODELS = {
    "demo (deep, 4.9 MB)": ROOT / "models/demo-untrained-deep-ffc-discrete.tar.gz",
    "real-size shallow (23 MB)": ROOT / "models/shallow_ffc_discrete_realsize",
}


def write_clip(path: Path, size: tuple[int, int], frames: int) -> Path:
    src = [cv2.imread(str(p)) for p in sorted(FOOTAGE.glob("*.jpg"))]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
    for i in range(frames):
        img = src[i % len(src)]
        out.write(img if img.shape[1::-1] == size else cv2.resize(img, size))
    out.release()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = {f"{w}x{h}": write_clip(tmp / f"clip{w}.mp4", (w, h), args.frames)
                 for w, h in ((160, 120), (640, 480))}
        print(f"{'model':27s} {'input':8s} {'mode':10s} x real time (median of {args.repeat})")
        for name, model in MODELS.items():
            for clip_name, clip in clips.items():
                for mode in ("log", "log+video"):
                    runs = []
                    for _ in range(args.repeat):
                        opts = ReplayOptions(
                            model=str(model), input=str(clip), log=str(tmp / "l.jsonl"),
                            video=str(tmp / "o.mp4") if mode == "log+video" else None,
                            progress=False,
                        )
                        runs.append(replay(opts, echo=lambda _s: None).realtime_x)
                    print(f"{name:27s} {clip_name:8s} {mode:10s} {statistics.median(runs):6.1f}x"
                          f"  (runs {', '.join(f'{x:.1f}' for x in runs)})", flush=True)


if __name__ == "__main__":
    main()
