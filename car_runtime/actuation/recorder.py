"""Recorder: an output that records every duty write (dry runs, replay, bench, tests).

Without a path (``record:``) the writes are kept in memory (:attr:`Recorder.writes`, for tests,
bench and replay, which clear it). With a path (``record:PATH``) each write is appended as one
JSON object per line and nothing accumulates in memory (``writes`` then holds only the last
:data:`KEEP_LAST`)::

    {"t": 0.0333, "angle": 0.5, "throttle": 0.32, "servo_ns": 1575000, "motor_ns": 1402800,
     "frame_seq": 12, "frame_age_ms": 8.4, "state": "armed", "event": null, "clamped": null}

Every line starts with the same keys, :data:`RECORD_KEYS`, ``null`` where they do not apply
(``frame_seq``/``frame_age_ms`` on writes that are not a decision, ``event`` on decisions,
``clamped`` unless a value was clamped). The drive loop (run, ROS node, replay) adds no other
key; other callers' context keys (the calibration tool's ``raw`` and ``channel``) follow them.
``t`` is the write's ``t_s``.

Each line is one ``write()`` on an ``O_APPEND`` descriptor, so a killed process leaves whole
lines. A write that fails (a full disk: ENOSPC, or /dev/full) is cut back to the last whole
line and raises :class:`HardwareError` naming the fix: the run then ends with exit 3 like any
failing output (see docs/safety.md) and the file never ends on a torn line.
"""

from __future__ import annotations

import collections
import errno
import json
import math
import os
from pathlib import Path
from typing import Any

from car_runtime.actuation.base import DutyWrite, PwmOutput
from car_runtime.actuation.calibration import Calibration
from car_runtime.actuation.guardian import describe_error
from car_runtime.errors import HardwareError

#: The keys every record line starts with, in this order (``null`` when not applicable).
RECORD_KEYS = ("t", "angle", "throttle", "servo_ns", "motor_ns", "frame_seq", "frame_age_ms",
               "state", "event", "clamped")
#: With a file, how many recent writes stay in memory (``Recorder.writes``).
KEEP_LAST = 64


def _jsonable(v: Any) -> Any:
    """Fallback for ``json.dumps``: numpy scalars/arrays -> Python values; else ``repr``."""
    for conv in ("item", "tolist"):  # numpy scalar, then numpy array
        f = getattr(v, conv, None)
        if callable(f):
            try:
                return _sanitize(f())
            except (TypeError, ValueError):
                continue
    if isinstance(v, (set, frozenset)):
        return _sanitize(sorted(v, key=repr))
    if isinstance(v, Path):
        return str(v)
    return repr(v)


def record_line(w: DutyWrite) -> str:
    """One JSONL line for ``w`` (with its newline): :data:`RECORD_KEYS` first, ``null`` where
    absent, then any other context keys. Non-finite floats become strings (strict JSON)."""
    ctx = w.context
    obj = {"t": w.t_s, "angle": w.angle, "throttle": w.throttle, "servo_ns": w.servo_ns,
           "motor_ns": w.motor_ns}
    for key in RECORD_KEYS[5:]:
        obj[key] = ctx.get(key)
    for key, value in ctx.items():
        if key not in obj:
            obj[key] = value
    try:
        line = json.dumps(obj, allow_nan=False, default=_jsonable)
    except ValueError:  # a NaN/inf float somewhere in the context
        line = json.dumps(_sanitize(obj), allow_nan=False, default=_jsonable)
    return line + "\n"


def _sanitize(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _sanitize(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_sanitize(x) for x in v]
    return v


def read_records(path: str | Path) -> list[dict]:
    """Parse a recorder JSONL file (a torn last line, e.g. after a crash, is ignored)."""
    out = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise
    return out


class Recorder(PwmOutput):
    """Records every :class:`DutyWrite`: in ``.writes`` (memory only), or as JSON lines in
    ``path`` (then ``.writes`` keeps only the last :data:`KEEP_LAST`)."""

    def __init__(self, calibration: Calibration, path: str | Path | None = None) -> None:
        super().__init__(calibration)
        self.path = Path(path) if path else None
        self.writes: list[DutyWrite] | collections.deque[DutyWrite] = []
        self.lines = 0
        self.last_error: str | None = None  # short: "ENOSPC No space left on device"
        self._fd: int | None = None
        self._size = 0
        if self.path is not None:
            self.writes = collections.deque(maxlen=KEEP_LAST)
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                                   0o644)
                self._size = os.fstat(self._fd).st_size
            except OSError as exc:
                raise HardwareError(
                    f"cannot open recording file {self.path}: {exc.strerror or exc}; "
                    f"use a writable path (record:PATH) or record: for memory only"
                ) from None

    def write(self, w: DutyWrite) -> None:
        if self.closed:
            raise RuntimeError("Recorder is closed")
        if self._fd is not None:
            self._append(record_line(w).encode())
        self.writes.append(w)
        self.last_pulses_ns = (w.servo_ns, w.motor_ns)

    def _append(self, data: bytes) -> None:
        try:
            n = os.write(self._fd, data)
            if n != len(data):  # a short write: the disk filled up mid-line
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._size)  # never leave a torn line behind
            except OSError:
                pass
            self.last_error = describe_error(exc)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise HardwareError(
                    f"recording file {self.path}: no space left on the device "
                    f"({describe_error(exc)}); free some space or record elsewhere (record:PATH)"
                ) from None
            raise HardwareError(
                f"cannot write recording file {self.path}: {describe_error(exc)}"
            ) from None
        self._size += n
        self.lines += 1

    def emergency_neutral(self, timeout_s: float = 0.5) -> dict[str, str]:
        """Record the neutral write if the file still takes it (no wheels to move here)."""
        try:
            self.write(self.neutral_write("emergency"))
        except (HardwareError, RuntimeError):
            return {"record": f"not recorded ({self.last_error or 'closed'})"}
        return {"record": "ok"}

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
