#!/usr/bin/env python3
"""Check ``car-runtime bench`` against OpenVINO's own ``benchmark_app`` on the same model.

Runs, alternately (``--repeat`` times each, so a busy spell on the machine hits both):

1. ``benchmark_app`` (ships in the openvino wheel) on the model's ``.pb``/``.xml`` (extracted from
   an archive to a temp folder), synchronous API, one request, with the very compile properties
   car-runtime uses (``-load_config``: PERFORMANCE_HINT, INFERENCE_NUM_THREADS,
   INFERENCE_PRECISION_HINT) and the batch-1 input shape (``-shape``); its median latency is read
   from its report;
2. car-runtime's bench in this process with the same settings, on the default frames (the
   bundled footage as 640x480 JPEGs).

Prints two ratios with their targets:

- ``infer p50 / benchmark_app median`` (target <= 1.25): our reused request with a zero-copy
  input adds little on top of OpenVINO's own loop;
- ``total p50 / (decode p50 + infer p50)`` (target <= 1.5): everything else per frame
  (preprocess, decide, actuate, timing) is small next to the two unavoidable stages.

Usage::

    python benchmarks/vs_benchmark_app.py --model models/demo-untrained-deep-ffc-discrete.tar.gz
    python benchmarks/vs_benchmark_app.py --model models/shallow_ffc_discrete_realsize --repeat 5

Exit status 0; with ``--strict`` 1 when a ratio misses its target; 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

INFER_TARGET = 1.25
TOTAL_TARGET = 1.5
_MEDIAN = re.compile(r"Median:\s*([0-9.]+)\s*(ms|us|ns|s)\b")
_TO_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "ns": 1e-6}


def benchmark_app_command() -> list[str]:
    """The ``benchmark_app`` console script beside this Python, else its entry point via -c."""
    exe = Path(sys.executable).parent / "benchmark_app"
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    found = shutil.which("benchmark_app")
    if found:
        return [found]
    return [sys.executable, "-c",
            "import sys; from openvino.tools.benchmark.main import main; "
            "sys.argv[0] = 'benchmark_app'; sys.exit(main())"]


def run_benchmark_app(model_file: Path, shape: tuple[int, ...], config: dict, device: str,
                      seconds: int, workdir: Path) -> float:
    """Run benchmark_app once; return its median latency in ms."""
    cfg = workdir / "config.json"
    cfg.write_text(json.dumps({device: {k: str(v) for k, v in config.items()}}))
    cmd = [
        *benchmark_app_command(),
        "-m", str(Path(model_file).resolve()),
        "-d", device,
        "-hint", config.get("PERFORMANCE_HINT", "LATENCY").lower(),
        "-load_config", str(cfg),
        "-shape", "[" + ",".join(str(d) for d in shape) + "]",
        "-api", "sync",
        "-nireq", "1",
        "-t", str(max(1, int(seconds))),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)  # model_file: absolute
    match = _MEDIAN.search(proc.stdout)
    if proc.returncode != 0 or not match:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise SystemExit(f"error: benchmark_app failed (exit {proc.returncode}):\n{tail}")
    return float(match.group(1)) * _TO_MS[match.group(2)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model.tar.gz, model folder, .pb or .xml")
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="inference threads for both (default: all cores)")
    parser.add_argument("--hint", choices=("latency", "throughput"), default="latency")
    parser.add_argument("--precision", choices=("f32", "f16", "bf16"), default="f32")
    parser.add_argument("--preprocess", choices=("stock", "training", "fast"), default="stock",
                        help="bench's preprocess mode (benchmark_app has none)")
    parser.add_argument("--time", type=int, default=10, dest="seconds",
                        help="whole seconds per benchmark_app run (default 10)")
    parser.add_argument("--frames-count", type=int, default=1000, dest="frames_count",
                        help="frames per bench run (default 1000)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3,
                        help="alternating runs of each (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a ratio misses its target")
    args = parser.parse_args(argv)

    from car_runtime import bench
    from car_runtime.errors import CarRuntimeError
    from car_runtime.model.archive import open_model
    from car_runtime.model.policy import compile_config

    settings = bench.BenchSettings(
        model=args.model, device=args.device, precision=args.precision, hint=args.hint,
        threads=args.threads, preprocess=args.preprocess, frames_count=args.frames_count,
        warmup=args.warmup,
    )
    try:
        settings.validate()
        bundle = open_model(args.model)
        loaded = bench.load(settings)
        supply = bench.open_supply(channels=loaded.policy.channels)
    except CarRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shape = loaded.policy.input.shape
    config = compile_config(args.device, args.precision, args.hint, args.threads)
    rounds: list[dict] = []
    runs = []
    try:
        with bundle, tempfile.TemporaryDirectory(prefix="vs-benchmark-app-") as tmp:
            for i in range(args.repeat):
                print(f"[{i + 1}/{args.repeat}] benchmark_app {args.seconds} s ...",
                      file=sys.stderr, flush=True)
                ba = run_benchmark_app(bundle.model_path, shape, config, args.device,
                                       args.seconds, Path(tmp))
                print(f"[{i + 1}/{args.repeat}] car-runtime bench {args.frames_count} frames ...",
                      file=sys.stderr, flush=True)
                run = bench.measure(loaded, replace(settings), supply)
                runs.append(run)
                st = run.stages
                rounds.append({
                    "benchmark_app_median_ms": ba,
                    "bare_infer_median_ms": bare_infer_ms(loaded.policy, args.frames_count),
                    "decode_p50_ms": st["decode"]["p50_ms"],
                    "infer_p50_ms": st["infer"]["p50_ms"],
                    "total_p50_ms": st["total"]["p50_ms"],
                })
    finally:
        supply.close()
        loaded.close()

    for r in rounds:  # each round's tools ran back to back, under the same machine load
        r["infer_ratio"] = r["infer_p50_ms"] / r["benchmark_app_median_ms"]
        r["total_ratio"] = r["total_p50_ms"] / (r["decode_p50_ms"] + r["infer_p50_ms"])
    infer_ratio = statistics.median(r["infer_ratio"] for r in rounds)
    total_ratio = statistics.median(r["total_ratio"] for r in rounds)
    ok_infer, ok_total = infer_ratio <= INFER_TARGET, total_ratio <= TOTAL_TARGET
    result = bench.merge(runs)
    if args.json:
        print(json.dumps({
            "model": args.model, "device": args.device, "threads": args.threads,
            "hint": args.hint, "precision": args.precision,
            "rounds": [{k: round(v, 4) for k, v in r.items()} for r in rounds],
            "bench": result.to_json(),
            "infer_ratio": round(infer_ratio, 3), "total_ratio": round(total_ratio, 3),
            "infer_ok": ok_infer, "total_ok": ok_total,
        }, indent=2))
    else:
        print(bench.format_table(result, 30.0))
        print()
        print(f"{'round':>5} {'benchmark_app':>14} {'bare infer':>11} {'bench decode':>13} "
              f"{'bench infer':>12} {'bench total':>12} {'infer ratio':>12} {'total ratio':>12}")
        for i, r in enumerate(rounds, 1):
            print(f"{i:>5} {r['benchmark_app_median_ms']:14.3f} {r['bare_infer_median_ms']:11.3f} "
                  f"{r['decode_p50_ms']:13.3f} {r['infer_p50_ms']:12.3f} "
                  f"{r['total_p50_ms']:12.3f} {r['infer_ratio']:12.2f} {r['total_ratio']:12.2f}")
        print("(ms: benchmark_app median, our request's median back to back, bench p50s)")
        print(f"infer p50 / benchmark_app median     = {infer_ratio:.2f}  (median of rounds; "
              f"target <= {INFER_TARGET}: {'ok' if ok_infer else 'MISSED'})")
        print(f"total p50 / (decode p50 + infer p50) = {total_ratio:.2f}  (median of rounds; "
              f"target <= {TOTAL_TARGET}: {'ok' if ok_total else 'MISSED'})")
    return 1 if args.strict and not (ok_infer and ok_total) else 0


def bare_infer_ms(policy, n: int) -> float:
    """Median of ``n`` back-to-back calls of our reused request (no pipeline around it): tells
    call-path overhead (vs benchmark_app) apart from the cost of sharing the cores with decode."""
    import time

    for _ in range(20):
        policy.infer()
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        policy.infer()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e6


if __name__ == "__main__":
    sys.exit(main())
