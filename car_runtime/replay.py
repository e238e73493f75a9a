"""Replay recorded frames through the car's own path and report what the car would have done.

Every frame goes through exactly what ``car-runtime run`` does on the car, armed::

    Pipeline.step (decode -> preprocess -> infer -> decide) -> safety.step(ARMED, DECISION)
        -> Actuator.command(angle, throttle) on a ``record:`` output -> the duty pulses

so the logged ``servo_ns``/``motor_ns`` are the pulses the car would have sent with that
calibration. :class:`CarPath` is that path for one model; :func:`replay` drives one (or two,
to compare) over a frame source and writes the outputs. Frame-age and deadline checks do not
apply: recorded frames are old by definition and replay is not paced.

Log line (``--log``), one per frame, exactly these keys::

    {"frame": 12, "t": 0.8, "action_index": 3, "output": [...], "steering_angle": -15.0,
     "speed": 1.0, "angle": -0.5, "throttle": 1.0, "servo_ns": 1325000, "motor_ns": 1311000}

``frame`` is the 0-based position in the input (``000012.jpg`` -> 12), ``t`` its time in the
input in seconds (6 decimals), ``output`` the raw model output (a non-finite value is written as
``null``), ``steering_angle``/``speed`` the chosen action in degrees / m/s, ``angle``/``throttle``
the values written to the servo/ESC and ``servo_ns``/``motor_ns`` the pulses.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import secrets
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from car_runtime.actuation.calibration import (
    DEFAULT_CALIBRATION_PATH,
    Calibration,
    load_calibration,
)
from car_runtime.actuation.output import Actuator, DutyWrite, open_output
from car_runtime.config import MAX_SPEED_DEFAULTS, describe_max_speed
from car_runtime.control import safety
from car_runtime.errors import ConfigError, SourceError, require_module
from car_runtime.model.metadata import DiscreteActionSpace
from car_runtime.model.policy import LoadedModel
from car_runtime.pipeline import Pipeline, StepResult
from car_runtime.vision.frame import Frame
from car_runtime.vision.sources import DEFAULT_FOLDER_FPS  # one folder rate for run and replay

#: Keys of a log line, in order.
LOG_KEYS = ("frame", "t", "action_index", "output", "steering_angle", "speed", "angle",
            "throttle", "servo_ns", "motor_ns")
#: Rate assumed for an image folder when ``--fps`` is not given.
#: Replay shows the car at full scale unless told otherwise (the car's slider defaults to 50 %).
DEFAULT_MAX_SPEED_PCT = MAX_SPEED_DEFAULTS["replay"]
#: ``--compare`` with a continuous model: commands differing by more than this count as different.
DEFAULT_COMPARE_TOL = 0.05


# ------------------------------------------------------------------------------ positions


@dataclass(frozen=True)
class Position:
    """A ``--start``/``--end`` value: a frame number (``120``) or a time (``4s``, ``2.5s``)."""

    value: float
    unit: str  # "frame" | "s"

    @classmethod
    def parse(cls, text: str) -> "Position":
        s = text.strip().lower()
        m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*s(?:ec)?", s)
        if m:
            return cls(float(m.group(1)), "s")
        if s.isdigit():
            return cls(int(s), "frame")
        raise ConfigError(
            f"bad position {text!r}: use a frame number (e.g. 120) or seconds with an s (e.g. 4.5s)"
        )

    def reached(self, frame_no: int, t_s: float) -> bool:
        """True once ``frame_no``/``t_s`` is at or past this position."""
        return frame_no >= self.value if self.unit == "frame" else t_s >= self.value - 1e-9

    def __str__(self) -> str:
        return f"frame {int(self.value)}" if self.unit == "frame" else f"{self.value:g} s"


# ------------------------------------------------------------------------------ the car's path


@dataclass(frozen=True)
class FrameRecord:
    """What the car would have done for one frame (one log line)."""

    frame: int
    t: float
    action_index: int | None
    output: tuple[float | None, ...]
    steering_angle: float
    speed: float
    angle: float
    throttle: float
    servo_ns: int
    motor_ns: int
    driven: bool = True  # False: neutral was written (invalid output or the safety gate)

    def to_json(self) -> dict[str, Any]:
        return {k: (list(self.output) if k == "output" else getattr(self, k)) for k in LOG_KEYS}


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


class CarPath:
    """One model on the car's path, armed, writing to an in-memory recorder.

    ``step(frame)`` runs ``Pipeline.step`` -> ``safety.step`` -> ``Actuator.command`` and closes
    the stage-timer pass (``actuate``), exactly like the drive loop. ``close()`` ends the run
    (safety ``END``) and leaves the output at neutral.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        calibration: Calibration,
        *,
        preprocess: str = "stock",
        max_speed_pct: float = DEFAULT_MAX_SPEED_PCT,
        sac_squash: bool = False,
        name: str | None = None,
    ) -> None:
        self.loaded = loaded
        self.name = name or loaded.bundle.name
        self.metadata = loaded.metadata
        self.pipeline = Pipeline(
            loaded.policy, preprocess=preprocess, max_speed_pct=max_speed_pct,
            sac_squash=sac_squash,
        )
        self._recorder = open_output("record:", calibration)
        self.actuator = Actuator(self._recorder, calibration)
        self.state = safety.step(safety.INITIAL_STATE, safety.Event.ARM).state
        self.last: StepResult | None = None
        self.last_write: DutyWrite | None = None

    @property
    def discrete(self) -> bool:
        return isinstance(self.metadata.action_space, DiscreteActionSpace)

    def step(self, frame: Frame, frame_no: int) -> FrameRecord:
        result = self.pipeline.step(frame)
        decision = result.decision
        verdict = safety.step(self.state, safety.Event.DECISION)
        self.state = verdict.state
        context = {"frame_seq": frame.seq, "state": self.state.value}
        driven = verdict.drive and decision.valid
        if driven:
            w = self.actuator.command(decision.angle, decision.throttle, t_s=frame.media_t_s,
                                      **context)
        else:
            w = self.actuator.neutral(t_s=frame.media_t_s, **context)
        timer = self.pipeline.timer
        timer.lap("actuate")
        timer.end()
        self._recorder.writes.clear()  # type: ignore[attr-defined]  # kept here; don't grow
        self.last, self.last_write = result, w
        return FrameRecord(
            frame=frame_no,
            t=round(frame.media_t_s, 6),
            action_index=decision.action_index,
            output=tuple(_finite_or_none(float(v)) for v in result.output),
            steering_angle=float(decision.steering_deg),
            speed=float(decision.speed_mps),
            angle=w.angle,
            throttle=w.throttle,
            servo_ns=w.servo_ns,
            motor_ns=w.motor_ns,
            driven=driven,
        )

    def close(self) -> None:
        self.state = safety.step(self.state, safety.Event.END).state
        self.actuator.close()


