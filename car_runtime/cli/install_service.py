"""``car-runtime install-service``: install the systemd unit, the udev rule and a config.

Run once on the car, as root::

    sudo /opt/car-runtime/venv/bin/car-runtime install-service
    sudo nano /etc/car-runtime/config.yaml          # set model:
    sudo systemctl enable --now car-runtime

It checks everything first and changes nothing if a check fails: systemd runs here, you are
root, every destination is writable, and the stock ``deepracer-core`` is not enabled (it
fights for the camera and the PWM; the message says how to disable it). Then, in order:

- creates the system group and user ``car-runtime`` if missing;
- writes ``/etc/systemd/system/car-runtime.service`` with ``ExecStart`` pointing at *this*
  ``car-runtime`` (``ExecStopPost`` runs ``neutral --config``, so it follows the config);
- writes ``/etc/udev/rules.d/99-car-runtime.rules`` (PWM, GPIO and camera access);
- writes ``/etc/car-runtime/config.example.yaml``, and ``config.yaml`` from it if there is none
  (an existing config is never overwritten);
- links ``/usr/local/bin/car-runtime`` to this ``car-runtime``, so ``sudo car-runtime ...``
  works (sudo does not see the venv);
- reloads systemd and udev.

If a step fails, everything done before it is undone (files restored or removed, a created
user and group deleted) and the error says so; if an undo fails too, it names what is left.
``--dry-run`` prints the checks and the steps; ``--prefix DIR`` installs into a staging tree
(nothing outside it is touched; the account and reload commands are printed for you).

The web cockpit's password file (created if missing, never overwritten) is a
:class:`CreateIfMissing` step of :func:`make_plan`, after the config.
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
from typing import Callable, Union

UNIT_NAME = "car-runtime.service"
RULES_NAME = "99-car-runtime.rules"
CONFIG_EXAMPLE_NAME = "config.example.yaml"
SERVICE_USER = "car-runtime"
STOCK_UNIT = "deepracer-core.service"
LINK_PATH = "usr/local/bin/car-runtime"  # under the prefix
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
                   help="print the checks and what would be done, change nothing")
    p.add_argument("--exe", metavar="PATH",
                   help="car-runtime executable for the unit (default: the one running now)")
    p.set_defaults(func=run)


# -- steps -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WriteFile:
    path: Path
    content: str
    mode: int = 0o644

    def describe(self) -> str:
        return f"write {self.path} ({len(self.content.encode())} bytes)"


@dataclass(frozen=True)
class Link:
    path: Path
    target: str

    def describe(self) -> str:
        return f"link {self.path} -> {self.target}"


@dataclass(frozen=True)
class CreateIfMissing:
    """Create ``path`` by calling ``create(path)`` unless it exists (e.g. the web cockpit's
    password file, which must never be overwritten)."""

    path: Path
    create: Callable[[Path], object]
    what: str

    def describe(self) -> str:
        return f"create {self.what} {self.path}"


@dataclass(frozen=True)
class Run:
    """A command; ``undo`` reverses it when a later step fails (None: nothing to undo)."""

    argv: tuple[str, ...]
    undo: tuple[str, ...] | None = None

    def describe(self) -> str:
        return shlex.join(self.argv)


Step = Union[WriteFile, Link, CreateIfMissing, Run]


@dataclass(frozen=True)
class Plan:
    """Everything install-service will do, computed before anything is touched."""

    problems: tuple[str, ...]  # failed checks, each naming its fix: nothing is done if any
    steps: tuple[Step, ...]
    skipped: tuple[str, ...]  # human-readable notes on things left alone

    @property
    def files(self) -> tuple[tuple[Path, str], ...]:
        return tuple((s.path, s.content) for s in self.steps if isinstance(s, WriteFile))

    @property
    def commands(self) -> tuple[tuple[str, ...], ...]:
        return tuple(s.argv for s in self.steps if isinstance(s, Run))


# -- what to install -----------------------------------------------------------------------------
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


def account_steps() -> list[Run]:
    """Create the service's group and user, only those that are missing (undone on failure)."""
    steps: list[Run] = []
    try:
        grp.getgrnam(SERVICE_USER)
    except KeyError:
        steps.append(Run(("groupadd", "--system", SERVICE_USER), ("groupdel", SERVICE_USER)))
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        steps.append(Run((
            "useradd", "--system", "--gid", SERVICE_USER, "--no-create-home",
            "--home-dir", "/var/lib/car-runtime", "--shell", "/usr/sbin/nologin",
            "--comment", "car-runtime service", SERVICE_USER,
        ), ("userdel", SERVICE_USER)))
    return steps


def account_commands() -> list[tuple[str, ...]]:
    return [s.argv for s in account_steps()]


