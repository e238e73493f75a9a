"""Fixtures for the flight-recorder tests: real `car-runtime run --record` processes on real
footage, and an independent reader (the ``mcap`` package decoding with the schemas stored in
the file; and plain rosbags with ``.msg`` text written out here, not ours)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import car_runtime_cmd

#: The community definitions, typed in here from race-day.md §C (not read from our package).
COMMUNITY_MSGS = {
    "deepracer_interfaces_pkg/msg/InferResults":
        "int32 class_label\nfloat32 class_prob\nfloat32 x_min\nfloat32 y_min\nfloat32 x_max\n"
        "float32 y_max\n",
    "deepracer_interfaces_pkg/msg/InferResultsArray":
        "InferResults[] results\nsensor_msgs/CompressedImage[] images\n",
    "deepracer_interfaces_pkg/msg/ServoCtrlMsg":
        "float32 angle\nfloat32 throttle\nbuiltin_interfaces/Time source_stamp\n",
}

SESSION_RE = r"^(?P<model>.+)-(?P<date>\d{8})-(?P<time>\d{6})$"


@dataclass
class RecordedRun:
    root: Path  # the --record folder
    jsonl: Path  # the record: output
    proc: subprocess.CompletedProcess
    frames_dir: Path

    @property
    def sessions(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.is_dir())


def run_recorded(tmp: Path, model: Path, frames: Path, *, extra: list[str] = (), fps: float = 30,
                 config: dict | None = None, timeout: float = 120) -> RecordedRun:
    root = tmp / "bags"
    jsonl = tmp / "drive.jsonl"
    cmd = [*car_runtime_cmd(), "run", "--model", str(model), "--camera", str(frames),
           "--fps", str(fps), "--output", f"record:{jsonl}", "--arm", "--record", str(root),
           "--status-interval", "0", *extra]
    if config:
        cfg = tmp / "config.yaml"
        cfg.write_text(json.dumps(config))
        cmd += ["--config", str(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return RecordedRun(root, jsonl, proc, frames)


def mcap_messages(path: Path) -> list[tuple[str, str, int, object]]:
    """(topic, schema name, log time ns, decoded message) with the ``mcap`` package."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = []
    with open(path, "rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            out.append((channel.topic, schema.name, message.log_time, decoded))
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, demo_model, footage_seq_dir) -> RecordedRun:
    """One `run --record` over the 100 real 160x120 frames, armed, at 30 fps."""
    tmp = tmp_path_factory.mktemp("recorded")
    run = run_recorded(tmp, demo_model, footage_seq_dir)
    assert run.proc.returncode == 0, run.proc.stderr
    return run
