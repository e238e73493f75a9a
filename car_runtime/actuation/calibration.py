"""Servo/ESC calibration: the typed record, the one value -> pulse conversion, stock JSON I/O.

The file is the stock one (``/opt/aws/deepracer/calibration.json``)::

    {"Calibration": {"Servo": {"min": 1200000, "mid": 1450000, "max": 1700000, "polarity": 1},
                     "Motor": {"min": 1311000, "mid": 1446000, "max": 1603500, "polarity": -1},
                     "version": 1}}

Values are PWM high times in ns at a 20 ms period. Reading validates everything
(``min < mid < max``, all within the period, polarity +-1) and refuses a bad file with a
:class:`CalibrationError` naming the fix. Writing is atomic (temp file in the same directory,
fsync, ``os.replace``, fsync of the directory; a replaced file keeps its owner, group and
mode) and the replaced version is kept in a small history next to the file
(``.<name>.history/``) that ``car-runtime calibrate`` can list/restore.

A writer that may write the file but not its folder (the systemd service: the stock folder
``/opt/aws/deepracer`` is root's, ``install-service`` makes only the file group-writable and
the history folder the service's) rewrites the file in place instead, like the stock's own
writer: the new text is padded with spaces to at least the old length, written at offset 0,
then the file is cut to length, so a process killed at any point leaves valid JSON.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import math
import os
import secrets
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from car_runtime.errors import CalibrationError

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION_PATH = Path("/opt/aws/deepracer/calibration.json")
PERIOD_NS = 20_000_000
CALIBRATION_VERSION = 1
HISTORY_KEEP = 10
MAX_CALIBRATION_BYTES = 64 * 1024  # the stock file is ~300 bytes

#: Stock web-console units (webserver_pkg): ``ns = ui * factor + PWM_OFFSET_NS``.
PWM_OFFSET_NS = 1_500_000
CONSOLE_NS_PER_UNIT = {"servo": 10_000, "motor": 4_500}

CHANNELS = ("servo", "motor")
_STOCK_KEYS = {"servo": "Servo", "motor": "Motor"}
_FIELDS = ("min", "mid", "max", "polarity")


def clamp_unit(value: float) -> tuple[float, bool]:
    """``value`` limited to [-1, 1]; non-finite -> 0.0. Returns ``(value, adjusted)``."""
    if value != value or value in (math.inf, -math.inf):  # NaN or +-inf (also for ints)
        return 0.0, True
    if value > 1:
        return 1.0, True
    if value < -1:
        return -1.0, True
    return value, False


@dataclass(frozen=True)
class ChannelCalibration:
    """One channel (steering servo or ESC): pulse widths in ns and direction."""

    min_ns: int
    mid_ns: int
    max_ns: int
    polarity: int

    def __post_init__(self) -> None:
        for name in ("min_ns", "mid_ns", "max_ns", "polarity"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise CalibrationError(f"{name} must be an integer, got {v!r}")
        if self.polarity not in (-1, 1):
            raise CalibrationError(f"polarity must be 1 or -1, got {self.polarity}")
        if not 0 <= self.min_ns < self.mid_ns < self.max_ns <= PERIOD_NS:
            raise CalibrationError(
                f"need 0 <= min < mid < max <= {PERIOD_NS} ns, got "
                f"min={self.min_ns} mid={self.mid_ns} max={self.max_ns}"
            )

    def to_duty_ns(self, value: float) -> tuple[int, bool]:
        """Stock servo_pkg formula: ``mid + v*pol*(max-mid if v*pol > 0 else mid-min)``, truncated.

        Returns ``(duty_ns, adjusted)``; ``adjusted`` is True when ``value`` was non-finite (sent to
        mid) or outside [-1, 1] (clamped). The result is always within ``[min_ns, max_ns]``.
        """
        v, adjusted = clamp_unit(value)
        adj = v * self.polarity
        if adj > 0:
            return int(self.mid_ns + adj * (self.max_ns - self.mid_ns)), adjusted
        if adj < 0:
            return int(self.mid_ns + adj * (self.mid_ns - self.min_ns)), adjusted
        return self.mid_ns, adjusted

    def to_value(self, duty_ns: int) -> float:
        """Inverse of :meth:`to_duty_ns` (not clamped: pulses beyond min/max give |v| > 1)."""
        d = duty_ns - self.mid_ns
        if d == 0:
            return 0.0
        span = (self.max_ns - self.mid_ns) if d > 0 else (self.mid_ns - self.min_ns)
        return d / span * self.polarity

    def as_stock(self) -> dict[str, int]:
        return {"max": self.max_ns, "mid": self.mid_ns, "min": self.min_ns, "polarity": self.polarity}


@dataclass(frozen=True)
class Calibration:
    """Both channels. ``servo`` = steering (PWM channel 1), ``motor`` = ESC (PWM channel 0)."""

    servo: ChannelCalibration
    motor: ChannelCalibration
    period_ns: int = PERIOD_NS

    def __post_init__(self) -> None:
        if isinstance(self.period_ns, bool) or not isinstance(self.period_ns, int) or self.period_ns <= 0:
            raise CalibrationError(f"period_ns must be a positive integer, got {self.period_ns!r}")
        for name in CHANNELS:
            ch = getattr(self, name)
            if not isinstance(ch, ChannelCalibration):
                raise CalibrationError(f"{name} must be a ChannelCalibration, got {type(ch).__name__}")
            if ch.max_ns > self.period_ns:
                raise CalibrationError(
                    f"{name}: max {ch.max_ns} ns is beyond the PWM period {self.period_ns} ns"
                )

    @classmethod
    def defaults(cls) -> "Calibration":
        """Stock factory values (aws-deepracer-servo-pkg ``servo_mgr.hpp``)."""
        return cls(
            servo=ChannelCalibration(1_200_000, 1_450_000, 1_700_000, 1),
            motor=ChannelCalibration(1_311_000, 1_446_000, 1_603_500, -1),
        )

    @classmethod
    def from_stock_dict(cls, d: dict) -> "Calibration":
        """Parse the stock layout ``{"Calibration": {"Servo": {...}, "Motor": {...}, "version": 1}}``."""
        if not isinstance(d, dict) or not isinstance(d.get("Calibration"), dict):
            raise CalibrationError('expected an object with a "Calibration" object at the top')
        body = d["Calibration"]
        version = body.get("version")
        if version is None:
            log.warning("calibration has no \"version\" key (pre-2020 stock file); reading it as version 1")
        elif version != CALIBRATION_VERSION:
            raise CalibrationError(f"unsupported calibration version {version!r} (expected 1)")
        channels = {}
        for name in CHANNELS:
            key = _STOCK_KEYS[name]
            ch = body.get(key)
            if not isinstance(ch, dict):
                raise CalibrationError(f'"Calibration.{key}" is missing or not an object')
            values = {}
            for field in _FIELDS:
                if field not in ch:
                    raise CalibrationError(f'"Calibration.{key}.{field}" is missing')
                values[field] = _as_int(ch[field], f"Calibration.{key}.{field}")
            try:
                channels[name] = ChannelCalibration(
                    values["min"], values["mid"], values["max"], values["polarity"]
                )
            except CalibrationError as exc:
                raise CalibrationError(f"{key}: {exc}") from None
        return cls(servo=channels["servo"], motor=channels["motor"])

    def to_stock_dict(self) -> dict:
        """The stock layout (always with ``"version": 1``)."""
        return {
            "Calibration": {
                "Motor": self.motor.as_stock(),
                "Servo": self.servo.as_stock(),
                "version": CALIBRATION_VERSION,
            }
        }

    def neutral_ns(self) -> tuple[int, int]:
        """``(servo_mid_ns, motor_mid_ns)``."""
        return self.servo.mid_ns, self.motor.mid_ns

    def channel(self, name: str) -> ChannelCalibration:
        if name not in CHANNELS:
            raise CalibrationError(f"unknown channel {name!r}: use servo or motor")
        return getattr(self, name)

    def with_channel(self, name: str, ch: ChannelCalibration) -> "Calibration":
        self.channel(name)
        return replace(self, **{name: ch})

    def with_values(self, updates: dict[str, int]) -> "Calibration":
        """Apply ``{"servo.mid": 1450000, "motor.polarity": 1, ...}``; validates the result."""
        fields: dict[str, dict[str, int]] = {
            n: {"min": c.min_ns, "mid": c.mid_ns, "max": c.max_ns, "polarity": c.polarity}
            for n in CHANNELS
            for c in (self.channel(n),)
        }
        for key, value in updates.items():
            name, _, field = key.partition(".")
            if name not in CHANNELS or field not in _FIELDS:
                raise CalibrationError(
                    f"unknown calibration key {key!r}: use servo|motor . min|mid|max|polarity"
                )
            fields[name][field] = value
        cal = self
        for name in CHANNELS:
            f = fields[name]
            try:
                ch = ChannelCalibration(f["min"], f["mid"], f["max"], f["polarity"])
            except CalibrationError as exc:
                raise CalibrationError(f"{name}: {exc}") from None
            cal = cal.with_channel(name, ch)
        return cal


def console_units(channel: str, duty_ns: int) -> float:
    """Pulse in stock web-console units (steering ``ns = ui*10000 + 1.5e6``, throttle ``ui*4500``)."""
    return (duty_ns - PWM_OFFSET_NS) / CONSOLE_NS_PER_UNIT[channel]


def _as_int(v: Any, where: str) -> int:
    from car_runtime.safe_files import show

    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise CalibrationError(f'"{where}" must be an integer, got {show(v)}')
    if isinstance(v, float):
        if not v.is_integer():
            raise CalibrationError(f'"{where}" must be an integer, got {show(v)}')
        v = int(v)
    return v


# --------------------------------------------------------------------------- file I/O


def _resolve(path: str | Path | None) -> Path:
    return DEFAULT_CALIBRATION_PATH if path is None else Path(path)


def _fix_hint(path: Path) -> str:
    file_arg = "" if path == DEFAULT_CALIBRATION_PATH else f" --file {path}"
    return (
        f"fix the file, restore a previous version (`car-runtime calibrate{file_arg} --history`), "
        f"or write the stock defaults with `car-runtime calibrate{file_arg} --reset-defaults`"
    )


def parse_calibration_bytes(data: bytes, source: str = "<bytes>") -> Calibration:
    """Parse and validate a stock calibration file's content (strict UTF-8 JSON, bounded
    nesting and numbers: see :func:`car_runtime.safe_files.load_json`)."""
    from car_runtime.safe_files import load_json

    try:
        d = load_json(data, source)
    except ValueError as exc:
        raise CalibrationError(str(exc)) from None
    try:
        return Calibration.from_stock_dict(d)
    except CalibrationError as exc:
        raise CalibrationError(f"{source}: {exc}") from None


def load_calibration(path: str | Path | None = None, *, missing: str = "error") -> Calibration:
    """Read and validate a stock calibration file (``None`` -> the stock path).

    ``missing="defaults"``: a file that does not exist gives the stock defaults (with a
    warning). An invalid file is never used: it raises :class:`CalibrationError` naming the fix.
    """
    if missing not in ("error", "defaults"):
        raise ValueError(f"missing must be 'error' or 'defaults', not {missing!r}")
    p = _resolve(path)
    try:
        data = _read(p)
    except FileNotFoundError:
        if missing == "defaults":
            log.warning("calibration file %s not found: using the stock defaults", p)
            return Calibration.defaults()
        file_arg = "" if p == DEFAULT_CALIBRATION_PATH else f" --file {p}"
        raise CalibrationError(
            f"calibration file {p} not found; calibrate with `car-runtime calibrate{file_arg}` "
            f"or write the stock defaults with `car-runtime calibrate{file_arg} --reset-defaults`"
        ) from None
    except OSError as exc:
        raise CalibrationError(
            f"cannot read calibration file {p}: {exc.strerror or exc}; check its permissions "
            f"(it must be a readable file)"
        ) from None
    except ValueError as exc:  # a FIFO, a device, a directory, too large
        raise CalibrationError(f"cannot use calibration file: {exc}; {_fix_hint(p)}") from None
    try:
        return parse_calibration_bytes(data, str(p))
    except CalibrationError as exc:
        raise CalibrationError(f"{exc}; {_fix_hint(p)}") from None


def _read(p: Path) -> bytes:
    from car_runtime.safe_files import read_small_file

    return read_small_file(p, MAX_CALIBRATION_BYTES)


def dumps_stock(cal: Calibration) -> str:
    """Stock file text: jsoncpp style (3-space indent, sorted keys) plus a newline."""
    return json.dumps(cal.to_stock_dict(), indent=3, sort_keys=True) + "\n"


def history_dir(p: str | Path) -> Path:
    """Where the replaced versions of calibration file ``p`` are kept."""
    p = Path(p)
    return p.parent / f".{p.name}.history"


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_temps(d: Path) -> None:
    """Remove our temp files (``.<name>.<pid>.<hex>.tmp``) left by savers that were killed."""
    for f in d.glob(".*.tmp"):
        parts = f.name.rsplit(".", 3)
        if len(parts) != 4 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid != os.getpid() and not _pid_alive(pid):
            try:
                f.unlink()
            except OSError:
                pass


def _atomic_write(p: Path, data: bytes, mode: int = 0o644, mtime_ns: int | None = None,
                  owner: tuple[int, int] | None = None) -> None:
    """Temp file in the same dir, fsync, ``os.replace``, fsync the dir. ``owner`` (uid, gid):
    give the new file that owner (only root can; others keep their own)."""
    _clean_stale_temps(p.parent)
    tmp = p.parent / f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if owner is not None and os.geteuid() == 0:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(p.parent)


def _utc_stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def _write_in_place(p: Path, data: bytes) -> None:
    """Rewrite regular file ``p`` without replacing it (same inode, owner, group and mode).

    Padded with spaces (valid trailing JSON whitespace) to at least the old length and written
    at offset 0 in one ``pwrite``, then cut to length: killed before the cut, the file is the
    new JSON plus spaces; never the new text with a tail of the old one."""
    fd = os.open(p, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CalibrationError(f"cannot write calibration file {p}: not a regular file")
        padded = data + b" " * max(0, st.st_size - len(data))
        view, offset = memoryview(padded), 0
        while offset < len(padded):
            offset += os.pwrite(fd, view[offset:], offset)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def _folder_writable(d: Path) -> bool:
    """May we create and rename files in ``d``? (``access`` also says no on a read-only mount,
    e.g. the service's ProtectSystem=strict view of /opt.)"""
    return os.access(d, os.W_OK | os.X_OK)


def save_calibration(cal: Calibration, path: str | Path | None = None, *, keep: int = HISTORY_KEEP,
                     in_place: bool | None = None) -> Path:
    """Write ``cal`` in the stock layout; keep the replaced file in the history.

    The previous file (if any) is copied first to ``<dir>/.<name>.history/<UTC time>.json``
    (the time it was replaced), and only the newest ``keep`` history entries are kept. Then the
    file is replaced atomically (keeping its owner, group and mode), or, when we may write the
    file but not its folder (``in_place=None`` decides so; True/False force it), rewritten in
    place (see :func:`_write_in_place`). Returns the path written.
    """
    if not isinstance(cal, Calibration):
        raise TypeError("save_calibration needs a Calibration")
    p = _resolve(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o644
        try:
            st = p.stat()
            old = p.read_bytes()
        except FileNotFoundError:
            old = None
        else:
            mode = st.st_mode & 0o777 | 0o400
        if in_place is None:
            in_place = old is not None and not _folder_writable(p.parent) and os.access(p, os.W_OK)
        if old is not None and keep > 0:
            hist = history_dir(p)
            hist.mkdir(exist_ok=True)
            stamp = _utc_stamp()
            target = hist / f"{stamp}.json"
            i = 1
            while target.exists():
                target = hist / f"{stamp}-{i}.json"
                i += 1
            _atomic_write(target, old, mode, mtime_ns=st.st_mtime_ns)
            for stale in sorted(hist.glob("*.json"))[:-keep]:
                stale.unlink()
        if in_place:
            _write_in_place(p, dumps_stock(cal).encode())
        else:
            _atomic_write(p, dumps_stock(cal).encode(), mode,
                          owner=None if old is None else (st.st_uid, st.st_gid))
    except PermissionError as exc:
        raise CalibrationError(
            f"cannot write calibration file {p}: permission denied ({exc.filename}); "
            f"{_write_fix(p)}"
        ) from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise CalibrationError(
                f"cannot write calibration file {p}: read-only ({exc.filename}); {_write_fix(p)}"
            ) from None
        raise CalibrationError(f"cannot write calibration file {p}: {exc}") from None
    return p


def _write_fix(p: Path) -> str:
    return (f"run with sudo or give your user write access to {p.parent}; for the car-runtime "
            "service: sudo car-runtime install-service (it makes this file and its history "
            "folder writable for the service)")


@dataclass(frozen=True)
class HistoryEntry:
    """One previous version: ``n`` = 1 is the most recently replaced one."""

    n: int
    path: Path
    replaced_utc: str  # when it was replaced (from the file name), ISO 8601
    saved_utc: str  # when that version had been written (its mtime), ISO 8601
    calibration: Calibration | None  # None when that version is not a valid calibration
    error: str | None = None


def _stamp_to_iso(name: str) -> str:
    try:
        t = _dt.datetime.strptime(name.split("-")[0], "%Y%m%dT%H%M%S.%fZ")
    except ValueError:
        return name
    return t.replace(tzinfo=_dt.timezone.utc).isoformat(timespec="seconds")


def list_history(path: str | Path | None = None) -> list[HistoryEntry]:
    """Previous versions of the calibration file, newest first (``n`` = 1, 2, ...)."""
    p = _resolve(path)
    hist = history_dir(p)
    if not hist.is_dir():
        return []
    entries = []
    for n, f in enumerate(sorted(hist.glob("*.json"), reverse=True), start=1):
        try:
            mtime = f.stat().st_mtime
            cal, err = parse_calibration_bytes(_read(f), str(f)), None
        except CalibrationError as exc:
            cal, err = None, str(exc)
        except (OSError, ValueError) as exc:
            cal, err, mtime = None, str(exc), 0.0
        saved = _dt.datetime.fromtimestamp(mtime, _dt.timezone.utc).isoformat(timespec="seconds")
        entries.append(HistoryEntry(n, f, _stamp_to_iso(f.stem), saved, cal, err))
    return entries


def restore_history(path: str | Path | None, n: int) -> Calibration:
    """Make history entry ``n`` (1 = newest) the current file; the current one goes to history."""
    entries = list_history(path)
    p = _resolve(path)
    if not entries:
        raise CalibrationError(f"no calibration history for {p} (it is kept from the first save on)")
    if not 1 <= n <= len(entries):
        raise CalibrationError(
            f"no history entry {n} for {p}: choose 1..{len(entries)} (see `car-runtime calibrate --history`)"
        )
    entry = entries[n - 1]
    if entry.calibration is None:
        raise CalibrationError(f"history entry {n} is not a valid calibration ({entry.error}); pick another")
    save_calibration(entry.calibration, p)
    return entry.calibration
