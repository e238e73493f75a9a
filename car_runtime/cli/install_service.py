"""``car-runtime install-service``: install the systemd unit, the udev rule and a config, and
give the service what its config needs to write.

Run once on the car, as root::

    sudo /opt/car-runtime/venv/bin/car-runtime install-service
    sudo nano /etc/car-runtime/config.yaml          # set model:
    sudo systemctl enable --now car-runtime

It checks everything first and changes nothing if a check fails: systemd runs here, you are
root, every destination is writable, the stock ``deepracer-core`` is not enabled (it fights for
the camera and the PWM; the message says how to disable it), the config is valid and its
folders can be the service's. Then, in order:

- creates the system group and user ``car-runtime`` if missing;
- writes ``/etc/systemd/system/car-runtime.service`` with ``ExecStart`` pointing at *this*
  ``car-runtime`` (``ExecStopPost`` runs ``neutral --config``, so it follows the config) and
  ``ReadWritePaths=`` listing what the config makes it write (below);
- writes ``/etc/udev/rules.d/99-car-runtime.rules`` (PWM, GPIO and camera access);
- writes ``/etc/car-runtime/config.example.yaml``, and ``config.yaml`` from it if there is none
  (an existing config is never overwritten);
- makes the state folder ``/var/lib/car-runtime``, the recordings folder (``record_dir``) and,
  with the cockpit on (``web``), the models folder (``models_dir``) the service's (created,
  or given to it), lets it rewrite the calibration file in place (group ``car-runtime``,
  group-writable; created with the stock defaults if missing, like the stock stack does) with
  its history folder, and creates the cockpit's password file if missing (the password is
  printed once, at the end);
- links ``/usr/local/bin/car-runtime`` to this ``car-runtime``, so ``sudo car-runtime ...``
  works (sudo does not see the venv);
- reloads systemd and udev.

If a step fails, everything done before it is undone (files restored or removed, owners and
modes restored, a created user and group deleted) and the error says so; if an undo fails too,
it names what is left. ``--dry-run`` prints the checks and the steps; ``--prefix DIR`` installs
into a staging tree (nothing outside it is touched; the account, ownership and reload commands
are printed for you to run on the car).
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

from car_runtime.service_access import STATE_DIR, WritePath

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
    password file, which must never be overwritten). ``secret``: what ``create`` returns is
    shown once, at the end of the install."""

    path: Path
    create: Callable[[Path], object]
    what: str
    secret: bool = False
    owner: str | None = None  # a user ``create`` gives the file to; staged without it: say so
    live: str = ""  # the path on the car, for that message

    def describe(self) -> str:
        return f"create {self.what} {self.path}"


@dataclass(frozen=True)
class ServiceDir:
    """Make folder ``path`` the service user's: create it (0755), or give an existing one the
    user may not write to it (owner changed, u+rwx). ``live`` is the path on the car."""

    path: Path
    live: str
    what: str
    user: str

    def describe(self) -> str:
        return f"make {self.what} folder {self.path} the {self.user} user's"


@dataclass(frozen=True)
class ServiceFile:
    """Let the service user rewrite file ``path`` in place: its group becomes the user's, with
    g+rw (the owner stays). Created by ``create(path)`` first if missing."""

    path: Path
    live: str
    what: str
    user: str
    create: Callable[[Path], object]

    def describe(self) -> str:
        made = "" if self.path.exists() else " (missing: the stock defaults first)"
        return f"let the {self.user} user rewrite {self.what} file {self.path}{made}"


@dataclass(frozen=True)
class Run:
    """A command; ``undo`` reverses it when a later step fails (None: nothing to undo)."""

    argv: tuple[str, ...]
    undo: tuple[str, ...] | None = None

    def describe(self) -> str:
        return shlex.join(self.argv)


Step = Union[WriteFile, Link, CreateIfMissing, ServiceDir, ServiceFile, Run]


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