RELOAD_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("systemctl", "daemon-reload"),
    ("udevadm", "control", "--reload"),
    ("udevadm", "trigger", "--subsystem-match=pwm", "--subsystem-match=gpio",
     "--subsystem-match=video4linux"),
)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def preflight(prefix: Path, live: bool, destinations: list[Path], *, root: bool,
              systemd_running: bool) -> list[str]:
    """Every reason not to start, each with its fix (pure but for looking at the paths)."""
    problems = []
    if live and not systemd_running:
        problems.append("systemd is not running here (no /run/systemd/system), so the service "
                        "could not start; install on the car, or stage with --prefix DIR")
    if live and not root:
        problems.append("writing /etc and creating the service user needs root: run it with "
                        f"sudo {shlex.quote(sys.argv[0]) if sys.argv[0] else 'car-runtime'} "
                        "install-service")
    for dest in destinations:
        base = _nearest_existing(dest.parent)
        if not base.is_dir():
            problems.append(f"cannot write {dest}: {base} is not a folder; move it away")
        elif not os.access(base, os.W_OK):
            problems.append(f"cannot write {dest}: {base} is not writable"
                            + ("; run with sudo" if not root else ""))
    from car_runtime.doctor import Roots, unit_enabled

    if unit_enabled(Roots.under(prefix), STOCK_UNIT):
        problems.append(
            f"the stock stack ({STOCK_UNIT}) is enabled at boot and would fight car-runtime for "
            "the camera and the PWM: disable it first with `sudo systemctl disable --now "
            "deepracer-core` (undo: `sudo systemctl enable --now deepracer-core`)")
    return problems


def make_plan(prefix: Path, exe: str, *, live: bool = False, root: bool | None = None,
              systemd_running: bool | None = None) -> Plan:
    src = source_dir()
    etc = prefix / "etc"
    config_path = etc / "car-runtime" / "config.yaml"
    example = (src / CONFIG_EXAMPLE_NAME).read_text()
    steps: list[Step] = list(account_steps())  # run only when live; else printed
    steps += [
        WriteFile(etc / "systemd" / "system" / UNIT_NAME, render_unit((src / UNIT_NAME).read_text(), exe)),
        WriteFile(etc / "udev" / "rules.d" / RULES_NAME, (src / RULES_NAME).read_text()),
        WriteFile(etc / "car-runtime" / CONFIG_EXAMPLE_NAME, example),
    ]
    skipped = []
    if config_path.is_file():
        skipped.append(f"{config_path} exists: kept as it is")
    else:
        steps.append(WriteFile(config_path, example))
    # The web cockpit's password file goes here (after the config, before the reloads), as
    # CreateIfMissing(prefix / <web_password_file>, create, "web cockpit password file").
    link = prefix / LINK_PATH
    if Path(exe) == link or (link.is_symlink() and os.readlink(link) == exe):
        skipped.append(f"{link} already runs {exe}")
    elif link.exists() and not link.is_symlink():
        skipped.append(f"{link} exists and is not a link: left alone (sudo car-runtime runs it)")
    else:
        steps.append(Link(link, exe))
    steps += [Run(cmd) for cmd in RELOAD_COMMANDS]
    destinations = [s.path for s in steps if isinstance(s, (WriteFile, Link, CreateIfMissing))]
    problems = preflight(
        prefix, live, destinations,
        root=os.geteuid() == 0 if root is None else root,
        systemd_running=(Path("/run/systemd/system").is_dir() if systemd_running is None
                         else systemd_running),
    )
    return Plan(tuple(problems), tuple(steps), tuple(skipped))


# -- doing it, and undoing it ---------------------------------------------------------------------
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


