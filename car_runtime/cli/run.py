"""``car-runtime run``: drive the car from a model.

Example (a laptop, no hardware)::

    car-runtime run --model models/demo-untrained-deep-ffc-discrete.tar.gz \\
        --camera car_runtime/data/footage/car-event-track-seq-160x120 --fps 15 \\
        --output record:drive.jsonl --arm
"""

from __future__ import annotations

import argparse


#: Printed when ``run`` starts disarmed: how to make the car drive.
DISARMED_HINT = ("disarmed: the wheels stay at neutral; to drive, start with --arm "
                 "(or `arm: true` in the --config file)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="drive: camera -> model -> PWM, with deadlines and a fail-safe",
        description="Drive the car from a model. Starts disarmed (neutral) unless --arm.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML settings (CLI flags override it)")
    p.add_argument("--model", metavar="PATH", help="model.tar.gz, model folder, or model.xml")
    p.add_argument("--camera", metavar="DEV|FILE|DIR",
                   help="camera index/path (default: auto-scan), video file or image folder")
    p.add_argument("--fps", type=float, help="pace an image folder at this rate")
    p.add_argument("--output", metavar="SPEC",
                   help="sysfs[:PWM_DIR] (default) | serial:URL | record:PATH")
    p.add_argument("--calibration", metavar="PATH",
                   help="calibration.json (default /opt/aws/deepracer/calibration.json)")
    p.add_argument("--max-speed-pct", type=float, dest="max_speed_pct",
                   help="throttle scale 0-100 (default 50, like the stock slider)")
    p.add_argument("--arm", action="store_true", default=None, help="start armed (drive at once)")
    p.add_argument("--deadline-ms", type=float, dest="deadline_ms",
                   help="neutral if no fresh command within this (default 100)")
    p.add_argument("--max-frame-age-ms", type=float, dest="max_frame_age_ms",
                   help="never act on a frame older than this (default 100)")
    p.add_argument("--stall-timeout-ms", type=float, dest="stall_timeout_ms",
                   help="a stage stuck this long -> neutral and exit 5 (default 2000)")
    p.add_argument("--device", help="OpenVINO device: CPU (default), GPU, AUTO")
    p.add_argument("--precision", choices=("f32", "f16", "bf16"), help="inference precision (f32)")
    p.add_argument("--preprocess", choices=("stock", "training", "fast"),
                   help="stock (default, identical to the car) | training | fast")
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    p.add_argument("--sac-squash", action="store_true", default=None, dest="sac_squash",
                   help="SAC models: tanh-squash outputs as in training (stock clips)")
    p.add_argument("--record", metavar="DIR", dest="record_dir",
                   help="flight recorder: each driving session becomes a rosbag2 in DIR "
                        "(see `car-runtime runs DIR`)")
    p.add_argument("--web", metavar="[HOST:]PORT",
                   help="serve the race-day cockpit (e.g. 8080; docs/web.md)")
    p.add_argument("--no-web", action="store_true",
                   help="no cockpit, even if the config turns it on (drive by hand over SSH)")
    p.add_argument("--web-password-file", dest="web_password_file", metavar="PATH",
                   help="cockpit password file (set it with `car-runtime web-password`)")
    p.add_argument("--status-interval", type=float, dest="status_interval_s",
                   help="seconds between status lines (0 = off; default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from car_runtime.runtime import SignalExit, StopSignals

    # From here to the exit, every signal that can end or stop the process leaves neutral.
    with StopSignals(keep=True) as signals:
        try:
            return _drive(args, signals)
        except SignalExit as stop:  # before the loop ran: start-up unwound, outputs at neutral
            _say(f"{stop}: stopped during start-up", err=True)
            return stop.code


def _say(line: str, *, err: bool = False) -> None:
    """Print one line; a terminal or pipe that went away is not an error here."""
    import sys

    try:
        print(line, file=sys.stderr if err else sys.stdout, flush=True)
    except (OSError, ValueError):
        pass


def _drive(args: argparse.Namespace, signals) -> int:
    import contextlib

    import cv2

    from car_runtime import recording
    from car_runtime.config import FIELD_NAMES, describe_max_speed, resolve
    from car_runtime.controls import DriveControls, ModelInfo, ModelLoader
    from car_runtime.errors import ConfigError
    from car_runtime.runtime import DriveLoop, drive_with_signals, open_actuator
    from car_runtime.vision.sources import open_source

    cfg = resolve(args.config, {k: getattr(args, k, None) for k in FIELD_NAMES})
    if getattr(args, "no_web", False):
        cfg = cfg.replace(web=None)
    if not cfg.model:
        raise ConfigError("no model given; pass --model PATH (or set model: in --config)")
    cv2.setNumThreads(1)  # OpenVINO owns the cores; OpenCV work here is tiny and single-frame

    # Outputs first: the car sits at neutral while the model loads and the camera opens.
    with open_actuator(cfg) as actuator, ModelLoader(cfg) as loader:
        loaded, pipeline = loader.load(cfg.model)
        _say(
            f"model {loaded.bundle.name}: {loaded.metadata.action_space_type}, "
            f"{loaded.metadata.action_space.size} outputs, ready in {loaded.load_s:.2f} s; "
            f"{describe_max_speed(cfg.max_speed_pct, 'run')}, deadline {cfg.deadline_ms:g} ms"
        )
        with open_source(cfg.camera, fps=cfg.fps, stereo=loaded.metadata.is_stereo) as source:
            loop = DriveLoop(
                source,
                pipeline,
                actuator,
                armed=cfg.arm,
                max_frame_age_s=cfg.max_frame_age_ms / 1e3,
                status_interval_s=cfg.status_interval_s,
            )
            controls = DriveControls(loop, loader, ModelInfo.of(loaded, cfg.model))
            del loaded, pipeline  # the loop owns the pipeline now (a swap frees it there)
            with contextlib.ExitStack() as adapters:
                # Adapters (flight recorder, web cockpit) attach here, through `controls` only.
                adapters.enter_context(recording.attach(controls, cfg))
                adapters.callback(actuator.close)  # its final neutral, recorded before the bag closes
                if cfg.web is not None:
                    from car_runtime import web

                    adapters.enter_context(web.serve(controls, cfg))
                _say(arming_line(controls, cfg))  # what is in force, adapters applied
                code = drive_with_signals(loop, stall_s=cfg.stall_timeout_ms / 1e3,
                                          signals=signals)
        s = loop.status()
        total = s["stages"].get("total", {})
        _say(
            f"{loop.exit_reason}: {s['frames']} frames, {loop.stats.driven} driven, "
            f"{s['stale']} stale, {s['deadline_misses']} deadline misses, "
            f"total p50 {total.get('p50_ms', 0):.2f} ms p99 {total.get('p99_ms', 0):.2f} ms"
        )
    if 0 < code < 128:  # a fault, not a requested stop: one line saying why
        reason = loop.exit_reason
        if actuator.close_outcome and "neutral:" not in reason:
            reason = f"{reason}; {actuator.close_outcome}"
        _say(f"error: {reason}", err=True)
    return code


def arming_line(controls, cfg) -> str:
    """The start line's arming state as it really is once the adapters are attached (the
    cockpit's deadman overrides ``arm: true``)."""
    if controls.want_armed:
        return "ARMED: the car drives"
    if cfg.web is not None:
        ignored = "; arm: true is ignored while the cockpit's deadman is on" if cfg.arm else ""
        return f"disarmed: START on the cockpit arms{ignored}"
    return DISARMED_HINT
