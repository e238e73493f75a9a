"""Replay test helpers: the car's numbers computed independently of car_runtime's decision and
calibration code, and a writer for the rosbag2 inputs made in the tests.

The independent path uses only cv2, numpy, the compiled policy (``load_model(...).policy.run``)
and the stock formulas written out here:

- preprocess (stock): ``cv2.resize(bgr, (160, 120), INTER_LINEAR)`` then ``BGR2GRAY``, 0..255 float;
- action: first index of the max output; ``angle = steering / max|steering|``;
  ``throttle = pct/100 * clamp(-1.2 x^2 + 2.2 x, -1, 1)``, ``x = speed / max|speed|``;
- pulse: ``mid + v*pol*(max-mid if v*pol > 0 else mid-min)``, truncated to int.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pytest

from car_runtime.cli.main import main

#: Stock factory calibration (aws-deepracer-servo-pkg), written out here on purpose.
STOCK_SERVO = (1_200_000, 1_450_000, 1_700_000, 1)
STOCK_MOTOR = (1_311_000, 1_446_000, 1_603_500, -1)


def stock_duty_ns(value: float, channel: tuple[int, int, int, int]) -> int:
    lo, mid, hi, pol = channel
    v = max(-1.0, min(1.0, value)) * pol
    if v > 0:
        return int(mid + v * (hi - mid))
    if v < 0:
        return int(mid + v * (mid - lo))
    return mid


def stock_input(bgr: np.ndarray) -> np.ndarray:
    """The stock car's model input: (1, 120, 160, 1) float32, raw 0..255 grey."""
    small = cv2.resize(bgr, (160, 120), interpolation=cv2.INTER_LINEAR)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    return grey.astype(np.float32)[None, :, :, None]


def read_actions(model: Path) -> list[tuple[float, float]]:
    """(steering_deg, speed_mps) per action, straight from model_metadata.json."""
    if model.is_dir():
        meta = json.loads((model / "model_metadata.json").read_text())
    else:
        with tarfile.open(model) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("model_metadata.json"))
            meta = json.load(tar.extractfile(member))  # type: ignore[arg-type]
    return [(float(a["steering_angle"]), float(a["speed"])) for a in meta["action_space"]]


def expected_records(
    policy,
    actions: Sequence[tuple[float, float]],
    frames: Sequence[np.ndarray],
    times_s: Sequence[float],
    *,
    pct: float = 100.0,
    servo: tuple[int, int, int, int] = STOCK_SERVO,
    motor: tuple[int, int, int, int] = STOCK_MOTOR,
    first_frame: int = 0,
) -> list[dict]:
    """The log lines the car's path must produce for ``frames`` (BGR arrays), computed here."""
    max_steer = max(abs(s) for s, _ in actions)
    max_speed = max(abs(v) for _, v in actions)
    out = []
    for k, (bgr, t) in enumerate(zip(frames, times_s)):
        y = [float(v) for v in policy.run(stock_input(bgr)).reshape(-1)]
        i = y.index(max(y))  # first index wins ties, like stock
        steer, speed = actions[i]
        angle = steer / max_steer
        x = speed / max_speed
        throttle = pct / 100.0 * min(1.0, max(-1.0, -1.2 * x * x + 2.2 * x))
        out.append({
            "frame": first_frame + k,
            "t": round(t, 6),
            "action_index": i,
            "output": y,
            "steering_angle": steer,
            "speed": speed,
            "angle": angle,
            "throttle": throttle,
            "servo_ns": stock_duty_ns(angle, servo),
            "motor_ns": stock_duty_ns(throttle, motor),
        })
    return out


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_log_equals(got: list[dict], want: list[dict]) -> None:
    """Every key and value equal (``t`` to 1 us: both sides round it to 6 decimals)."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert list(g) == list(w), "log keys or their order differ"
        assert g["t"] == pytest.approx(w["t"], abs=1.1e-6)
        assert {k: v for k, v in g.items() if k != "t"} == {k: v for k, v in w.items() if k != "t"}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``car-runtime`` in this process; (exit code, stdout, stderr)."""
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- rosbag writing -----------------------------------------------------------------------------


def write_bag(
    path: Path,
    topics: dict[str, tuple[str, list[tuple[int, object]]]],
    *,
    storage: str = "sqlite3",
    typestore=None,
) -> Path:
    """Write a rosbag2 with rosbags' Writer: ``{topic: (msgtype, [(stamp_ns, msg), ...])}``."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = typestore or get_typestore(Stores.LATEST)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {t: writer.add_connection(t, msgtype, typestore=store)
                 for t, (msgtype, _) in topics.items()}
        stream = sorted(
            ((stamp, t, msg) for t, (_, msgs) in topics.items() for stamp, msg in msgs),
            key=lambda x: x[0],
        )
        for stamp, t, msg in stream:
            writer.write(conns[t], stamp, store.serialize_cdr(msg, topics[t][0]))
    return path
