"""``car-runtime bench``: how fast is this model on this car, stage by stage.

Examples::

    car-runtime bench --model model.tar.gz                    # bundled footage, table + verdict
    car-runtime bench --model model.tar.gz --camera /dev/video0 --plot bench.png
    car-runtime bench --model model.tar.gz --sweep            # threads x hint x preprocess
    car-runtime bench --model model.tar.gz --json > bench.json

The measurement lives in :mod:`car_runtime.bench`; this module only parses flags and prints.
"""

from __future__ import annotations

import argparse
import json


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _fps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"must be within 0..1000 fps, got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure load time and per-stage latency of a model on this machine",
        description=(
            "Run a model through the same stages as `run` (decode, preprocess, infer, decide, "
            "actuate) and report load time, first-decision time, p50/p90/p99/max per stage, "
            "throughput, CPU time and memory, with a verdict against the camera's frame period. "
            "Default frames: the bundled real car footage re-encoded in memory as 640x480 JPEGs, "
            "like the car's MJPEG camera delivers. The motor stays at neutral "
            "(--max-speed-pct 0) unless you ask otherwise."
        ),
    )
    p.add_argument("--model", required=True, metavar="PATH",
                   help="model.tar.gz, model folder, model.pb or model.xml")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--frames", metavar="DIR|VIDEO",
                     help="a folder of camera images or a video file (default: bundled footage)")
    src.add_argument("--camera", metavar="DEV",
                     help="a live camera: index or /dev/videoN (on the car)")
    p.add_argument("--frames-count", type=_positive_int, default=300, dest="frames_count",
                   metavar="N", help="frames measured after warm-up (default 300)")
    p.add_argument("--warmup", type=_count, default=30, metavar="W",
                   help="frames run before measuring (default 30)")
    p.add_argument("--device", default="CPU", help="OpenVINO device: CPU (default), GPU, AUTO")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="inference threads (default: all cores, as `run`)")
    p.add_argument("--hint", choices=("latency", "throughput"), default="latency",
                   help="OpenVINO performance hint (default latency, as `run`)")
    p.add_argument("--precision", choices=("f32", "f16", "bf16"), default="f32",
                   help="inference precision (default f32; the car's Atom has no bf16)")
    p.add_argument("--preprocess", choices=("stock", "training", "fast"), default="stock",
                   help="stock (default, identical to the car) | training | fast")
    p.add_argument("--sweep", action="store_true",
                   help="try threads 1..cores x hint latency/throughput x preprocess stock/fast "
                        "and recommend the fastest by p99 total")
    p.add_argument("--camera-fps", type=_fps, default=30.0, dest="camera_fps", metavar="FPS",
                   help="camera rate for the verdict (and a live --camera); default 30")
    p.add_argument("--output", default="record:", metavar="SPEC",
                   help="where actuate writes: record: (memory, default), record:PATH, "
                        "serial:URL or sysfs[:DIR] to include a real PWM write")
    p.add_argument("--calibration", metavar="PATH",
                   help="calibration.json for a real --output (default: the stock file, or "
                        "built-in defaults)")
    p.add_argument("--max-speed-pct", type=float, default=0.0, dest="max_speed_pct", metavar="PCT",
                   help="throttle scale 0-100 for the written commands (default 0: wheels steer, "
                        "the motor stays at neutral)")
    p.add_argument("--json", action="store_true",
                   help="print the result as JSON on stdout (no table)")
    p.add_argument("--plot", metavar="PATH.png", help="write a latency histogram per stage")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from car_runtime import bench
    from car_runtime.errors import require_module

    if not getattr(args, "verbose", False):  # keep the report clean (arming, font cache...)
        logging.getLogger("car_runtime").setLevel(logging.WARNING)

    settings = bench.BenchSettings(
        model=args.model,
        device=args.device,
        precision=args.precision,
        hint=args.hint,
        threads=args.threads,
        preprocess=args.preprocess,
        frames_count=args.frames_count,
        warmup=args.warmup,
        output=args.output,
        calibration=args.calibration,
        max_speed_pct=args.max_speed_pct,
    ).validate()
    if args.plot:  # fail before measuring, not after
        require_module("matplotlib", "--plot")
    source = {"frames": args.frames, "camera": args.camera, "camera_fps": args.camera_fps}

    if args.sweep:
        result = bench.sweep(settings, **source)
        if args.json:
            print(json.dumps(result.to_json(), indent=2))
        else:
            print(bench.format_sweep(result, args.camera_fps))
        if args.plot:
            written = bench.write_plot(result.best_for_run(), args.plot)
            if not args.json:
                print(f"plot      {written} (the recommended setting)")
        return 0

    one = bench.bench(settings, **source)
    if args.json:
        print(json.dumps(one.to_json(), indent=2))
    else:
        print(bench.format_table(one, args.camera_fps))
    if args.plot:
        written = bench.write_plot(one, args.plot)
        if not args.json:
            print(f"plot      {written}")
    return 0