def render_unit(template: str, exe: str, write_paths: list[str] | None = None) -> str:
    """The shipped unit with the real executable (``neutral --config`` follows the config)
    and, given ``write_paths``, its ``ReadWritePaths=`` line listing them."""
    from car_runtime.service_access import render_read_write_paths

    lines = []
    for line in template.splitlines():
        if line.startswith(("ExecStart=", "ExecStopPost=")):
            line = line.replace(DEFAULT_EXE, exe)
        elif write_paths is not None and line.startswith(("ReadWritePaths=", "# ReadWritePaths:")):
            line = render_read_write_paths(write_paths)
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
     "--subsystem-match=video4linux", "--subsystem-match=i2c-dev"),
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


def service_config(path: Path) -> tuple[Any, str | None]:
    """The config the service will run with, or None and the problem with it."""
    from car_runtime.config import from_mapping, load_yaml
    from car_runtime.errors import CarRuntimeError

    try:
        return from_mapping(load_yaml(path)), None
    except CarRuntimeError as exc:
        return None, (f"{exc}; the service's writable folders come from {path}: fix it, then "
                      "run install-service again")


def _calibration_problem(wp: WritePath, path: Path) -> str | None:
    """An existing calibration path must be a valid calibration file (never hand the service
    some other file by mistake)."""
    from car_runtime.actuation.calibration import load_calibration
    from car_runtime.errors import CalibrationError

    if path.is_symlink():
        return (f"calibration {wp.path} is a symbolic link; set calibration: to the file itself "
                "(root tools write it, so it must not lead into a folder the service may write)")
    if not path.exists():
        return None
    try:
        load_calibration(path)
    except CalibrationError as exc:
        return (f"{exc}; install-service lets the service rewrite only a valid calibration "
                "file")
    return None


def service_steps(prefix: Path, cfg: Any, user: str, exe: str) -> tuple[list[Step], list[str]]:
    """The steps that give the service what ``cfg`` makes it write, and the problems that
    stop the install (each with its fix)."""
    from car_runtime.service_access import path_problem, service_path, takeover_problem, write_paths

    steps: list[Step] = []
    problems: list[str] = []
    paths = [WritePath("state", STATE_DIR, "dir", "StateDirectory"), *write_paths(cfg)]
    account = _account(user)
    homes = _home_dirs(user)
    for wp in paths:
        problem = path_problem(wp, exe)
        if problem:
            problems.append(problem)
            continue
        target = Path(service_path(prefix, wp.path))
        if wp.kind == "file":
            problem = _calibration_problem(wp, target)
            if problem:
                problems.append(problem)
            else:
                steps.append(ServiceFile(target, wp.path, wp.what, user, _default_calibration))
            continue
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            problems.append(f"{wp.key} {wp.path} is not a folder; move it away or set {wp.key} "
                            "to a folder")
            continue
        if target.is_dir() and (account is None or target.stat().st_uid != account[0]):
            problem = takeover_problem(wp, homes)
            if problem:
                problems.append(problem)
                continue
        steps.append(ServiceDir(target, wp.path, wp.what, user))
    if cfg.web is not None:
        steps.append(CreateIfMissing(Path(service_path(prefix, cfg.web_password_file)),
                                     _password_creator(user), "web cockpit password file",
                                     secret=True, owner=user, live=cfg.web_password_file))
    return steps, problems


def _default_calibration(path: Path) -> None:
    from car_runtime.actuation.calibration import Calibration, save_calibration

    save_calibration(Calibration.defaults(), path)


def _password_creator(user: str) -> Callable[[Path], str]:
    def create(path: Path) -> str:
        from car_runtime.web.auth import create_password_file

        return create_password_file(path, owner=user if _account(user) else None)
    return create


