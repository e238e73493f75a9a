#!/usr/bin/env python3
"""How much do ``--preprocess training`` and ``fast`` differ from ``stock``, on real footage?

For every bundled real frame (tests/data/footage) the three modes are run through the runtime's
own :class:`~car_runtime.vision.preprocess.Preprocessor` from the JPEG bytes a camera would send:

- ``car-event-track-seq-160x120``: 100 real-car JPEGs as stored (160x120: no resize, so the
  modes differ only in colour -> grey: BT.601 rounded vs truncating luma vs the JPEG's own Y);
- ``sim-demo-stills-640x480``: 3 simulator JPEGs as stored;
- ``car-foam-mat-track-640x480``: 6 real-car PNGs, JPEG-encoded at quality 90 (an MJPEG frame).

Printed per set and mode: mean and max absolute pixel difference to ``stock`` (0..255 grey), the
share of pixels that differ, and -- through the deep fixture model (tests/data/models) -- the
max absolute policy-output difference to ``stock`` and how often the chosen action (argmax)
changes. Ends with one JSON object of the same numbers. Deterministic (no timing).

Usage::

    python benchmarks/preprocess_modes.py [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
FOOTAGE = REPO / "tests" / "data" / "footage"
DEFAULT_MODEL = REPO / "tests" / "data" / "models" / "deep_ffc_discrete.tar.gz"
MODES = ("training", "fast")


def footage_sets() -> dict[str, list[bytes]]:
    def jpegs(folder: str | Path) -> list[bytes]:
        return [p.read_bytes() for p in sorted((FOOTAGE / folder).glob("*.jpg"))]

    sets = {
        "car-seq-160x120 (100 JPEG)": jpegs(REPO / "car_runtime/data/footage/car-event-track-seq-160x120"),
        "sim-stills-640x480 (3 JPEG)": jpegs("sim-demo-stills-640x480"),
    }
    real = []
    for p in sorted((FOOTAGE / "car-foam-mat-track-640x480").glob("*.png")):
        ok, buf = cv2.imencode(".jpg", cv2.imread(str(p), cv2.IMREAD_COLOR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        real.append(buf.tobytes())
    sets[f"car-mat-640x480 ({len(real)} JPEG q90)"] = real
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model for the output diff")
    args = parser.parse_args(argv)

    from car_runtime.model.policy import load_model
    from car_runtime.vision.preprocess import Preprocessor

    policy = load_model(args.model).policy  # f32
    h, w = policy.input_hw
    pre = {m: Preprocessor(m, h, w, 1) for m in ("stock", *MODES)}
    view = policy.camera_view(0)

    def model_input(mode: str, jpeg: bytes) -> tuple[np.ndarray, np.ndarray]:
        pre[mode]([jpeg], [view])
        x = view.copy()
        return x, policy.infer().copy()

    report: dict[str, dict] = {}
    print(f"model for output diffs: {args.model.name} (f32)")
    print(f"{'footage':30} {'mode':9} {'mean px':>8} {'max px':>7} {'px differ':>10} "
          f"{'max |dy|':>10} {'argmax changed':>15}")
    for name, frames in footage_sets().items():
        base = [model_input("stock", f) for f in frames]
        report[name] = {}
        for mode in MODES:
            px, dy, changed, differ = [], 0.0, 0, 0
            for f, (x0, y0) in zip(frames, base):
                x, y = model_input(mode, f)
                d = np.abs(x - x0)
                px.append(d)
                differ += int((d > 0).sum())
                dy = max(dy, float(np.abs(y - y0).max()))
                changed += int(np.argmax(y) != np.argmax(y0))
            allpx = np.concatenate([d.ravel() for d in px])
            row = {
                "mean_px": float(allpx.mean()), "max_px": float(allpx.max()),
                "share_px_differ": differ / allpx.size, "max_output_diff": dy,
                "argmax_changed": changed, "frames": len(frames),
            }
            report[name][mode] = row
            print(f"{name:30} {mode:9} {row['mean_px']:8.2f} {row['max_px']:7.0f} "
                  f"{row['share_px_differ']:10.1%} {dy:10.2e} {changed:>8}/{len(frames):<6}")
    print(json.dumps({"model": args.model.name, "vs_stock": report}, indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
