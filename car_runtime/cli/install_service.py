"""``car-runtime install-service``: install the systemd unit, the udev rule and a config.

Run once on the car, as root::

    sudo /opt/car-runtime/venv/bin/car-runtime install-service
    sudo nano /etc/car-runtime/config.yaml          # set model:
    sudo systemctl enable --now car-runtime

What it does (``--dry-run`` prints it instead):

- writes ``/etc/systemd/system/car-runtime.service`` with ``ExecStart`` pointing at *this*
  ``car-runtime`` (``ExecStopPost`` runs ``neutral --config``, so it follows the config);
- writes ``/etc/udev/rules.d/99-car-runtime.rules`` (PWM, GPIO and camera access);
- writes ``/etc/car-runtime/config.example.yaml``, and ``config.yaml`` from it if there is none
  (an existing config is never overwritten);
- creates the system group and user ``car-runtime`` if missing, then reloads systemd and udev.

``--prefix DIR`` installs under DIR (a staging tree): nothing outside it is touched and the
user/reload commands are printed for you to run.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "car-runtime.service"
RULES_NAME = "99-car-runtime.rules"
CONFIG_EXAMPLE_NAME = "config.example.yaml"
SERVICE_USER = "car-runtime"
#: The executable path written in the shipped unit; replaced by the one actually installed.
DEFAULT_EXE = "/opt/car-runtime/venv/bin/car-runtime"
DEFAULT_CALIBRATION = "/opt/aws/deepracer/calibration.json"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "install-service",
        help="install the systemd service, udev rule and example config (run with sudo)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prefix", default="/", metavar="DIR",
                   help="install under DIR instead of / (staging; no users or reloads)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be done, change nothing")
    p.add_argument("--exe", metavar="PATH",
                   help="car-runtime executable for the unit (default: the one running now)")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Plan:
    """Everything install-service will do, computed before anything is touched."""

    files: tuple[tuple[Path, str], ...]  # (destination, content)
    skipped: tuple[str, ...]  # human-readable notes on files left alone
    commands: tuple[tuple[str, ...], ...]  # account creation and reloads, in order


def source_dir() -> Path:
    """Where the shipped unit, rule and example config are (package data)."""
    from car_runtime import data

    if not (data.SYSTEMD / UNIT_NAME).is_file():
        from car_runtime.errors import ConfigError

        raise ConfigError(f"{data.SYSTEMD / UNIT_NAME} is missing from the installed package; "
                          "reinstall car-runtime (pip install --force-reinstall car-runtime-*.whl)")
    return data.SYSTEMD


def find_executable(explicit: str | None) -> str:
    """The ``car-runtime`` the unit should run: ``--exe``, next to this Python, or on PATH."""
    from car_runtime.errors import ConfigError

    candidates = [explicit] if explicit else [
        str(Path(sys.executable).parent / "car-runtime"),
        shutil.which("car-runtime") or "",
    ]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            path = os.path.abspath(c)
            if any(ch.isspace() for ch in path):
                raise ConfigError(f"the executable path {path!r} contains spaces, which the unit "
                                  "cannot run; install car-runtime in a path without spaces")
            return path
    raise ConfigError(
        f"cannot find the car-runtime executable{f' at {explicit}' if explicit else ''}; "
        "pass --exe /path/to/venv/bin/car-runtime"
    )


def render_unit(template: str, exe: str) -> str:
    """The shipped unit with the real executable (``neutral --config`` follows the config)."""
    lines = []
    for line in template.splitlines():
        if line.startswith(("ExecStart=", "ExecStopPost=")):
            line = line.replace(DEFAULT_EXE, exe)
        lines.append(line)
    return "\n".join(lines) + "\n"


def account_commands() -> list[tuple[str, ...]]:
    """Commands creating the service's group and user, only those that are missing."""
    commands: list[tuple[str, ...]] = []
    try:
        grp.getgrnam(SERVICE_USER)
    except KeyError:
        commands.append(("groupadd", "--system", SERVICE_USER))
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        commands.append((
            "useradd", "--system", "--gid", SERVICE_USER, "--no-create-home",
            "--home-dir", "/var/lib/car-runtime", "--shell", "/usr/sbin/nologin",
            "--comment", "car-runtime service", SERVICE_USER,
        ))
    return commands


RELOAD_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("systemctl", "daemon-reload"),
    ("udevadm", "control", "--reload"),
    ("udevadm", "trigger", "--subsystem-match=pwm", "--subsystem-match=gpio",
     "--subsystem-match=video4linux"),
)


def make_plan(prefix: Path, exe: str) -> Plan:
    src = source_dir()
    etc = prefix / "etc"
    config_path = etc / "car-runtime" / "config.yaml"
    example = (src / CONFIG_EXAMPLE_NAME).read_text()
    existing = config_path.read_text() if config_path.is_file() else None
    files = [
        (etc / "systemd" / "system" / UNIT_NAME,
         render_unit((src / UNIT_NAME).read_text(), exe)),
        (etc / "udev" / "rules.d" / RULES_NAME, (src / RULES_NAME).read_text()),
        (etc / "car-runtime" / CONFIG_EXAMPLE_NAME, example),
    ]
    skipped = []
    if existing is None:
        files.append((config_path, example))
    else:
        skipped.append(f"{config_path} exists: kept as it is")
    commands = account_commands() + list(RELOAD_COMMANDS)
    return Plan(tuple(files), tuple(skipped), tuple(commands))


def write_atomic(path: Path, content: str, mode: int = 0o644) -> None:
    """Write via a temp file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def run(args: argparse.Namespace) -> int:
    from car_runtime.errors import ConfigError

    prefix = Path(args.prefix).resolve()
    live = prefix == Path("/")
    plan = make_plan(prefix, find_executable(args.exe))
    is_root = os.geteuid() == 0
    run_commands = live and is_root and not args.dry_run

    verb = "would write" if args.dry_run else "wrote"
    for path, content in plan.files:
        if not args.dry_run:
            try:
                write_atomic(path, content)
            except PermissionError:
                raise ConfigError(f"cannot write {path}: permission denied; run with sudo (or "
                                  "--dry-run to see the steps)") from None
        print(f"{verb} {path} ({len(content.encode())} bytes)")
    for note in plan.skipped:
        print(f"skipped: {note}")

    for cmd in plan.commands:
        text = shlex.join(cmd)
        if not run_commands:
            print(f"{'would run' if args.dry_run else 'run yourself'}: sudo {text}")
            continue
        print(f"running: {text}")
        result = subprocess.run(cmd, check=False)
        if result.returncode != 0:
            raise ConfigError(f"`{text}` failed with status {result.returncode}; run it by hand "
                              "to see why, then re-run install-service")

    config = prefix / "etc" / "car-runtime" / "config.yaml"
    print(f"next: set `model:` in {config}, then `sudo systemctl enable --now car-runtime`; "
          "follow it with `journalctl -u car-runtime -f`")
    return 0
