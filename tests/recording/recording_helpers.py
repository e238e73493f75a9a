"""Helpers for the flight-recorder tests: real `car-runtime run --record` processes on real
footage, and an independent reader (the ``mcap`` package decoding with the schemas stored in
the file; and plain rosbags with ``.msg`` text written out here, not ours)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from helpers import car_runtime_cmd, wait_until

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


def frames_folder(src: Path, out: Path, count: int) -> Path:
    """``count`` frames in ``out``: the real footage files, copied over and over (a longer drive
    from the same camera bytes)."""
    import shutil

    out.mkdir()
    files = sorted(src.glob("*.jpg"))
    for i in range(count):
        shutil.copyfile(files[i % len(files)], out / f"{i:06d}.jpg")
    return out


class LiveRun:
    """An in-process car: the real DriveLoop (real OpenVINO model, a paced real image folder, a
    memory ``record:`` output, the actuator's 100 ms watchdog) armed, with DriveControls and the
    flight recorder attached, in a thread. :meth:`finish` ends it like ``car-runtime run`` does:
    the loop, then the actuator (its final neutral), then the recorder."""

    def __init__(self, tmp: Path, model: Path, frames: Path, *, fps: float = 30.0,
                 storage: str = "mcap", hooks_before: tuple = (), **recorder_kwargs) -> None:
        import threading

        from car_runtime.actuation.calibration import Calibration
        from car_runtime.actuation.output import Actuator, open_output
        from car_runtime.config import RunConfig
        from car_runtime.controls import DriveControls, ModelInfo, ModelLoader
        from car_runtime.recording.recorder import FlightRecorder
        from car_runtime.runtime import DriveLoop
        from car_runtime.vision.sources import ImageFolderSource

        self.root = tmp / "bags"
        self.cfg = RunConfig(model=str(model), output="record:", record_dir=str(self.root),
                             record_storage=storage, record_min_free_mb=0)
        self.loader = ModelLoader(self.cfg)
        loaded, pipeline = self.loader.load(str(model))
        cal = Calibration.defaults()
        self.actuator = Actuator(open_output("record:", cal), cal, deadline_s=0.1)
        self.source = ImageFolderSource(frames, fps=fps)
        # frames are never refused for age here: a loaded test machine must not turn the
        # drive frames these tests count into stale neutrals
        self.loop = DriveLoop(self.source, pipeline, self.actuator, armed=True,
                              max_frame_age_s=5.0)
        self.controls = DriveControls(self.loop, self.loader, ModelInfo.of(loaded, str(model)))
        for hook in hooks_before:  # step hooks that run before the recorder's
            self.loop.add_step_hook(hook)
        self.recorder = FlightRecorder(self.controls, self.root, storage=storage, min_free_mb=0,
                                       config=self.cfg, **recorder_kwargs).start()
        self.code: list[int] = []
        self.thread = threading.Thread(target=lambda: self.code.append(self.loop.run()),
                                       name="drive-loop")
        self.thread.start()

    @property
    def writes(self) -> list:
        """Every write the output got (DutyWrite objects, in order)."""
        return list(self.actuator.output.writes)

    def wait(self, predicate, timeout_s: float = 60.0, what: str = "condition"):
        return wait_until(predicate, timeout_s, what)

    def finish(self, timeout_s: float = 120.0) -> int:
        """Wait for the end of the input, then close in `run`'s order; the loop's exit code."""
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the drive loop did not end"
        self._close()
        return self.code[0]

    def abort(self) -> None:
        """Tear down after a failed test."""
        from car_runtime.control.safety import ExitCode

        self.loop.request_stop(ExitCode.OK, "test failed")
        self.thread.join(10)
        self._close()

    def _close(self) -> None:
        for part in (self.actuator, self.recorder, self.source, self.loader):
            part.close()


def session_messages(session: Path) -> dict[str, list]:
    """topic -> [(log time ns, message)] of a session, decoded by the ``mcap`` package."""
    out: dict[str, list] = {}
    for topic, _schema, t_ns, msg in mcap_messages(session / f"{session.name}.mcap"):
        out.setdefault(topic, []).append((t_ns, msg))
    return out


def verify_in_process(session: Path) -> tuple[object, list[str]]:
    """``car-runtime replay SESSION --verify`` in this process: (VerifyResult, printed lines)."""
    from car_runtime.replay import ReplayOptions, replay

    lines: list[str] = []
    summary = replay(ReplayOptions(model=None, input=str(session), verify=True, progress=False),
                     echo=lines.append)
    return summary.verify, lines + summary.verify.lines()
