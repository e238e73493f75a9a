#!/usr/bin/env python3
"""What the OpenVINO pin costs: inference p50 of both bundled models with the pinned OpenVINO
(this environment, 2025.4.x) against another OpenVINO (e.g. 2026.x) in a second venv, measured
side by side in one run.

Each interpreter runs this script as a child (``--measure``): it loads the model as ``run``
does (f32, latency hint, all cores), puts a real car frame through the stock preprocessing once,
then times bare ``Policy.infer()`` calls. The children take turns (A, B, A, B, ...) so drift in
the machine's load hits both; the report gives each version's median of the per-round p50s and
the ratio pinned / other (above 1: the pin is slower).

The second venv needs openvino (the version to compare), numpy, opencv-python-headless, pyyaml,
pyserial and tqdm; car_runtime comes from this checkout (PYTHONPATH)::

    python3 -m venv /tmp/ov2026 && /tmp/ov2026/bin/pip install 'openvino==2026.4.1' numpy \\
        opencv-python-headless pyyaml pyserial tqdm
    python benchmarks/openvino_pin.py --other /tmp/ov2026/bin/python [--rounds 5 --runs 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {
    "demo (deep, 10 actions)": REPO / "models" / "demo-untrained-deep-ffc-discrete.tar.gz",
    "shallow realsize (5 actions)": REPO / "models" / "shallow_ffc_discrete_realsize",
}


def measure(model: str, runs: int, warmup: int) -> dict:
    import cv2
    import numpy as np
    import openvino

    from car_runtime.data import FOOTAGE
    from car_runtime.model.policy import load_model
    from car_runtime.pipeline import Pipeline
    from car_runtime.timing import now_s
    from car_runtime.vision.frame import Frame

    cv2.setNumThreads(1)
    loaded = load_model(model, precision="f32")
    with loaded:
        pipeline = Pipeline(loaded.policy, preprocess="stock", max_speed_pct=100.0)
        jpeg = (FOOTAGE / "000042.jpg").read_bytes()
        pipeline.step(Frame(seq=0, t_capture_s=now_s(), images=(jpeg,) * loaded.policy.channels))
        infer = loaded.policy.infer
        for _ in range(warmup):
            infer()
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            infer()
            samples.append((time.perf_counter() - t0) * 1e3)
        return {"openvino": openvino.get_version().split("-")[0], "p50_ms": float(np.median(samples)),
                "p90_ms": float(np.percentile(samples, 90)),
                "kernels": loaded.policy.kernels()}


def child(python: str, model: Path, runs: int, warmup: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([python, __file__, "--measure", str(model), "--runs", str(runs),
                           "--warmup", str(warmup)], capture_output=True, text=True, env=env,
                          timeout=600)
    if proc.returncode != 0:
        sys.exit(f"{python} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--other", help="python of the venv with the OpenVINO to compare")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--measure", metavar="MODEL", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.runs, args.warmup)))
        return 0
    if not args.other:
        p.error("--other PYTHON is required")
    report = {}
    for name, model in MODELS.items():
        per = {"pinned": [], "other": []}
        versions = {}
        for _ in range(args.rounds):
            for label, python in (("pinned", sys.executable), ("other", args.other)):
                r = child(python, model, args.runs, args.warmup)
                per[label].append(r["p50_ms"])
                versions[label] = (r["openvino"], r["kernels"])
        pinned, other = statistics.median(per["pinned"]), statistics.median(per["other"])
        report[name] = {"pinned": {"openvino": versions["pinned"][0], "p50_ms": pinned},
                        "other": {"openvino": versions["other"][0], "p50_ms": other},
                        "ratio_pinned_over_other": pinned / other,
                        "kernels": {k: v[1] for k, v in versions.items()}}
        print(f"{name}: OpenVINO {versions['pinned'][0]} p50 {pinned:.3f} ms, "
              f"{versions['other'][0]} p50 {other:.3f} ms, ratio {pinned / other:.2f} "
              f"({args.rounds} rounds x {args.runs} infers each, taking turns)")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