def _account(user: str) -> tuple[int, int] | None:
    """``(uid, primary gid)`` of ``user``, or None if it does not exist (yet)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _home_dirs(except_user: str) -> set[str]:
    return {os.path.normpath(e.pw_dir) for e in pwd.getpwall()
            if e.pw_name != except_user and e.pw_dir not in ("", "/", "/nonexistent")}


def make_plan(prefix: Path, exe: str, *, live: bool = False, root: bool | None = None,
              systemd_running: bool | None = None, user: str = SERVICE_USER) -> Plan:
    from car_runtime.service_access import write_paths

    src = source_dir()
    etc = prefix / "etc"
    config_path = etc / "car-runtime" / "config.yaml"
    example = (src / CONFIG_EXAMPLE_NAME).read_text()
    # The settings the service will run with: the config in place, else the example it gets.
    cfg, config_problem = service_config(config_path if config_path.is_file()
                                         else src / CONFIG_EXAMPLE_NAME)
    steps: list[Step] = list(account_steps())  # run only when live; else printed
    unit = render_unit((src / UNIT_NAME).read_text(), exe,
                       [wp.path for wp in write_paths(cfg)] if cfg is not None else None)
    steps += [
        WriteFile(etc / "systemd" / "system" / UNIT_NAME, unit),
        WriteFile(etc / "udev" / "rules.d" / RULES_NAME, (src / RULES_NAME).read_text()),
        WriteFile(etc / "car-runtime" / CONFIG_EXAMPLE_NAME, example),
    ]
    skipped = []
    if config_path.is_file():
        skipped.append(f"{config_path} exists: kept as it is")
    else:
        steps.append(WriteFile(config_path, example))
    problems = [config_problem] if config_problem else []
    if cfg is not None:
        more, path_problems = service_steps(prefix, cfg, user, exe)
        steps += more
        problems += path_problems
    link = prefix / LINK_PATH
    if Path(exe) == link or (link.is_symlink() and os.readlink(link) == exe):
        skipped.append(f"{link} already runs {exe}")
    elif link.exists() and not link.is_symlink():
        skipped.append(f"{link} exists and is not a link: left alone (sudo car-runtime runs it)")
    else:
        steps.append(Link(link, exe))
    steps += [Run(cmd) for cmd in RELOAD_COMMANDS]
    destinations = [s.path for s in steps
                    if isinstance(s, (WriteFile, Link, CreateIfMissing, ServiceDir, ServiceFile))]
    problems += preflight(
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
        self.secrets: list[tuple[str, Path, object]] = []  # (what, path, value) to show once

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
            undo_dirs = self._remove_dirs(new_dirs)
            try:
                value = step.create(step.path)
            except BaseException:
                undo_dirs()
                raise
            self.undo.append((f"{step.path} (new)",
                              lambda p=step.path: (p.unlink(missing_ok=True), undo_dirs())))
            self.echo(f"created {step.what} {step.path}")
            if step.owner is not None and _account(step.owner) is None:
                self.echo(f"on the car: sudo chown {step.owner}:{step.owner} "
                          f"{step.live or step.path}")
            if step.secret:
                self.secrets.append((step.what, step.path, value))
        elif isinstance(step, ServiceDir):
            self._service_dir(step)
        elif isinstance(step, ServiceFile):
            self._service_file(step)
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

    def _service_dir(self, step: ServiceDir) -> None:
        from car_runtime.doctor import Identity, may_search, may_write

        account = self._service_account(step.user)
        path = step.path
        if path.is_dir() and not path.is_symlink():
            st = path.stat()
            who = Identity.service(step.user)
            if who is not None and may_write(st, who) and may_search(st, who):
                self.echo(f"kept {step.what} folder {path} (the {step.user} user may write it)")
                return
            if account is None:
                self.echo(f"on the car: sudo chown {step.user}:{step.user} {step.live}")
                return
            os.chown(path, *account)
            os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)
            self.undo.append((f"{path} (owner {_owner(st)}, mode {stat.S_IMODE(st.st_mode):o})",
                              lambda p=path, o=st: (os.chown(p, o.st_uid, o.st_gid),
                                                    os.chmod(p, stat.S_IMODE(o.st_mode)))))
            self.echo(f"gave {step.what} folder {path} to {step.user} (was {_owner(st)} "
                      f"{stat.S_IMODE(st.st_mode):o})")
            return
        new_dirs = [*_created_dirs(path)]
        for d in reversed(new_dirs):  # parents: root's, 0755 whatever the umask
            d.mkdir()
            os.chmod(d, 0o755)
        undo_parents = self._remove_dirs(new_dirs)
        try:
            path.mkdir()
            os.chmod(path, 0o755)
        except BaseException:
            undo_parents()
            raise
        self.undo.append((f"{path} (new)", lambda p=path: (p.rmdir(), undo_parents())))
        if account is None:
            self.echo(f"created {step.what} folder {path}; on the car: sudo chown "
                      f"{step.user}:{step.user} {step.live}")
            return
        os.chown(path, *account)
        self.echo(f"created {step.what} folder {path} ({step.user}, 755)")

    def _service_file(self, step: ServiceFile) -> None:
        from car_runtime.doctor import Identity, may_read, may_write

        account = self._service_account(step.user)
        path = step.path
        if not path.exists():
            new_dirs = _created_dirs(path)
            undo_dirs = self._remove_dirs(new_dirs)
            try:
                step.create(path)
            except BaseException:
                path.unlink(missing_ok=True)
                undo_dirs()
                raise
            self.undo.append((f"{path} (new)",
                              lambda p=path: (p.unlink(missing_ok=True), undo_dirs())))
            self.echo(f"created {step.what} file {path} (the stock defaults)")
        st = path.stat()
        who = Identity.service(step.user)
        if who is not None and may_write(st, who) and may_read(st, who):
            self.echo(f"kept {step.what} file {path} (the {step.user} user may rewrite it)")
            return
        if account is None:
            self.echo(f"on the car: sudo chgrp {step.user} {step.live} && sudo chmod g+rw "
                      f"{step.live}")
            return
        os.chown(path, -1, account[1])
        os.chmod(path, stat.S_IMODE(st.st_mode) | 0o060)
        self.undo.append((f"{path} (group and mode)",
                          lambda p=path, o=st: (os.chown(p, -1, o.st_gid),
                                                os.chmod(p, stat.S_IMODE(o.st_mode)))))
        self.echo(f"let {step.user} rewrite {step.what} file {path} (group {step.user}, mode "
                  f"{stat.S_IMODE(st.st_mode) | 0o060:o}; owner {_owner(st).split(':')[0]} kept)")

    def _service_account(self, user: str) -> tuple[int, int] | None:
        account = _account(user)
        if account is None and self.run_commands:
            raise StepFailed(f"the user {user} does not exist")
        return account

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


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


def execute(plan: Plan, *, run_commands: bool,
            echo: Callable[[str], None] = print) -> list[tuple[str, Path, object]]:
    """Apply every step; on a failure undo the earlier ones and raise ConfigError saying what
    failed, and that everything was undone or exactly what is left. Returns the secrets made
    (what, path, value), for the caller to show once."""
    from car_runtime.errors import CarRuntimeError, ConfigError

    installer = Installer(run_commands, echo)
    for step in plan.steps:
        try:
            installer.apply(step)
        except (OSError, StepFailed, subprocess.SubprocessError, CarRuntimeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            done = len(installer.undo)
            left = installer.rollback()
            if left:
                raise ConfigError(f"{step.describe()} failed ({reason}); could not undo: "
                                  f"{'; '.join(left)}; remove those by hand") from None
            raise ConfigError(f"{step.describe()} failed ({reason}); the {done} earlier step(s) "
                              "were undone, nothing is left behind; fix that and run "
                              "install-service again") from None
    return installer.secrets


def run(args: argparse.Namespace) -> int:
    from car_runtime.errors import ConfigError

    prefix = Path(args.prefix).resolve()
    live = prefix == Path("/")
    plan = make_plan(prefix, find_executable(args.exe), live=live,
                     user=getattr(args, "user", SERVICE_USER))
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

    secrets = execute(plan, run_commands=live)
    for note in plan.skipped:
        print(f"skipped: {note}")
    config = prefix / "etc" / "car-runtime" / "config.yaml"
    print(f"next: set `model:` in {config}, check with `sudo car-runtime doctor`, then "
          "`sudo systemctl enable --now car-runtime`; follow it with `journalctl -u car-runtime -f`")
    for what, path, value in secrets:
        print(f"\nThe {what} {path} is new. The cockpit password is:\n\n    {value}\n\n"
              "It is shown only this once (the file holds a salted hash). Change it with "
              "`sudo car-runtime web-password`.")
    return 0
