"""``car-runtime`` entry point: dispatch to one module per subcommand.

Each module in :data:`COMMANDS` defines ``add_parser(subparsers)`` (cheap: no heavy imports) and
``run(args) -> int``. User errors (:class:`~car_runtime.errors.CarRuntimeError`) become one line
on stderr and exit status 2, never a traceback. ``-v``/``--verbose`` works before or after the
subcommand. car_runtime logs at INFO (DEBUG with ``-v``); other libraries only from WARNING
(INFO with ``-v``). A closed stdout (``car-runtime inspect --json | head``) ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from car_runtime import __version__
from car_runtime.errors import CarRuntimeError

COMMANDS = ("run", "inspect", "bench", "replay", "calibrate", "neutral", "ros", "install_service",
            "doctor", "runs", "web_password")
VERBOSE_HELP = "debug logging (also other libraries' INFO messages)"
#: Exit status of a command whose reader went away (128 + SIGPIPE, as if killed by it).
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="car-runtime",
        description="Drive an AWS DeepRacer from a trained model (camera -> OpenVINO -> PWM).",
    )
    parser.add_argument("--version", action="version", version=f"car-runtime {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"car_runtime.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"car_runtime.cli.{name}":
                continue
            raise
        module.add_parser(sub)
    for command in sub.choices.values():  # `car-runtime run -v` as well as `car-runtime -v run`
        # SUPPRESS: absent after the subcommand, the top-level value stands.
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help=VERBOSE_HELP)
    return parser


def setup_logging(verbose: bool) -> None:
    """One format; car_runtime at INFO (DEBUG if verbose), everyone else at WARNING (INFO)."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("car_runtime").setLevel(logging.DEBUG if verbose else logging.INFO)


def _quiet_broken_pipe() -> int:
    """stdout's reader is gone: point stdout at /dev/null so the interpreter's final flush does
    not print a second BrokenPipeError, and exit like ``yes | head`` does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced by something without a descriptor
        pass
    return EXIT_BROKEN_PIPE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that left during the last lines is seen here, not at exit
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except CarRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