# ------------------------------------------------------------------------------ summary


@dataclass
class ModelStats:
    """Per-model tallies for the summary and the plot."""

    name: str
    labels: tuple[str, ...] | None  # discrete action labels; None for continuous
    counts: list[int]
    t_s: list[float] = field(default_factory=list)
    steering_deg: list[float] = field(default_factory=list)
    throttle: list[float] = field(default_factory=list)
    neutral: int = 0

    def add(self, rec: FrameRecord) -> None:
        self.t_s.append(rec.t)
        self.steering_deg.append(rec.steering_angle)
        self.throttle.append(rec.throttle)
        if rec.action_index is not None and self.labels is not None:
            self.counts[rec.action_index] += 1
        if not rec.driven:
            self.neutral += 1


@dataclass
class ReplaySummary:
    frames: int
    wall_s: float
    source_fps: float
    models: list[ModelStats]
    differ: list[int] | None = None  # frame numbers where the two models differ (--compare)
    stages: dict = field(default_factory=dict)
    frame_numbers: list[int] = field(default_factory=list)
    verify: "VerifyResult | None" = None
    saliency: str = ""  # its measured cost per frame

    @property
    def first_frame(self) -> int | None:
        return self.frame_numbers[0] if self.frame_numbers else None

    @property
    def last_frame(self) -> int | None:
        return self.frame_numbers[-1] if self.frame_numbers else None

    @property
    def media_s(self) -> float:
        """Real time the replayed frames cover (frames / input fps)."""
        return self.frames / self.source_fps if self.source_fps > 0 else 0.0

    @property
    def replay_fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def realtime_x(self) -> float:
        return self.media_s / self.wall_s if self.wall_s > 0 else 0.0


def frame_ranges(frames: Sequence[int]) -> str:
    """``[3, 4, 5, 9, 12, 13]`` -> ``"3-5, 9, 12-13"``."""
    parts: list[str] = []
    it = iter(sorted(frames))
    for start in it:
        end = start
        for f in it:
            if f == end + 1:
                end = f
                continue
            parts.append(f"{start}-{end}" if end > start else f"{start}")
            start = end = f
        parts.append(f"{start}-{end}" if end > start else f"{start}")
    return ", ".join(parts)


def decisions_differ(a: FrameRecord, b: FrameRecord, tol: float) -> bool:
    """Would the car have done something different? Compares the written angle and throttle:
    exactly for two discrete models, within ``tol`` otherwise."""
    if a.action_index is not None and b.action_index is not None:
        tol = 0.0
    return abs(a.angle - b.angle) > tol or abs(a.throttle - b.throttle) > tol