def _created_dirs(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet (innermost first)."""
    missing = []
    p = path.parent
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


class Installer:
    """Runs the steps in order and remembers how to undo each one."""

    def __init__(self, run_commands: bool, echo: Callable[[str], None] = print) -> None:
        self.run_commands = run_commands
        self.echo = echo
        self.undo: list[tuple[str, Callable[[], None]]] = []  # (what is left if it fails, undo)

    def _remove_dirs(self, dirs: list[Path]) -> Callable[[], None]:
        def undo() -> None:
            for d in dirs:  # innermost first; only if still empty
                try:
                    d.rmdir()
                except OSError:
                    pass
        return undo

    def apply(self, step: Step) -> None:
        if isinstance(step, WriteFile):
            new_dirs = _created_dirs(step.path)
            old = step.path.read_bytes() if step.path.is_file() else None
            old_mode = step.path.stat().st_mode & 0o7777 if old is not None else step.mode
            write_atomic(step.path, step.content, step.mode)
            if old is None:
                undo_dirs = self._remove_dirs(new_dirs)
                self.undo.append((f"{step.path} (new)",
                                  lambda p=step.path: (p.unlink(missing_ok=True), undo_dirs())))
            else:
                self.undo.append((f"{step.path} (changed)", lambda p=step.path, o=old, m=old_mode:
                                  write_atomic(p, o.decode(), m)))
            self.echo(f"wrote {step.path} ({len(step.content.encode())} bytes)")
        elif isinstance(step, Link):
            new_dirs = _created_dirs(step.path)
            old = os.readlink(step.path) if step.path.is_symlink() else None
            step.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = step.path.with_name(f".{step.path.name}.new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(step.target)
            os.replace(tmp, step.path)

            def undo_link(p: Path = step.path, o: str | None = old) -> None:
                p.unlink(missing_ok=True)
                if o is not None:
                    p.symlink_to(o)
                self._remove_dirs(new_dirs)()
            self.undo.append((f"{step.path} (link)", undo_link))
            self.echo(f"linked {step.path} -> {step.target}")
        elif isinstance(step, CreateIfMissing):
            if step.path.exists():
                self.echo(f"kept {step.path} ({step.what} exists)")
                return
            new_dirs = _created_dirs(step.path)
            step.path.parent.mkdir(parents=True, exist_ok=True)
            step.create(step.path)
            undo_dirs = self._remove_dirs(new_dirs)
            self.undo.append((f"{step.path} (new)",
                              lambda p=step.path: (p.unlink(missing_ok=True), undo_dirs())))
            self.echo(f"created {step.what} {step.path}")
        else:
            text = step.describe()
            if not self.run_commands:
                self.echo(f"run yourself: sudo {text}")
                return
            self.echo(f"running: {text}")
            result = subprocess.run(step.argv, check=False)
            if result.returncode != 0:
                raise StepFailed(f"status {result.returncode}; run it by hand to see why")
            if step.undo is not None:
                def undo_cmd(argv: tuple[str, ...] = step.undo) -> None:
                    if subprocess.run(argv, check=False).returncode != 0:
                        raise StepFailed(f"`{shlex.join(argv)}` failed")
                self.undo.append((f"the effect of `{text}`", undo_cmd))

    def rollback(self) -> list[str]:
        """Undo in reverse order; return what could not be undone."""
        left = []
        for what, undo in reversed(self.undo):
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - report every leftover, keep undoing
                left.append(f"{what}: {exc}")
        self.undo.clear()
        return left


class StepFailed(Exception):
    pass


def execute(plan: Plan, *, run_commands: bool, echo: Callable[[str], None] = print) -> None:
    """Apply every step; on a failure undo the earlier ones and raise ConfigError saying what
    failed, and that everything was undone or exactly what is left."""
    from car_runtime.errors import ConfigError

    installer = Installer(run_commands, echo)
    for step in plan.steps:
        try:
            installer.apply(step)
        except (OSError, StepFailed, subprocess.SubprocessError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            done = len(installer.undo)
            left = installer.rollback()
            if left:
                raise ConfigError(f"{step.describe()} failed ({reason}); could not undo: "
                                  f"{'; '.join(left)}; remove those by hand") from None
            raise ConfigError(f"{step.describe()} failed ({reason}); the {done} earlier step(s) "
                              "were undone, nothing is left behind; fix that and run "
                              "install-service again") from None


def run(args: argparse.Namespace) -> int:
    from car_runtime.errors import ConfigError

    prefix = Path(args.prefix).resolve()
    live = prefix == Path("/")
    plan = make_plan(prefix, find_executable(args.exe), live=live)
    if plan.problems and not args.dry_run:
        count = f" ({len(plan.problems)} problems)" if len(plan.problems) > 1 else ""
        raise ConfigError(f"cannot install{count}, nothing was changed: "
                          + "; ".join(plan.problems))

    if args.dry_run:
        for problem in plan.problems:
            print(f"problem: {problem}")
        for step in plan.steps:
            if isinstance(step, Run):
                print(f"would run: sudo {step.describe()}")
            elif isinstance(step, WriteFile):
                print(f"would write {step.path} ({len(step.content.encode())} bytes)")
            else:
                print(f"would {step.describe()}")
        for note in plan.skipped:
            print(f"skipped: {note}")
        if plan.problems:
            print(f"{len(plan.problems)} problem(s): the real run would stop before changing "
                  "anything")
        return 0

    execute(plan, run_commands=live)
    for note in plan.skipped:
        print(f"skipped: {note}")
    config = prefix / "etc" / "car-runtime" / "config.yaml"
    print(f"next: set `model:` in {config}, check with `sudo car-runtime doctor`, then "
          "`sudo systemctl enable --now car-runtime`; follow it with `journalctl -u car-runtime -f`")
    return 0
