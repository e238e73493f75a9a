"""``car-runtime neutral``: put the steering servo and ESC at neutral (each channel's mid) and exit.

Used by the service's stop path (``ExecStopPost``) and by hand after anything went wrong::

    car-runtime neutral
    car-runtime neutral --config /etc/car-runtime/config.yaml   # output + calibration from there
    car-runtime neutral --calibration ./calibration.json --output serial:/dev/ttyACM0

It cannot be stopped by a bad file: from the config it takes only ``output`` and
``calibration`` (each one that is usable; from a config the YAML loader refuses, their plain
top-level ``key: value`` lines; otherwise the defaults: sysfs and the stock calibration path),
then each channel's calibrated mid if the
calibration file is valid, else the stock defaults. Files are read bounded, regular files only,
never waiting (see :mod:`car_runtime.safe_files`). Whatever it ignored is named on one
``warning:`` line and it exits 0. A PWM open or write that does not return within
``WRITE_TIMEOUT_S`` is abandoned for direct non-blocking writes to the duty files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

WRITE_TIMEOUT_S = 1.0


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


def settings_from_config(path: Path) -> tuple[str | None, str | None, list[str]]:
    """``output`` and ``calibration`` from a run config, each only if usable; plus what was
    ignored. Never raises for the file's content."""
    from car_runtime.actuation.output import parse_output_spec
    from car_runtime.config import load_yaml
    from car_runtime.errors import CarRuntimeError
    from car_runtime.safe_files import show

    ignored = []
    try:
        data = load_yaml(path)
    except CarRuntimeError as exc:
        data = _plain_lines(path)
        got = " and ".join(sorted(data)) or "nothing"
        ignored.append(f"config ({exc}) -- from its plain key: value lines it took {got}")
    output = data.get("output")
    if output is not None:
        try:
            if not isinstance(output, str):
                raise ValueError(f"not a string: {show(output)}")
            parse_output_spec(output)
        except (ValueError, CarRuntimeError) as exc:
            ignored.append(f"output in {path} ({exc})")
            output = None
    calibration = data.get("calibration")
    if calibration is not None and (not isinstance(calibration, str) or not calibration):
        ignored.append(f"calibration in {path} (not a path: {show(calibration)})")
        calibration = None
    return output, calibration, ignored


def _plain_lines(path: Path) -> dict[str, str]:
    """Best effort for a config the YAML loader refused: its top-level ``output:`` and
    ``calibration:`` lines with a plain value (the stop path must still find the right output)."""
    import re

    from car_runtime.config import MAX_CONFIG_BYTES
    from car_runtime.safe_files import read_small_file

    try:
        text = read_small_file(path, MAX_CONFIG_BYTES, head=True).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return {}
    found = {}
    pattern = re.compile(r"""^(output|calibration)\s*:\s*(["']?)([^\s"'#]+)\2\s*(#.*)?$""")
    for line in text.splitlines():
        m = pattern.match(line)
        if m and m.group(1) not in found:
            found[m.group(1)] = m.group(3)
    return found


def run(args: argparse.Namespace) -> int:
    from car_runtime.actuation.calibration import DEFAULT_CALIBRATION_PATH, Calibration, load_calibration
    from car_runtime.actuation.guardian import run_bounded
    from car_runtime.actuation.output import parse_output_spec
    from car_runtime.errors import CalibrationError

    ignored: list[str] = []
    output, cal_path = args.output, args.calibration
    if output is not None:
        parse_output_spec(output)  # a bad --output flag is the user's typo: error, exit 2
    if args.config is not None:
        c_output, c_cal, problems = settings_from_config(args.config)
        ignored += problems
        output = output or c_output
        cal_path = cal_path or (Path(c_cal) if c_cal else None)
    spec = parse_output_spec(output or "sysfs")
    try:
        cal = load_calibration(cal_path, missing="defaults")
    except CalibrationError as exc:
        ignored.append(f"calibration ({exc})")
        cal = Calibration.defaults()
    if ignored:
        print("warning: ignored " + "; ".join(ignored) + " -- using " + (
            f"output {spec}" if output else "output sysfs") + " and " + (
            "the stock calibration defaults" if cal == Calibration.defaults()
            else f"the calibration in {cal_path or DEFAULT_CALIBRATION_PATH}"),
            file=sys.stderr, flush=True)

    written: list = []
    errors: list[BaseException] = []

    def write() -> None:
        from car_runtime.actuation.output import Actuator, open_output

        try:
            with Actuator(open_output(spec, cal), cal) as act:
                written.append(act.last_write)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the main thread
            errors.append(exc)
            raise

    outcome = run_bounded(write, WRITE_TIMEOUT_S, "neutral")
    if errors:
        raise errors[0]
    if outcome != "ok":
        return _direct(spec, cal, outcome)
    w = written[0]
    print(f"neutral: servo {w.servo_ns} ns, motor {w.motor_ns} ns on {spec}")
    return 0


def _direct(spec, cal, outcome: str) -> int:
    """The normal open did not finish: write the duty files directly, non-blocking."""
    from car_runtime.actuation.guardian import NeutralTarget, summarize, write_targets
    from car_runtime.actuation.sysfs_pwm import find_chip

    if spec.kind != "sysfs":
        print(f"error: opening {spec} did not finish ({outcome}); check the device",
              file=sys.stderr)
        return 3
    chip = find_chip(Path(spec.target), spec.option("chip"))
    servo_mid, motor_mid = cal.neutral_ns()
    targets = [
        NeutralTarget("motor", "file", str(chip / f"pwm{spec.option('motor', '0')}/duty_cycle"),
                      str(motor_mid).encode()),
        NeutralTarget("servo", "file", str(chip / f"pwm{spec.option('servo', '1')}/duty_cycle"),
                      str(servo_mid).encode()),
    ]
    results = write_targets(targets)
    line = f"opening {spec} did not finish ({outcome}); wrote the duty files directly: " \
           f"{summarize(results)}"
    if all(v == "ok" for v in results.values()):
        print(f"warning: {line}", file=sys.stderr)
        print(f"neutral: servo {servo_mid} ns, motor {motor_mid} ns on {spec}")
        return 0
    print(f"error: {line}", file=sys.stderr)
    return 3
