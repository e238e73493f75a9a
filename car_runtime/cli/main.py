"""``car-runtime`` entry point: dispatch to one module per subcommand.

Each module in :data:`COMMANDS` defines ``add_parser(subparsers)`` (cheap: no heavy imports) and
``run(args) -> int``. User errors (:class:`~car_runtime.errors.CarRuntimeError`) become one line
on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from car_runtime import __version__
from car_runtime.errors import CarRuntimeError

COMMANDS = ("run", "inspect", "bench", "replay", "runs", "calibrate", "neutral", "ros",
            "install_service", "web_password")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="car-runtime",
        description="Drive an AWS DeepRacer from a trained model (camera -> OpenVINO -> PWM).",
    )
    parser.add_argument("--version", action="version", version=f"car-runtime {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"car_runtime.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"car_runtime.cli.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except CarRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