def format_summary(s: ReplaySummary, *, compare_tol: float | None = None) -> str:
    lines = []
    span = (
        f" (frames {s.first_frame}-{s.last_frame})" if s.first_frame is not None else ""
    )
    lines.append(
        f"replayed {s.frames} frames{span} = {s.media_s:.2f} s at {s.source_fps:g} fps in "
        f"{s.wall_s:.2f} s: {s.replay_fps:.0f} fps, {s.realtime_x:.1f}x real time"
    )
    for m in s.models:
        if m.labels is not None:
            lines.append(f"{m.name}: actions chosen (index: steering deg @ speed m/s, count, %)")
            width = max(len(lbl) for lbl in m.labels)
            for label, n in zip(m.labels, m.counts):
                pct = 100.0 * n / s.frames if s.frames else 0.0
                bar = "#" * int(round(pct / 2.5))
                lines.append(f"  {label:<{width}} {n:6d} {pct:5.1f} %  {bar}")
        else:
            st = np.asarray(m.steering_deg)
            th = np.asarray(m.throttle)
            if st.size:
                lines.append(
                    f"{m.name}: continuous; steering {st.min():+.1f}..{st.max():+.1f} deg "
                    f"(mean {st.mean():+.1f}), throttle {th.min():.2f}..{th.max():.2f} "
                    f"(mean {th.mean():.2f})"
                )
        if m.neutral:
            lines.append(f"  neutral written on {m.neutral} frame(s) (non-finite model output)")
    if s.differ is not None and len(s.models) == 2:
        n = len(s.differ)
        pct = 100.0 * n / s.frames if s.frames else 0.0
        rule = "different action" if compare_tol is None else f"|delta| > {compare_tol:g}"
        head = f"compare: decisions differ on {n}/{s.frames} frames ({pct:.1f} %, {rule})"
        lines.append(head + (f": {frame_ranges(s.differ)}" if n else ""))
    total = s.stages.get("total")
    infer = s.stages.get("infer")
    if total and infer:
        lines.append(
            f"per frame (first model): total p50 {total['p50_ms']:.2f} ms, infer p50 "
            f"{infer['p50_ms']:.2f} ms"
        )
    if s.saliency:
        lines.append(s.saliency)
    if s.verify is not None:
        lines.extend(s.verify.lines())
    return "\n".join(lines)


# ------------------------------------------------------------------------------ outputs


@contextmanager
def atomic_output(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it and ``os.replace`` it onto
    ``path``; on error remove it. ``suffix`` keeps an extension writers look at (``.mp4``)."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp{suffix}"
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(path: Path, what: str) -> Path:
    """Fail early (before any work) if ``path`` cannot be written."""
    path = path.expanduser()
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file name, e.g. {path / 'replay'}")
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write {what} {path}: folder {parent} does not exist; create it")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write {what} {path}: folder {parent} is not writable")
    return path


