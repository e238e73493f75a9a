"""What the systemd service must be allowed to write, given its config, and the unit line that
allows it.

The unit runs with ``ProtectSystem=strict``: the file system is read-only for it except its
``StateDirectory`` (``/var/lib/car-runtime``) and the unit's ``ReadWritePaths=``.
``install-service`` renders that line from the config (:func:`write_paths`) and makes each
path the service's; ``doctor`` checks both. Pure functions of the config and the unit text.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Iterable, Sequence

from car_runtime.config import RunConfig

#: ``StateDirectory=car-runtime``: always writable for the service, its working folder.
STATE_DIR = "/var/lib/car-runtime"
#: Folders an install must never hand to the service (it would own part of the system).
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr",
    "/var", "/var/lib", "/var/log", "/var/tmp", "/opt/aws", "/opt/aws/deepracer",
    "/opt/car-runtime", "/etc/car-runtime",
})
#: Trees whose existing folders are the system's, whatever their depth.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
                "/run", "/sbin", "/sys", "/usr")
#: PrivateTmp=yes: the service's /tmp and /var/tmp are its own, emptied when it stops.
PRIVATE_TREES = ("/tmp", "/var/tmp")


@dataclass(frozen=True)
class WritePath:
    """One path the service writes: ``kind`` "dir" (it creates files in it) or "file" (it
    rewrites that file in place)."""

    what: str
    path: str
    kind: str
    key: str  # the config key it comes from


def write_paths(cfg: RunConfig) -> list[WritePath]:
    """The paths the service writes besides its state folder: with the cockpit on (``web``),
    ``models_dir`` (uploads, deletes) and the calibration file with its history folder
    (saves); with ``record_dir``, that folder (recordings)."""
    from car_runtime.actuation.calibration import history_dir

    out = []
    if cfg.web is not None:
        out.append(WritePath("models", cfg.models_dir, "dir", "models_dir"))
        out.append(WritePath("calibration", cfg.calibration, "file", "calibration"))
        out.append(WritePath("calibration history", str(history_dir(cfg.calibration)), "dir",
                             "calibration"))
    if cfg.record_dir:
        out.append(WritePath("recordings", cfg.record_dir, "dir", "record_dir"))
    return out


def is_under(path: str, base: str) -> bool:
    """``path`` is ``base`` or inside it (both absolute, compared as normalized text)."""
    path, base = posixpath.normpath(path), posixpath.normpath(base)
    return path == base or path.startswith(base.rstrip("/") + "/")


def path_problem(wp: WritePath, exe: str = "") -> str | None:
    """Why ``wp`` can never be given to the service, with the fix; None if it can. ``exe``: the
    car-runtime the unit runs (its venv must stay read-only for the service)."""
    if not posixpath.isabs(wp.path):
        return (f"{wp.key} {wp.path!r} is relative: the service needs an absolute path "
                f"(e.g. {wp.key}: /{wp.path.lstrip('./')})")
    if re.search(r"[\s\"'\\]", wp.path) or not wp.path.isprintable():
        return (f"{wp.key} {wp.path!r} has spaces, quotes or backslashes, which the unit's "
                "ReadWritePaths cannot list; use a path without them")
    p = posixpath.normpath(wp.path)
    if any(is_under(p, t) for t in PRIVATE_TREES):
        return (f"{wp.key} {p} is under /tmp: the service's /tmp is private "
                "(PrivateTmp) and emptied when it stops; use a folder elsewhere")
    if wp.kind == "dir" and p in SYSTEM_DIRS:
        return (f"{wp.key} {p} is a system folder; the service must not own it: set {wp.key} "
                "to a folder of its own (install-service creates it)")
    venv = posixpath.dirname(posixpath.dirname(exe)) if exe else ""
    if venv and (is_under(exe, p) or is_under(p, venv)):
        return (f"{wp.key} {p} holds car-runtime itself ({venv}); the service must not be able "
                f"to change its own program: set {wp.key} to another folder")
    return None


def takeover_problem(wp: WritePath, homes: Iterable[str] = ()) -> str | None:
    """Why the existing folder ``wp.path`` must not become the service's, with the fix (folders
    of the system's trees, and people's home folders)."""
    p = posixpath.normpath(wp.path)
    if any(is_under(p, t) for t in SYSTEM_TREES):
        return (f"{wp.key} {p} is a system folder; the service must not own it: set {wp.key} "
                "to a folder of its own (install-service creates it)")
    if p in {posixpath.normpath(h) for h in homes}:
        return (f"{wp.key} {p} is a home folder; the service must not own it: set {wp.key} to "
                "a folder of its own")
    return None


def render_read_write_paths(paths: Iterable[str]) -> str:
    """The unit line; ``-`` makes a path that does not exist harmless (skipped at start);
    ``%`` is doubled (systemd specifiers). Empty: a comment instead."""
    unique = list(dict.fromkeys(posixpath.normpath(p) for p in paths))
    if not unique:
        return "# ReadWritePaths: none needed by this config"
    return "ReadWritePaths=" + " ".join("-" + p.replace("%", "%%") for p in unique)


def unit_writable_paths(unit_text: str) -> list[str]:
    """Every path the unit lets the service write: ``ReadWritePaths=`` (an empty assignment
    resets the list, as systemd does) and ``StateDirectory=`` (under /var/lib)."""
    rw: list[str] = []
    state: list[str] = []
    section = ""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section != "Service" or "=" not in line or line.startswith(("#", ";")):
            continue
        key, value = (x.strip() for x in line.split("=", 1))
        if key not in ("ReadWritePaths", "StateDirectory"):
            continue
        target = rw if key == "ReadWritePaths" else state
        if not value:
            target.clear()
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            words = value.split()
        for w in words:
            w = w.lstrip("-+").replace("%%", "%")
            if key == "StateDirectory":
                w = posixpath.join("/var/lib", w.split(":", 1)[0])
            target.append(posixpath.normpath(w))
    return state + rw


def uncovered(paths: Sequence[WritePath], allowed: Sequence[str]) -> list[WritePath]:
    """The paths no allowed entry covers."""
    return [wp for wp in paths if not any(is_under(wp.path, a) for a in allowed)]


def service_path(prefix: str | os.PathLike, live_path: str) -> str:
    """``live_path`` inside an install prefix (``/`` for the live system)."""
    return os.path.join(os.fspath(prefix), live_path.lstrip("/"))
