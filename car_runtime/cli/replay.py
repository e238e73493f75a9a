"""``car-runtime replay``: run a model over recorded frames; see what the car would have done.

Example (runs on a fresh checkout)::

    car-runtime replay --model models/demo-untrained-deep-ffc-discrete.tar.gz \\
        car_runtime/data/footage/car-event-track-seq-160x120 \\
        -o replay.mp4 --log replay.jsonl --plot replay.png
"""

from __future__ import annotations

import argparse


def _position(text: str):
    from car_runtime.errors import ConfigError
    from car_runtime.replay import Position

    try:
        return Position.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a video / image folder / rosbag through a model, down to the PWM pulses",
        description=(
            "Run recorded frames through the same preprocess -> infer -> decide -> safety -> "
            "calibration path as the car (armed) and report, per frame, the action, the "
            "servo/ESC values and the pulses the car would have sent."
        ),
        epilog=(
            "INPUT: a video file (mp4/avi/mkv...), a folder of images (sorted by name, numbers "
            "as numbers) or a rosbag2 folder (sqlite3 or mcap). --start/--end take a frame "
            "number (120, the first frame is 0) or a time in the input with an s (4.5s); start "
            "is included, end is not."
        ),
    )
    p.add_argument("input", metavar="INPUT",
                   help="video file, image folder, rosbag2 folder, or a recorded session "
                        "(car-runtime run --record DIR; see `car-runtime runs DIR`)")
    p.add_argument("--model", metavar="PATH",
                   help="model.tar.gz, model folder, or model.xml (default for a car-runtime "
                        "recording: the recorded model, if it is at its recorded path)")
    p.add_argument("--calibration", metavar="PATH",
                   help="calibration.json for the pulses (default: "
                        "/opt/aws/deepracer/calibration.json if present, else the stock defaults)")
    p.add_argument("--max-speed-pct", type=float, metavar="P", dest="max_speed_pct",
                   help="throttle scale 0-100, like the car's max-speed slider (default 100; "
                        "with --verify or without --model: as recorded)")
    p.add_argument("--preprocess", choices=("stock", "training", "fast"),
                   help="stock (default, identical to the car) | training | fast")
    p.add_argument("--precision", choices=("f32", "f16", "bf16"),
                   help="inference precision (default f32; with --verify: as recorded)")
    p.add_argument("--fps", type=float, metavar="F",
                   help="frame rate of an image folder (default 30, as for run); overrides a video's/bag's")
    p.add_argument("--start", type=_position, metavar="N|Ts",
                   help="first frame to replay: frame number or seconds (e.g. 30 or 2.5s)")
    p.add_argument("--end", type=_position, metavar="N|Ts",
                   help="stop before this frame number or time (e.g. 90 or 6s)")
    p.add_argument("--topic", metavar="TOPIC",
                   help="rosbag image topic (default /camera_pkg/display_mjpeg, else the first "
                        "image topic)")
    p.add_argument("--log", metavar="PATH.jsonl",
                   help="write one JSON object per frame (frame, t, action_index, output, "
                        "steering_angle, speed, angle, throttle, servo_ns, motor_ns)")
    p.add_argument("-o", "--video", metavar="PATH.mp4",
                   help="write an annotated video (frame, model input, steering, throttle, "
                        "action probabilities)")
    p.add_argument("--plot", metavar="PATH.png",
                   help="write a plot of steering and throttle over time + action histogram")
    p.add_argument("--compare", metavar="OTHER_MODEL",
                   help="run a second model on every frame and report where decisions differ")
    p.add_argument("--compare-log", metavar="PATH.jsonl", dest="compare_log",
                   help="the --log of the --compare model")
    p.add_argument("--compare-tol", type=float, default=0.05, metavar="X", dest="compare_tol",
                   help="continuous models: angle/throttle differences above X count as "
                        "different (default 0.05; two discrete models must match exactly)")
    p.add_argument("--verify", action="store_true",
                   help="car-runtime recordings: recompute every recorded decision from the "
                        "recorded frame with the recorded settings; exit 1 if any differs")
    p.add_argument("--verify-tol", type=float, default=1e-4, metavar="X", dest="verify_tol",
                   help="--verify with a continuous model: angle/throttle differences up to X "
                        "count as identical (default 1e-4; discrete models must match exactly)")
    p.add_argument("--saliency", action="store_true",
                   help="draw an occlusion saliency heat map (what the model looked at) into "
                        "the -o video; costs ~165 extra forward passes per frame (stated at the end)")
    p.add_argument("--saliency-patch", type=int, default=20, metavar="PX", dest="saliency_patch",
                   help="occluding square, in model-input pixels (default 20)")
    p.add_argument("--saliency-stride", type=int, default=10, metavar="PX", dest="saliency_stride",
                   help="step between occlusions (default 10)")
    p.add_argument("--sac-squash", action="store_true", dest="sac_squash",
                   help="SAC models: tanh-squash outputs as in training (stock clips)")
    p.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="inference threads (default: all cores, like the car)")
    p.add_argument("--no-progress", action="store_false", dest="progress", default=None,
                   help="no progress bar (it is shown only on a terminal anyway)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    # FFmpeg prints its own line for an unreadable file ("moov atom not found") next to our
    # error; keep the message to our one line unless the user asked for FFmpeg's logging.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

    from car_runtime.replay import ReplayOptions, format_summary, replay

    opts = ReplayOptions(
        model=args.model,
        input=args.input,
        calibration=args.calibration,
        max_speed_pct=args.max_speed_pct,
        preprocess=args.preprocess,
        fps=args.fps,
        start=args.start,
        end=args.end,
        topic=args.topic,
        log=args.log,
        video=args.video,
        plot=args.plot,
        compare=args.compare,
        compare_log=args.compare_log,
        compare_tol=args.compare_tol,
        sac_squash=args.sac_squash,
        device=args.device,
        threads=args.threads,
        progress=args.progress,
        precision=args.precision,
        verify=args.verify,
        verify_tol=args.verify_tol,
        saliency=args.saliency,
        saliency_patch=args.saliency_patch,
        saliency_stride=args.saliency_stride,
    )
    summary = replay(opts, echo=lambda s: print(s, flush=True))
    both_discrete = all(m.labels is not None for m in summary.models)
    print(format_summary(summary, compare_tol=None if both_discrete else opts.compare_tol))
    written = [p for p in (args.log, args.compare_log, args.video, args.plot) if p]
    if written:
        print("wrote " + ", ".join(written))
    if summary.verify is not None and not summary.verify.ok:
        return 1
    return 0