class VideoOut:
    """Annotated mp4 (``mp4v``), written to a temp file and renamed when complete.

    Encoding (~5 ms per 960x480 frame) runs in a background thread so it overlaps the next
    frames' inference and drawing; :meth:`write` copies the canvas into a small bounded queue.
    """

    _QUEUE = 8

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import cv2

        self._stack = ExitStack()
        self.tmp = self._stack.enter_context(atomic_output(path, suffix=path.suffix or ".mp4"))
        self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self._writer.isOpened():
            self._writer.release()
            self._stack.close()
            raise ConfigError(
                f"OpenCV cannot write the video {path} (mp4v); use a .mp4 or .avi file name"
            )
        self.frames = 0
        self._closed = False
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(self._QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="replay-video", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            canvas = self._queue.get()
            if canvas is None:
                return
            if self._error is None:
                try:
                    self._writer.write(canvas)
                except Exception as exc:  # surfaced by the next write() / close()
                    self._error = exc

    def write(self, canvas: np.ndarray) -> None:
        if self._error is not None:
            raise ConfigError(f"writing the video failed ({self._error}); check the disk space")
        self._queue.put(canvas.copy())
        self.frames += 1

    def close(self, ok: bool) -> None:
        """Finish encoding; keep the file only if ``ok`` (and no write failed). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._writer.release()
        if ok and self._error is None:
            self._stack.close()
        else:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
        if ok and self._error is not None:
            raise ConfigError(f"writing the video failed ({self._error}); check the disk space")


def write_plot(path: Path, summary: ReplaySummary) -> None:
    """Steering angle and throttle over time, plus the action histogram (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    colors = ("#ff9f1c", "#d633ff")
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), constrained_layout=True)
    ax_s, ax_t, ax_h = axes
    if summary.differ and len(summary.models) == 2:
        t0 = dict(zip(summary.frame_numbers, summary.models[0].t_s))
        half = 0.5 / summary.source_fps if summary.source_fps > 0 else 0.0
        for rng in _ranges(summary.differ):
            a, b = t0.get(rng[0]), t0.get(rng[1])
            if a is None or b is None:
                continue
            for ax in (ax_s, ax_t):
                ax.axvspan(a - half, b + half, color="#ff4d4d", alpha=0.15, lw=0)
    for k, m in enumerate(summary.models):
        ax_s.step(m.t_s, m.steering_deg, where="post", color=colors[k], label=m.name)
        ax_t.step(m.t_s, m.throttle, where="post", color=colors[k], label=m.name)
    ax_s.set_ylabel("steering angle (deg, + = left)")
    ax_s.axhline(0, color="grey", lw=0.6)
    ax_t.set_ylabel("throttle (written to ESC)")
    ax_t.set_xlabel("time in input (s)")
    for ax in (ax_s, ax_t):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8, framealpha=0.8)
    title = "steering and throttle"
    if summary.differ is not None and len(summary.models) == 2:
        title += f" (shaded: models differ, {len(summary.differ)}/{summary.frames} frames)"
    ax_s.set_title(title)

    discrete = [m for m in summary.models if m.labels is not None]
    if discrete and len(discrete) == len(summary.models):
        # one bar group per action; two different action spaces share the groups by label
        same = all(m.labels == discrete[0].labels for m in discrete)
        keys = [lbl if same else lbl.split(": ", 1)[-1] for lbl in discrete[0].labels or ()]
        if not same:
            for m in discrete[1:]:
                keys += [k for k in (lbl.split(": ", 1)[-1] for lbl in m.labels or ())
                         if k not in keys]
        width = 0.8 / len(discrete)
        for k, m in enumerate(discrete):
            counts = np.zeros(len(keys))
            for lbl, n in zip(m.labels or (), m.counts):
                counts[keys.index(lbl if same else lbl.split(": ", 1)[-1])] += n
            x = np.arange(len(keys)) + (k - (len(discrete) - 1) / 2) * width
            ax_h.bar(x, counts, width=width, color=colors[k], label=m.name)
        ax_h.set_xticks(np.arange(len(keys)))
        ax_h.set_xticklabels(keys, rotation=30, ha="right", fontsize=8)
        ax_h.set_ylabel("frames")
        ax_h.set_title("actions chosen")
        ax_h.legend(fontsize=8)
    else:
        for k, m in enumerate(summary.models):
            ax_h.hist(m.steering_deg, bins=21, color=colors[k], alpha=0.6, label=m.name)
        ax_h.set_xlabel("steering angle (deg)")
        ax_h.set_ylabel("frames")
        ax_h.set_title("steering angle histogram")
        ax_h.legend(fontsize=8)
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _ranges(frames: Sequence[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for f in sorted(frames):
        if out and f == out[-1][1] + 1:
            out[-1] = (out[-1][0], f)
        else:
            out.append((f, f))
    return out


# ------------------------------------------------------------------------------ replay


@dataclass
class ReplayOptions:
    """Everything ``car-runtime replay`` takes (see ``car_runtime/cli/replay.py``)."""

    model: str | None  # None: the model a car-runtime recording names
    input: str
    calibration: str | None = None
    max_speed_pct: float | None = None  # None: the recording's, else DEFAULT_MAX_SPEED_PCT
    preprocess: str | None = None  # None: the recording's, else "stock"
    fps: float | None = None
    start: Position | None = None
    end: Position | None = None
    topic: str | None = None
    log: str | None = None
    video: str | None = None
    plot: str | None = None
    compare: str | None = None
    compare_log: str | None = None
    compare_tol: float = DEFAULT_COMPARE_TOL
    sac_squash: bool = False
    device: str = "CPU"
    threads: int | None = None  # inference threads (None: OpenVINO's choice)
    progress: bool | None = None  # None: only on a terminal
    precision: str | None = None  # None: the recording's, else f32
    verify: bool = False  # recompute each recorded decision (car-runtime recordings)
    verify_tol: float = 1e-4  # continuous models: |delta| allowed in angle and throttle
    saliency: bool = False  # occlusion heat map in the video
    saliency_patch: int = 20
    saliency_stride: int = 10


def resolve_calibration(path: str | None) -> tuple[Calibration, str]:
    """``(calibration, description)``: the given file (which must exist), else the car's file if
    present, else the stock defaults."""
    if path is not None:
        return load_calibration(path), str(path)
    if DEFAULT_CALIBRATION_PATH.is_file():
        return load_calibration(DEFAULT_CALIBRATION_PATH), str(DEFAULT_CALIBRATION_PATH)
    return Calibration.defaults(), f"stock defaults ({DEFAULT_CALIBRATION_PATH} not found)"


def open_input(opts: ReplayOptions, *, stereo: bool = False) -> Any:
    """Open INPUT as an unpaced frame source; errors name the problem and the fix."""
    from car_runtime.vision.sources import IMAGE_SUFFIXES, is_rosbag_folder, open_source

    path = Path(opts.input).expanduser()
    if not path.exists():
        raise SourceError(
            f"input {opts.input} does not exist; give a video file, a folder of images or a "
            "rosbag2 folder"
        )
    is_bag = path.is_dir() and is_rosbag_folder(path)
    if path.is_dir() and not is_bag:
        if not stereo and not any(
            p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in path.iterdir()
        ):
            raise SourceError(
                f"folder {path} has no images ({', '.join('*' + s for s in IMAGE_SUFFIXES)}) and "
                "is not a rosbag2 (no metadata.yaml); give a folder of camera frames"
            )
    if opts.topic is not None and not is_bag:
        raise ConfigError(f"--topic only applies to a rosbag2 folder, and {path} is not one")
    fps = opts.fps
    if fps is None and path.is_dir() and not is_bag:
        fps = DEFAULT_FOLDER_FPS
    kwargs: dict[str, Any] = {"fps": fps, "paced": False, "stereo": stereo}
    if opts.topic is not None:
        kwargs["topic"] = opts.topic
    return open_source(str(path), **kwargs)


def _labels(metadata: Any) -> tuple[str, ...] | None:
    from car_runtime.overlay import action_label

    space = metadata.action_space
    if not isinstance(space, DiscreteActionSpace):
        return None
    return tuple(action_label(a.steering_deg, a.speed_mps, i) for i, a in enumerate(space.actions))


def _display_image(frame: Frame) -> np.ndarray:
    """The frame's first image as pixels, for the overlay (decoded again if it is bytes)."""
    import cv2

    img = frame.images[0]
    if isinstance(img, np.ndarray):
        return img
    out = cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_COLOR)
    if out is None:
        raise SourceError(f"frame {frame.seq} could not be decoded; check the source")
    return out


def _check_options(opts: ReplayOptions) -> dict[str, Path]:
    """Validate the options before any work; return the output paths by kind."""
    if opts.max_speed_pct is not None and not (0.0 <= opts.max_speed_pct <= 100.0):
        raise ConfigError(f"--max-speed-pct {opts.max_speed_pct:g} is outside 0..100")
    if opts.verify and opts.compare:
        raise ConfigError("--verify checks one model against the recording; run --compare "
                          "separately")
    if opts.saliency and not opts.video:
        raise ConfigError("--saliency draws a heat map into the annotated video; add -o PATH.mp4")
    if opts.saliency and not (1 <= opts.saliency_stride <= opts.saliency_patch <= 120):
        raise ConfigError("--saliency-patch must be 1..120 px and --saliency-stride 1..patch")
    if not (opts.verify_tol >= 0 and math.isfinite(opts.verify_tol)):
        raise ConfigError(f"--verify-tol must be a number >= 0, got {opts.verify_tol:g}")
    if opts.fps is not None and not (opts.fps > 0 and math.isfinite(opts.fps)):
        raise ConfigError(f"--fps must be a positive number, got {opts.fps:g}")
    if opts.threads is not None and opts.threads < 1:
        raise ConfigError(f"--threads must be 1 or more, got {opts.threads}")
    if opts.compare_log and not opts.compare:
        raise ConfigError("--compare-log needs --compare OTHER_MODEL")
    if opts.plot:
        require_module("matplotlib", "--plot")
    outputs = {}
    for key, what in (("log", "log"), ("video", "video"), ("plot", "plot"),
                      ("compare_log", "compare log")):
        value = getattr(opts, key)
        if value:
            outputs[key] = check_writable(Path(value), what)
    return outputs


def _header(opts: ReplayOptions, models: list[LoadedModel], paths: list[CarPath], source: Any,
            source_fps: float, cal_desc: str) -> list[str]:
    lines = []
    threads = opts.threads or os.cpu_count() or 1
    for m, p in zip(models, paths):
        space = m.metadata.action_space
        lines.append(
            f"model {p.name}: {m.metadata.action_space_type}, {space.size} "
            f"{'actions' if p.discrete else 'outputs'}, {m.metadata.sensors[0]}; loaded in "
            f"{m.load_s:.2f} s, {opts.device} with {threads} inference thread(s)"
        )
    note = ""
    if opts.fps is None and source.description.startswith("folder:"):
        note = " (default for a folder; set --fps)"
    count = f"{source.frame_count} frames" if source.frame_count else "frames"
    lines.append(f"input {source.description}: {count} at {source_fps:.4g} fps{note}")
    damage = getattr(source, "damage", None)
    if damage is not None:
        lines.append(damage.describe())
    lines.append(
        f"{describe_max_speed(opts.max_speed_pct, 'replay')}, preprocess {opts.preprocess}, "
        f"calibration: {cal_desc}"
    )
    return lines


@dataclass
class VerifyResult:
    """``replay --verify``: recorded decisions checked against recomputed ones."""

    checked: int = 0
    unmatched: int = 0  # replayed frames with no recorded decision (e.g. dropped by the recorder)
    mismatches: list = field(default_factory=list)  # audit.Mismatch
    max_output_diff: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: checked frames whose recorded image the recorder JPEG-encoded (the source delivered
    #: pixels: the bag holds a lossy copy of what the car decided on), and those that differ
    #: (expected; listed, not counted as mismatches)
    lossy: int = 0
    lossy_differ: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.checked > 0

    def lines(self, limit: int = 20) -> list[str]:
        out = list(self.notes)
        extra = f" ({self.unmatched} replayed frame(s) had no recorded decision)" if self.unmatched else ""
        k = len(self.lossy_differ)
        if self.checked == 0:
            out.append("verify: no recorded decision matched a replayed frame; nothing verified")
        elif not self.mismatches:
            diff = (f" (max |output difference| {self.max_output_diff:.3g})"
                    if self.checked > self.lossy else "")
            out.append(f"verified {self.checked - k}/{self.checked} frames: identical "
                       f"decisions{diff}{extra}")
        else:
            n = len(self.mismatches)
            out.append(f"verify: decisions differ on {n}/{self.checked} frames{extra}:")
            out.extend(_mismatch_lines(self.mismatches, limit))
        if self.lossy:
            out.append(
                f"{self.lossy} of the frames were JPEG-encoded by the recorder (the source "
                "delivered pixels, e.g. a video file: the bag holds a lossy copy of what the car "
                "saw)" + (f"; on {k} of them the decision made from that copy differs: "
                          "expected, not a mismatch:" if k else "; all decide the same"))
            out.extend(_mismatch_lines(self.lossy_differ, min(limit, 5)))
        return out


def _mismatch_lines(mismatches: list, limit: int) -> list[str]:
    out = []
    for m in mismatches[:limit]:
        out.append(f"  frame {m.frame} (frame_id {m.frame_id}): recorded {m.recorded}")
        out.append(f"  {' ' * len(f'frame {m.frame} (frame_id {m.frame_id})')}  "
                   f"recomputed {m.recomputed}")
    n = len(mismatches)
    if n > limit:
        out.append(f"  ... and {n - limit} more: {frame_ranges([m.frame for m in mismatches])}")
    return out


def _resolve_recording(opts: ReplayOptions, echo: Callable[[str], None]):
    """Fill what ``opts`` leaves open from a car-runtime recording (model, max speed,
    preprocess, precision, calibration). Returns ``(opts, recorded run or None, calibration
    override or None)``."""
    import dataclasses

    from car_runtime.recording.audit import CannotVerify, read_run
    from car_runtime.recording.settings import model_sha256

    recorded = None
    if opts.verify or opts.model is None:
        path = Path(opts.input).expanduser()
        try:
            recorded = read_run(path)
        except CannotVerify as exc:
            if opts.verify:
                raise
            raise ConfigError(f"--model is required: {exc}".replace("cannot verify ", "")
                              .replace("; replay it without --verify", "")) from None
    if recorded is None:
        return dataclasses.replace(
            opts, max_speed_pct=DEFAULT_MAX_SPEED_PCT if opts.max_speed_pct is None
            else opts.max_speed_pct, preprocess=opts.preprocess or "stock",
            precision=opts.precision or "f32"), None, None
    first = recorded.first
    model = opts.model
    if model is None:
        model = first.model_path
        if not Path(model).exists():
            raise ConfigError(
                f"the recorded model {first.model_name} is not at {model} on this computer; "
                "pass it with --model PATH")
    sha = model_sha256(model)
    if first.model_sha256 and sha != first.model_sha256:
        echo(f"note: {model} is not the recorded model (sha256 {sha[:12]} vs recorded "
             f"{first.model_sha256[:12]}); differences may come from that")
    calibration = None
    if opts.calibration is None and first.calibration:
        try:
            calibration = (Calibration.from_stock_dict(first.calibration), "recorded with the run")
        except Exception:  # an unreadable recorded calibration: fall back to the usual choice
            calibration = None
    resolved = dataclasses.replace(
        opts, model=str(model),
        max_speed_pct=first.max_speed_pct if opts.max_speed_pct is None else opts.max_speed_pct,
        preprocess=opts.preprocess or first.preprocess or "stock",
        precision=opts.precision or first.precision or "f32",
        sac_squash=opts.sac_squash or first.sac_squash,
    )
    return resolved, recorded, calibration


def _check_decision(verify: VerifyResult, recorded: Any, path: "CarPath", rec: FrameRecord,
                    frame_no: int, frame_id: int, tol: float, lossy: bool = False) -> bool:
    """Compare one recomputed decision (and its pulses, if the car drove) with the recording;
    True if they differ. ``lossy``: the recorded image is the recorder's JPEG of the pixels the
    car saw (a difference there is expected and kept apart)."""
    from car_runtime.recording.audit import Mismatch, decisions_match, describe_decision

    d = path.last.decision if path.last is not None else None
    if d is None:
        return False
    verify.checked += 1
    verify.lossy += lossy
    rec_out = np.asarray(recorded.output, np.float64)
    new_out = np.asarray(path.last.output, np.float64).reshape(-1)
    if rec_out.shape == new_out.shape and rec_out.size and not lossy:
        diff = np.abs(rec_out - new_out)
        if np.isfinite(diff).all():
            verify.max_output_diff = max(verify.max_output_diff, float(diff.max()))
    same = decisions_match(recorded, d.action_index, d.angle, d.throttle, tol)
    # the write carried the decision (not neutral for a frame that aged, not clamped): its
    # pulses must be what the recorded calibration makes of the decision
    drove = (recorded.state == "armed" and not recorded.event and recorded.decision_valid
             and recorded.angle == recorded.decision_angle
             and recorded.throttle == recorded.decision_throttle)
    pulses_same = not drove or (int(recorded.servo_ns), int(recorded.motor_ns)) == (
        rec.servo_ns, rec.motor_ns)
    if same and pulses_same:
        return False
    (verify.lossy_differ if lossy else verify.mismatches).append(Mismatch(
        frame_no, frame_id,
        describe_decision(int(recorded.action_index), recorded.steering_deg, recorded.speed_mps,
                          recorded.decision_angle, recorded.decision_throttle,
                          (int(recorded.servo_ns), int(recorded.motor_ns)) if drove else None),
        describe_decision(d.action_index, d.steering_deg, d.speed_mps, d.angle, d.throttle,
                          (rec.servo_ns, rec.motor_ns) if drove else None),
    ))
    return True


def replay(opts: ReplayOptions, *, echo: Callable[[str], None] = print) -> ReplaySummary:
    """Run the replay described by ``opts``; write the requested outputs; return the summary.

    Outputs appear only when the replay completes (temp file + rename); an error or Ctrl-C
    leaves no partial file. With ``opts.verify`` (a car-runtime recording), every recorded
    decision is recomputed with the recorded settings; ``summary.verify`` has the result.
    """
    from tqdm import tqdm

    from car_runtime.model.policy import load_model
    from car_runtime.overlay import COLORS, OverlayRenderer, PanelSpec, PanelState
    from car_runtime.recording.messages import REENCODED_FORMATS

    outputs = _check_options(opts)
    speed_per_frame = opts.verify and opts.max_speed_pct is None
    opts, recorded, recorded_cal = _resolve_recording(opts, echo)
    calibration, cal_desc = recorded_cal or resolve_calibration(opts.calibration)
    verify = VerifyResult() if opts.verify else None
    # The thread count is the same with or without -o: OpenVINO's float sums depend on it
    # (~1e-7) and a log must not change because a video was asked for.
    with ExitStack() as stack:
        models = [stack.enter_context(load_model(m, device=opts.device, threads=opts.threads,
                                                 precision=opts.precision))
                  for m in (opts.model, opts.compare) if m]
        stereo = models[0].metadata.is_stereo
        if any(m.metadata.is_stereo != stereo for m in models):
            raise ConfigError("--compare needs two models with the same cameras (mono vs stereo)")
        source = stack.enter_context(open_input(opts, stereo=stereo))
        source_fps = float(source.fps or DEFAULT_FOLDER_FPS)
        paths: list[CarPath] = []
        for m in models:
            path = CarPath(m, calibration, preprocess=opts.preprocess,
                           max_speed_pct=opts.max_speed_pct, sac_squash=opts.sac_squash)
            stack.callback(path.close)
            paths.append(path)
        for line in _header(opts, models, paths, source, source_fps, cal_desc):
            echo(line)
        if verify is not None and recorded is not None:
            echo(f"verify: {len(recorded.decisions)} recorded decisions, settings from the "
                 f"recording (max speed {'as recorded per frame' if speed_per_frame else f'{opts.max_speed_pct:g} %'}, "
                 f"preprocess {opts.preprocess}, precision {opts.precision})")

        saliency = None
        if opts.saliency:
            from car_runtime.model.archive import open_model
            from car_runtime.saliency import OcclusionSaliency

            with open_model(opts.model) as bundle:
                saliency = OcclusionSaliency(
                    bundle.model_path, bundle.metadata, patch=opts.saliency_patch,
                    stride=opts.saliency_stride, device=opts.device, precision=opts.precision,
                    threads=opts.threads)
        renderer = video = None
        if "video" in outputs:
            renderer = OverlayRenderer([
                PanelSpec(p.name, _labels(p.metadata), p.metadata.action_space.max_steering_deg,
                          COLORS[k])
                for k, p in enumerate(paths)
            ])
            video = VideoOut(outputs["video"], source_fps, renderer.size)
        logs = []
        for key in ("log", "compare_log"):
            fh = None
            if key in outputs:
                tmp = stack.enter_context(atomic_output(outputs[key]))
                fh = stack.enter_context(open(tmp, "w", encoding="utf-8"))
            logs.append(fh)

        stats = [
            ModelStats(p.name, _labels(p.metadata),
                       [0] * p.metadata.action_space.size if p.discrete else [])
            for p in paths
        ]
        summary = ReplaySummary(0, 0.0, source_fps, stats, [] if len(paths) == 2 else None)
        summary.verify = verify
        ok = False
        try:
            bar = stack.enter_context(tqdm(
                total=_expected_frames(source.frame_count, opts.start, opts.end), unit="frame",
                file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=None if opts.progress is None else not opts.progress,
            ))
            t_start = time.perf_counter()
            for frame in source:
                frame_no = frame.seq - 1
                if opts.start is not None and not opts.start.reached(frame_no, frame.media_t_s):
                    continue
                if opts.end is not None and opts.end.reached(frame_no, frame.media_t_s):
                    break
                recorded_write, frame_id = None, -1
                if verify is not None and recorded is not None:
                    fid = str(frame.meta.get("frame_id", ""))
                    frame_id = int(fid) if fid.lstrip("-").isdigit() else -1
                    recorded_write = recorded.decisions.get(frame_id)
                    if speed_per_frame and "stamp_ns" in frame.meta:
                        paths[0].pipeline.mapper.max_speed_pct = recorded.settings_at(
                            frame.meta["stamp_ns"]).max_speed_pct
                try:
                    records = [p.step(frame, frame_no) for p in paths]
                except SourceError as exc:  # e.g. a corrupt JPEG: say which frame
                    where = frame.meta.get("file") or f"frame {frame_no}"
                    raise SourceError(f"{where}: {exc}") from None
                for fh, rec in zip(logs, records):
                    if fh is not None:
                        fh.write(json.dumps(rec.to_json(), allow_nan=False) + "\n")
                for st, rec in zip(stats, records):
                    st.add(rec)
                differ = len(records) == 2 and decisions_differ(*records, opts.compare_tol)
                if differ:
                    summary.differ.append(frame_no)  # type: ignore[union-attr]
                if verify is not None:
                    if recorded_write is None:
                        verify.unmatched += 1
                    else:
                        differ = _check_decision(
                            verify, recorded_write, paths[0], records[0], frame_no, frame_id,
                            opts.verify_tol, lossy=frame.meta.get("format") in REENCODED_FORMATS)
                if video is not None and renderer is not None:
                    states = [PanelState(p.last.output, p.last.decision, r.servo_ns, r.motor_ns,
                                         r.driven)
                              for p, r in zip(paths, records) if p.last is not None]
                    heat = None
                    if saliency is not None:
                        heat = saliency.heat(_model_input_hwc(paths[0]))
                    video.write(renderer.render(
                        _display_image(frame), paths[0].pipeline.model_input(), states,
                        frame_no=frame_no, t_s=frame.media_t_s, differ=differ, heat=heat,
                        differ_text="DIFFERS FROM RECORDING" if verify is not None else None,
                    ))
                summary.frames += 1
                summary.frame_numbers.append(frame_no)
                bar.update(1)
            if summary.frames == 0:
                where = " and ".join(
                    f"--{n} {v}" for n, v in (("start", opts.start), ("end", opts.end)) if v)
                raise SourceError(
                    f"no frames replayed from {opts.input}"
                    + (f" (range {where}); check the range" if where else "; the input is empty")
                )
            if video is not None:  # the encoder's backlog counts in the measured time
                video.close(True)
            summary.wall_s = time.perf_counter() - t_start
            ok = True
        finally:
            if video is not None and not ok:
                video.close(False)
        summary.stages = paths[0].pipeline.timer.summary()
        if saliency is not None:
            summary.saliency = saliency.cost_line()
    if "plot" in outputs:
        write_plot(outputs["plot"], summary)
    return summary


def _model_input_hwc(path: CarPath) -> np.ndarray:
    """The float model input of the last step as [H, W, C] (a copy)."""
    policy = path.pipeline.policy
    buf = policy.input_buffer[0]
    return (buf if policy.input.layout == "NHWC" else np.moveaxis(buf, 0, -1)).copy()


def _expected_frames(count: int | None, start: Position | None, end: Position | None) -> int | None:
    if count is None:
        return None
    if (start is not None and start.unit != "frame") or (end is not None and end.unit != "frame"):
        return count
    lo = int(start.value) if start else 0
    hi = min(count, int(end.value)) if end else count
    return max(0, hi - lo)
