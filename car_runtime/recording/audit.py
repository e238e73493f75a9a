"""Read a recorded session's audit trail back: the run's settings and every recorded write.

``car-runtime replay RUN_DIR --verify`` uses it to recompute each recorded decision from the
recorded frame with the recorded settings (:func:`car_runtime.replay.replay`).
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from car_runtime.errors import SourceError
from car_runtime.recording import messages


class CannotVerify(SourceError):
    """The bag lacks what ``--verify`` needs (exit 2)."""


@dataclass
class RecordedSettings:
    t_ns: int
    model_name: str
    model_path: str
    model_sha256: str
    max_speed_pct: float
    preprocess: str
    precision: str
    device: str
    threads: int
    sac_squash: bool
    calibration: dict
    raw: Any = field(repr=False, default=None)


@dataclass
class RecordedRun:
    """``settings`` in time order; ``decisions`` maps the frame counter to its DriveWrite."""

    path: Path
    settings: list[RecordedSettings]
    decisions: dict[int, Any]
    writes: int

    def settings_at(self, t_ns: int) -> RecordedSettings:
        """The settings in force at bag time ``t_ns`` (the last ones written at or before it)."""
        times = [s.t_ns for s in self.settings]
        i = bisect.bisect_right(times, t_ns) - 1
        return self.settings[max(0, i)]

    @property
    def first(self) -> RecordedSettings:
        return self.settings[0]


def read_run(folder: str | Path) -> RecordedRun:
    """Read ``/car_runtime/settings`` and ``/car_runtime/writes`` of a session folder (torn ones
    too). Raises :class:`CannotVerify` naming why if the bag was not written by car-runtime's
    flight recorder."""
    from rosbags.highlevel import AnyReader

    from car_runtime.recording.catalog import readable_bag

    folder = Path(folder)
    if not folder.is_dir():
        raise CannotVerify(f"cannot verify {folder}: --verify needs a recorded session folder "
                           "(car-runtime run --record DIR)")
    with readable_bag(folder) as (path, _damage):
        try:
            reader = AnyReader([path])
            reader.open()
        except Exception as exc:
            raise CannotVerify(f"cannot verify {folder}: the bag is unreadable ({exc})") from None
        try:
            topics = {c.topic: c for c in reader.connections}
            missing = [t for t in (messages.WRITES, messages.SETTINGS) if t not in topics]
            if missing:
                raise CannotVerify(
                    f"cannot verify {folder}: it has no {' and no '.join(missing)} topic, so the "
                    "decisions the car made and the settings it used are not in it (only "
                    "car-runtime's flight recorder writes them); replay it without --verify")
            wanted = [topics[messages.WRITES], topics[messages.SETTINGS]]
            settings: list[RecordedSettings] = []
            decisions: dict[int, Any] = {}
            writes = 0
            for conn, t_ns, raw in reader.messages(connections=wanted):
                msg = reader.deserialize(raw, conn.msgtype)
                if conn.topic == messages.SETTINGS:
                    settings.append(_settings(t_ns, msg))
                else:
                    writes += 1
                    if msg.decided and msg.frame_seq >= 0:
                        decisions[int(msg.frame_seq)] = msg
        finally:
            reader.close()
    if not settings:
        raise CannotVerify(f"cannot verify {folder}: its settings message is missing (the "
                           "recording was cut before its first second was written)")
    settings.sort(key=lambda s: s.t_ns)
    return RecordedRun(folder, settings, decisions, writes)


def _settings(t_ns: int, msg: Any) -> RecordedSettings:
    try:
        calibration = json.loads(msg.calibration_json) if msg.calibration_json else {}
    except ValueError:
        calibration = {}
    return RecordedSettings(
        t_ns=t_ns, model_name=msg.model_name, model_path=msg.model_path,
        model_sha256=msg.model_sha256, max_speed_pct=float(msg.max_speed_pct),
        preprocess=msg.preprocess, precision=msg.precision or "f32", device=msg.device or "CPU",
        threads=int(msg.threads), sac_squash=bool(msg.sac_squash), calibration=calibration,
        raw=msg,
    )


@dataclass(frozen=True)
class Mismatch:
    frame: int  # position in the replay (0-based)
    frame_id: int  # the recorded frame counter
    recorded: str
    recomputed: str


def describe_decision(action_index: int | None, steering_deg: float, speed_mps: float,
                      angle: float, throttle: float, pulses: tuple[int, int] | None = None) -> str:
    head = f"action {action_index}: " if action_index is not None and action_index >= 0 else ""
    text = (f"{head}steering {steering_deg:+.4g} deg @ {speed_mps:.4g} m/s -> angle "
            f"{angle:+.6g}, throttle {throttle:+.6g}")
    if pulses is not None:
        text += f", servo {pulses[0]} ns, ESC {pulses[1]} ns"
    return text


def decisions_match(recorded: Any, action_index: int | None, angle: float, throttle: float,
                    tol: float) -> bool:
    """Discrete: the same action and the same angle/throttle; continuous: within ``tol``."""
    rec_index = int(recorded.action_index)
    if rec_index >= 0 or action_index is not None:
        return (rec_index == (-1 if action_index is None else action_index)
                and recorded.decision_angle == angle and recorded.decision_throttle == throttle)
    return (math.isclose(recorded.decision_angle, angle, abs_tol=tol)
            and math.isclose(recorded.decision_throttle, throttle, abs_tol=tol))
