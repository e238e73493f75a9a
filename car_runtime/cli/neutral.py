"""``car-runtime neutral``: put the steering servo and ESC at neutral (each channel's mid) and exit.

Used by the service's stop path (``ExecStopPost``) and by hand after anything went wrong::

    car-runtime neutral
    car-runtime neutral --config /etc/car-runtime/config.yaml   # output + calibration from there
    car-runtime neutral --calibration ./calibration.json --output serial:/dev/ttyACM0

A missing or broken calibration file does not stop it: it then uses the stock defaults and
says so (a near-neutral pulse is better than whatever pulse was left behind).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("car_runtime.cli.neutral")


def add_parser(subparsers) -> None:
    from car_runtime.actuation.output import OUTPUT_GRAMMAR

    p = subparsers.add_parser(
        "neutral",
        help="write neutral (mid) pulses on both channels and exit",
        description=__doc__.replace("``", "").replace("::\n", ":\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="take output and calibration from this run config (flags override)")
    p.add_argument("--calibration", type=Path, default=None, metavar="PATH",
                   help="calibration file (default /opt/aws/deepracer/calibration.json)")
    p.add_argument("--output", default=None, metavar="SPEC", help=f"{OUTPUT_GRAMMAR} (default sysfs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from car_runtime.actuation.calibration import Calibration, load_calibration
    from car_runtime.actuation.output import Actuator, open_output
    from car_runtime.errors import CalibrationError, ConfigError

    if args.config is not None:
        from car_runtime.config import resolve

        try:  # a broken config must not block the stop path: fall back to the defaults
            cfg = resolve(args.config, {})
            args.output = args.output or cfg.output
            args.calibration = args.calibration or Path(cfg.calibration)
        except ConfigError as exc:
            log.warning("%s -- using output sysfs and the default calibration", exc)
    args.output = args.output or "sysfs"
    try:
        cal = load_calibration(args.calibration, missing="defaults")
    except CalibrationError as exc:
        log.warning("%s -- using the stock defaults for neutral", exc)
        cal = Calibration.defaults()
    with Actuator(open_output(args.output, cal), cal) as act:
        w = act.last_write
    print(f"neutral: servo {w.servo_ns} ns, motor {w.motor_ns} ns on {args.output}")
    return 0
