"""Recorder: an output that keeps every duty write (dry runs, replay, bench, tests).

With a path, each write is appended as one JSON object per line and flushed::

    {"t": 0.0333, "angle": 0.5, "throttle": 0.32, "servo_ns": 1575000, "motor_ns": 1402800, "seq": 12, ...}

``t`` is the write's ``t_s``; the caller's context keys (frame seq, state, event...) follow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any

from car_runtime.actuation.calibration import Calibration
from car_runtime.actuation.output import DutyWrite, PwmOutput
from car_runtime.errors import HardwareError


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


def write_record_line(fh: IO[str], w: DutyWrite) -> None:
    """One JSONL line for ``w`` (non-finite floats become strings: the file stays strict JSON)."""
    obj = {"t": w.t_s, "angle": w.angle, "throttle": w.throttle, "servo_ns": w.servo_ns, "motor_ns": w.motor_ns}
    obj.update(w.context)
    try:
        line = json.dumps(obj, allow_nan=False, default=_jsonable)
    except ValueError:  # a NaN/inf float somewhere in the context
        line = json.dumps(_sanitize(obj), allow_nan=False, default=_jsonable)
    fh.write(line + "\n")
    fh.flush()


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
    """Keeps every :class:`DutyWrite` in ``.writes``; with ``path``, appends JSON lines to it."""

    def __init__(self, calibration: Calibration, path: str | Path | None = None) -> None:
        super().__init__(calibration)
        self.writes: list[DutyWrite] = []
        self.path = Path(path) if path else None
        self._fh: IO[str] | None = None
        if self.path is not None:
            try:
                self._fh = open(self.path, "a", encoding="utf-8")
            except OSError as exc:
                raise HardwareError(
                    f"cannot open recording file {self.path}: {exc.strerror or exc}; "
                    f"use a writable path (record:PATH) or record: for memory only"
                ) from None

    def write(self, w: DutyWrite) -> None:
        if self.closed:
            raise RuntimeError("Recorder is closed")
        self.writes.append(w)
        if self._fh is not None:
            write_record_line(self._fh, w)
        self.last_pulses_ns = (w.servo_ns, w.motor_ns)

    def _release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
