"""How fast is this model on this car, stage by stage: the measurement behind ``car-runtime bench``.

Bench drives the very code ``run`` drives: a :class:`~car_runtime.pipeline.Pipeline` (decode ->
preprocess -> infer -> decide) inside a :class:`~car_runtime.runtime.DriveLoop`, whose per-frame
step gates the decision and writes it through an :class:`~car_runtime.actuation.output.Actuator`
(``actuate``), all timed on the shared :class:`~car_runtime.timing.StageTimer`. Only the frame
supply differs: frames are handed to the loop's per-frame step (``DriveLoop.drive_one``, the
method ``DriveLoop.run`` calls) one by one, as fast as it takes them (a live camera goes through
the same latest-frame slot as in ``run``), so every frame is measured.

Measured per run (:class:`BenchResult`):

- ``load_s``: archive -> compiled model ready (extract + read + reshape + compile);
  ``compile_s``: OpenVINO's compile alone;
- ``first_decision_s``: ``load_s`` + building the pipeline + the first (cold) frame through every
  stage up to the written command -- how long after start the car can act, not counting the wait
  for the camera's first frame;
- per-stage latency over ``frames_count`` frames after ``warmup`` frames (and the cold one);
- ``fps``: measured frames / wall time of the measured loop (includes fetching frames from the
  source; a live camera caps it at its own rate);
- ``cpu_ms_per_frame``: process CPU time (all threads: OpenVINO's pool, a camera thread) per
  measured frame; ``rss_mb``: the process's peak resident memory so far (``ru_maxrss``).

Default frames (:func:`default_footage_dir`, :func:`camera_like_jpegs`): the bundled real car footage (160x120 JPEGs), upscaled
to 640x480 and JPEG-encoded at quality 80, 4:2:2, in memory -- the size and format the car's
MJPEG camera delivers. Upscaled frames carry less fine detail than native 640x480 ones, so the
decode stage is somewhat optimistic; use ``--frames DIR`` with real 640x480 JPEGs or
``--camera`` on the car for the real figure.
"""

from __future__ import annotations

import itertools
import os
import resource
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from car_runtime.config import MAX_SPEED_DEFAULTS, describe_max_speed
from car_runtime.errors import ConfigError, SourceError
from car_runtime.timing import PIPELINE_STAGES, TOTAL, StageTimer, now_s
from car_runtime.vision.frame import Frame, Image, LatestFrameSlot
from car_runtime.vision.sources import FrameSource

#: Stage names in the report, in pipeline order (plus ``total``).
STAGES = (*PIPELINE_STAGES, TOTAL)
#: Percentile keys per stage in the report and in ``--json``.
PCT_KEYS = ("p50_ms", "p90_ms", "p99_ms", "max_ms")

CAMERA_WIDTH, CAMERA_HEIGHT = 640, 480
JPEG_QUALITY = 80
HINTS = ("latency", "throughput")
SWEEP_PREPROCESS = ("stock", "fast")
#: A live camera that delivers no frame for this long is an error.
CAMERA_TIMEOUT_S = 5.0


# ------------------------------------------------------------------------------------------------
# settings and results


@dataclass(frozen=True)
class BenchSettings:
    """One bench configuration. ``threads=None`` = all cores (as ``run``)."""

    model: str
    device: str = "CPU"
    precision: str = "f32"
    hint: str = "latency"
    threads: int | None = None
    preprocess: str = "stock"
    frames_count: int = 300
    warmup: int = 30
    output: str = "record:"
    calibration: str | None = None  # None: stock file if present, else defaults
    max_speed_pct: float = MAX_SPEED_DEFAULTS["bench"]  # the motor never spins unless asked
    deadline_s: float = 0.1  # as ``run`` (its default --deadline-ms 100)
    max_frame_age_s: float = 0.1  # as ``run``

    def validate(self) -> "BenchSettings":
        if self.frames_count < 1:
            raise ConfigError(f"--frames-count must be at least 1, got {self.frames_count}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.hint not in HINTS:
            raise ConfigError(f"--hint {self.hint!r} is not one of {', '.join(HINTS)}")
        if not 0.0 <= self.max_speed_pct <= 100.0:
            raise ConfigError(f"--max-speed-pct must be within 0..100, got {self.max_speed_pct:g}")
        return self


@dataclass
class BenchResult:
    """What one bench run measured; :meth:`to_json` is the exact ``--json`` document."""

    settings: BenchSettings
    model_name: str
    model_info: str  # format, action space, input shape and layout
    openvino: str
    frames: str  # description of the frame supply
    load_s: float
    read_s: float
    compile_s: float
    first_decision_s: float
    first_frame_ms: float
    stages: dict[str, dict[str, float]]  # stage -> PCT_KEYS
    samples_ms: dict[str, np.ndarray]  # stage -> per-frame durations, frame-aligned
    fps: float
    cpu_ms_per_frame: float
    rss_mb: float
    compiled: dict[str, str] = field(default_factory=dict)  # effective OpenVINO properties
    driven: int = 0  # frames whose decision was written as a command
    stale: int = 0  # frames older than max_frame_age_s: neutral written instead, as in ``run``
    deadline_misses: int = 0  # the actuator's watchdog wrote neutral (a frame took > deadline)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.settings.model,
            "device": self.settings.device,
            "openvino": self.openvino,
            "load_s": round(self.load_s, 6),
            "compile_s": round(self.compile_s, 6),
            "first_decision_s": round(self.first_decision_s, 6),
            "stages": {
                name: {k: round(self.stages[name][k], 4) for k in PCT_KEYS} for name in STAGES
            },
            "fps": round(self.fps, 2),
            "cpu_ms_per_frame": round(self.cpu_ms_per_frame, 4),
            "rss_mb": round(self.rss_mb, 1),
        }

    def p99_total_ms(self) -> float:
        return self.stages[TOTAL]["p99_ms"]


def percentiles_ms(samples_ms: np.ndarray) -> dict[str, float]:
    """``{"p50_ms", "p90_ms", "p99_ms", "max_ms"}`` of one stage's samples."""
    p50, p90, p99 = np.percentile(samples_ms, (50, 90, 99))
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "max_ms": float(samples_ms.max())}


# ------------------------------------------------------------------------------------------------
# frame supply


class MemorySource(FrameSource):
    """Encoded frames held in memory, delivered in order and cycled forever (bench input)."""

    def __init__(self, images: Sequence[tuple[Image, ...]], description: str) -> None:
        if not images:
            raise SourceError(f"{description}: no frames")
        super().__init__(description, paced=False)
        self._images = list(images)
        self.frame_count = len(self._images)

    def _produce(self, paced: bool) -> Iterator[Frame]:
        for seq, images in enumerate(itertools.cycle(self._images), start=1):
            t_s = now_s()
            self._delivered(t_s)
            yield Frame(seq=seq, t_capture_s=t_s, images=images, media_t_s=(seq - 1) / 30.0)


@dataclass
class FrameSupply:
    """A frame source for bench plus how to read it: ``live`` sources (cameras) feed a
    latest-frame slot from their own thread as in ``run``; file sources are iterated and cycled."""

    source: FrameSource
    description: str
    live: bool
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.source.close()


def default_footage_dir() -> Path | None:
    """The bundled real footage (package data ``car_runtime/data/footage``); None if absent."""
    from car_runtime import data

    return data.FOOTAGE if data.FOOTAGE.is_dir() else None


def camera_like_jpegs(folder: Path, *, width: int = CAMERA_WIDTH, height: int = CAMERA_HEIGHT,
                      quality: int = JPEG_QUALITY) -> list[bytes]:
    """Every image in ``folder`` (sorted by name), resized to ``width`` x ``height`` and
    re-encoded as a baseline 4:2:2 JPEG at ``quality``, like a UVC camera's MJPEG frames."""
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_422"):
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]
    out: list[bytes] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            continue
        if img.shape[:2] != (height, width):
            img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
        ok, buf = cv2.imencode(".jpg", img, params)
        if ok:
            out.append(buf.tobytes())
    if not out:
        raise SourceError(f"no readable images in {folder}; pass --frames DIR|VIDEO")
    return out


def open_supply(
    frames: str | None = None,
    camera: str | None = None,
    *,
    channels: int = 1,
    camera_fps: float = 30.0,
) -> FrameSupply:
    """The frames to bench with: ``--frames DIR|VIDEO``, ``--camera DEV`` or (neither) the bundled
    footage as camera-like 640x480 JPEGs. ``channels=2`` (stereo models) pairs images."""
    from car_runtime.vision.sources import open_source

    if frames and camera:
        raise ConfigError("pass either --frames DIR|VIDEO or --camera DEV, not both")
    stereo = channels == 2
    if camera:
        source = open_source(camera, fps=camera_fps, stereo=stereo)
        return FrameSupply(source, f"camera {camera} ({source.description})", live=True,
                           notes=["throughput is capped by the camera's frame rate"])
    if frames:
        path = Path(frames).expanduser()
        if not path.exists():
            raise SourceError(f"--frames {frames}: no such folder or video file; check the path")
        source = open_source(str(path), paced=False, stereo=stereo)
        notes = []
        if path.is_file():
            notes.append("video frames arrive already decoded (BGR), so decode is ~0 here; the "
                         "car's MJPEG camera delivers JPEGs (bench a folder of JPEGs to include "
                         "it)")
        count = f", {source.frame_count} frames" if source.frame_count else ""
        return FrameSupply(source, f"{source.description}{count}", live=False, notes=notes)
    folder = default_footage_dir()
    if folder is None:
        raise SourceError(
            "the bundled footage is not part of this install; pass --frames DIR|VIDEO "
            "(a folder of camera JPEGs or a video) or --camera DEV"
        )
    jpegs = camera_like_jpegs(folder)
    images = [(j,) * channels for j in jpegs]
    kb = sum(len(j) for j in jpegs) / len(jpegs) / 1024
    desc = (f"bundled real car footage ({len(jpegs)} frames, 160x120 upscaled to "
            f"{CAMERA_WIDTH}x{CAMERA_HEIGHT}, JPEG q{JPEG_QUALITY} 4:2:2 in memory, "
            f"{kb:.0f} KB each: like the car's MJPEG camera)")
    notes = []
    if stereo:
        notes.append("stereo model: the same image feeds both cameras")
    return FrameSupply(MemorySource(images, "memory:footage"), desc, live=False, notes=notes)


def _frames(supply: FrameSupply) -> Iterator[Frame]:
    """Frames for the loop, forever: a live source through a latest-frame slot (as ``run``),
    a file source cycled from the start at its end."""
    if not supply.live:
        while True:
            got = False
            for frame in supply.source:
                got = True
                yield frame
            if not got:
                raise SourceError(f"{supply.description}: no frames")
    slot = LatestFrameSlot()
    supply.source.start(slot)
    try:
        last = 0
        while True:
            frame = slot.wait_newer(last, CAMERA_TIMEOUT_S)
            if frame is None:
                err = supply.source.error
                why = f": {err}" if err is not None else ""
                if slot.closed:
                    raise SourceError(f"{supply.description} stopped delivering frames{why}; "
                                      "check the camera, or bench fewer --frames-count")
                raise SourceError(
                    f"{supply.description} delivered no frame for {CAMERA_TIMEOUT_S:g} s{why}; "
                    "check the camera (car-runtime run --camera DEV shows its health)"
                )
            last = frame.seq
            yield frame
    finally:
        supply.source.stop()


# ------------------------------------------------------------------------------------------------
# measuring


_FORMATS = {"pb": "frozen graph (.pb)", "ir": "OpenVINO IR"}
_KINDS = {"archive": "in an archive", "folder": "in a folder", "file": "file"}


def _openvino_version() -> str:
    from car_runtime.model.policy import import_openvino

    return import_openvino().__version__.split("-")[0]


def _calibration(settings: BenchSettings):
    from car_runtime.actuation.calibration import Calibration, load_calibration

    if settings.output.strip().startswith("record:") and settings.calibration is None:
        return Calibration.defaults()
    return load_calibration(settings.calibration, missing="defaults")


def _rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


Progress = Callable[[int], None]


def measure(
    loaded: Any,
    settings: BenchSettings,
    supply: FrameSupply,
    *,
    progress: Progress | None = None,
) -> BenchResult:
    """Bench one compiled model (a :class:`~car_runtime.model.policy.LoadedModel`) with one
    preprocess mode: the cold frame, ``warmup`` frames, then ``frames_count`` measured frames.
    ``progress(n)`` is called with the number of frames just done (outside the timed stages)."""
    import cv2

    from car_runtime.actuation.output import Actuator, open_output
    from car_runtime.control.safety import State
    from car_runtime.pipeline import Pipeline
    from car_runtime.runtime import DriveLoop

    cv2.setNumThreads(1)  # as `run`: OpenVINO owns the cores
    calibration = _calibration(settings)
    tick = progress or (lambda n: None)
    with Actuator(open_output(settings.output, calibration), calibration,
                  deadline_s=settings.deadline_s) as actuator:
        t0 = time.perf_counter()
        pipeline = Pipeline(loaded.policy, preprocess=settings.preprocess,
                            max_speed_pct=settings.max_speed_pct,
                            timer=StageTimer(PIPELINE_STAGES, capacity=1))
        build_s = time.perf_counter() - t0
        loop = DriveLoop(supply.source, pipeline, actuator, armed=True,
                         max_frame_age_s=settings.max_frame_age_s)
        loop.apply_pending()  # the ARM event, as at the top of DriveLoop.run
        if loop.state is not State.ARMED:
            raise RuntimeError(f"bench could not arm the drive loop (state {loop.state.value})")
        frames = _frames(supply)
        try:
            def drive(n: int) -> None:
                """Push frames through ``run``'s per-frame step until ``n`` passes are timed."""
                timer = pipeline.timer
                start = timer.frames
                max_stale = loop.stats.stale + 10 * n + 100
                while timer.frames - start < n:
                    before = timer.frames
                    loop.drive_one(next(frames))
                    if timer.frames != before:
                        tick(1)
                    elif loop.stats.stale > max_stale:
                        raise SourceError(
                            f"{supply.description}: frames keep arriving older than "
                            f"{settings.max_frame_age_s * 1e3:g} ms; the camera lags"
                        )

            drive(1)
            first_frame_ms = float(pipeline.timer.samples_ms(TOTAL)[0])
            drive(settings.warmup)
            pipeline.timer = StageTimer(PIPELINE_STAGES, capacity=settings.frames_count)
            stale0, driven0 = loop.stats.stale, loop.stats.driven
            misses0 = actuator.deadline_misses
            cpu0, wall0 = time.process_time(), time.perf_counter()
            drive(settings.frames_count)
            wall_s = time.perf_counter() - wall0
            cpu_s = time.process_time() - cpu0
            misses = actuator.deadline_misses - misses0
        finally:
            frames.close()
        rss_mb = _rss_mb()
    timer = pipeline.timer
    samples = {name: timer.samples_ms(name) for name in STAGES}
    policy = loaded.policy
    n = settings.frames_count
    return BenchResult(
        settings=settings,
        model_name=loaded.bundle.name,
        model_info=_model_info(loaded),
        openvino=_openvino_version(),
        frames=supply.description,
        load_s=loaded.load_s,
        read_s=policy.read_s,
        compile_s=policy.compile_s,
        first_decision_s=loaded.load_s + build_s + first_frame_ms / 1e3,
        first_frame_ms=first_frame_ms,
        stages={name: percentiles_ms(samples[name]) for name in STAGES},
        samples_ms=samples,
        fps=n / wall_s if wall_s > 0 else float("inf"),
        cpu_ms_per_frame=cpu_s * 1e3 / n,
        rss_mb=rss_mb,
        compiled=policy.compiled_properties(),
        driven=loop.stats.driven - driven0,
        stale=loop.stats.stale - stale0,
        deadline_misses=misses,
        notes=list(supply.notes),
    )


def _model_info(loaded: Any) -> str:
    bundle, meta, inp = loaded.bundle, loaded.metadata, loaded.policy.input
    return (f"{_FORMATS.get(bundle.fmt, bundle.fmt)} {_KINDS.get(bundle.kind, bundle.kind)}, "
            f"{meta.action_space_type} action space, {meta.action_space.size} outputs, "
            f"input {'x'.join(str(d) for d in inp.shape)} {inp.layout}")


def load(settings: BenchSettings) -> Any:
    """Open and compile the model as ``run`` does (:func:`~car_runtime.model.policy.load_model`)."""
    from car_runtime.model.policy import load_model

    return load_model(settings.model, device=settings.device, precision=settings.precision,
                      hint=settings.hint, threads=settings.threads)


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm

    # On stderr, only on a terminal (disable=None); updated between frames, never inside a stage.
    return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, leave=False, disable=None,
                mininterval=0.2)


def bench(
    settings: BenchSettings,
    *,
    frames: str | None = None,
    camera: str | None = None,
    camera_fps: float = 30.0,
    show_progress: bool = True,
) -> BenchResult:
    """Load the model, open the frames and measure once (``car-runtime bench``)."""
    settings.validate()
    loaded = load(settings)
    supply = open_supply(frames, camera, channels=loaded.policy.channels, camera_fps=camera_fps)
    try:
        total = 1 + settings.warmup + settings.frames_count
        if show_progress:
            with _progress_bar(total, "bench") as bar:
                return measure(loaded, settings, supply, progress=bar.update)
        return measure(loaded, settings, supply)
    finally:
        supply.close()
        loaded.close()


@dataclass
class SweepResult:
    results: list[BenchResult]

    @property
    def best(self) -> BenchResult:
        return min(self.results, key=lambda r: r.p99_total_ms())

    def best_for_run(self) -> BenchResult:
        """The fastest setting ``car-runtime run`` can use (it always compiles for latency)."""
        usable = [r for r in self.results if r.settings.hint == "latency"] or self.results
        return min(usable, key=lambda r: r.p99_total_ms())

    def to_json(self) -> dict[str, Any]:
        best = self.best
        first = self.results[0]
        return {
            "model": first.settings.model,
            "device": first.settings.device,
            "openvino": first.openvino,
            "runs": [
                {"threads": r.settings.threads, "hint": r.settings.hint,
                 "preprocess": r.settings.preprocess, **r.to_json()}
                for r in self.results
            ],
            "best": {"threads": best.settings.threads, "hint": best.settings.hint,
                     "preprocess": best.settings.preprocess,
                     "p99_total_ms": round(best.p99_total_ms(), 4)},
        }


def sweep_settings(settings: BenchSettings, cores: int | None = None) -> list[BenchSettings]:
    """Threads 1..cores x hint latency/throughput x preprocess stock/fast."""
    cores = cores or os.cpu_count() or 1
    return [replace(settings, threads=t, hint=h, preprocess=p)
            for t in range(1, cores + 1) for h in HINTS for p in SWEEP_PREPROCESS]


def merge(results: Sequence[BenchResult]) -> BenchResult:
    """One result from several runs of the same setting (sweep rounds): samples concatenated
    (still frame-aligned), percentiles recomputed; load and first-decision figures from the
    first run, throughput and CPU time over all measured frames, the highest peak RSS."""
    first = results[0]
    if len(results) == 1:
        return first
    samples = {name: np.concatenate([r.samples_ms[name] for r in results]) for name in STAGES}
    n = sum(r.settings.frames_count for r in results)
    wall_s = sum(r.settings.frames_count / r.fps for r in results if r.fps > 0)
    cpu_ms = sum(r.cpu_ms_per_frame * r.settings.frames_count for r in results)
    return replace(
        first,
        settings=replace(first.settings, frames_count=n),
        stages={name: percentiles_ms(samples[name]) for name in STAGES},
        samples_ms=samples,
        fps=n / wall_s if wall_s > 0 else float("inf"),
        cpu_ms_per_frame=cpu_ms / n,
        rss_mb=max(r.rss_mb for r in results),
        driven=sum(r.driven for r in results),
        stale=sum(r.stale for r in results),
        deadline_misses=sum(r.deadline_misses for r in results),
    )


def sweep(
    settings: BenchSettings,
    *,
    frames: str | None = None,
    camera: str | None = None,
    camera_fps: float = 30.0,
    rounds: int = 3,
    show_progress: bool = True,
) -> SweepResult:
    """Bench every :func:`sweep_settings` combination.

    One compiled model per (threads, hint), all held at once; the frames are split into
    ``rounds`` that visit every combination in turn (each after its own warm-up), so a busy
    spell on the machine spreads over all settings instead of penalising one. Peak RSS is the
    process's, with every compiled model loaded.
    """
    settings.validate()
    combos = sweep_settings(settings)
    rounds = max(1, min(rounds, settings.frames_count))
    shares = [settings.frames_count // rounds + (1 if i < settings.frames_count % rounds else 0)
              for i in range(rounds)]
    total = sum(len(combos) * (1 + settings.warmup + n) for n in shares)
    bar = _progress_bar(total, "sweep") if show_progress else None
    loaded: dict[tuple[int | None, str], Any] = {}
    supply: FrameSupply | None = None
    runs: dict[int, list[BenchResult]] = {i: [] for i in range(len(combos))}
    try:
        for s in combos:
            key = (s.threads, s.hint)
            if key not in loaded:
                loaded[key] = load(s)
        if supply is None:
            channels = next(iter(loaded.values())).policy.channels
            supply = open_supply(frames, camera, channels=channels, camera_fps=camera_fps)
        for n in shares:
            for i, s in enumerate(combos):
                if bar is not None:
                    bar.set_postfix_str(f"threads {s.threads} {s.hint} {s.preprocess}")
                runs[i].append(measure(loaded[(s.threads, s.hint)], replace(s, frames_count=n),
                                       supply, progress=bar.update if bar is not None else None))
    finally:
        if bar is not None:
            bar.close()
        if supply is not None:
            supply.close()
        for m in loaded.values():
            m.close()
    return SweepResult([merge(runs[i]) for i in range(len(combos))])


# ------------------------------------------------------------------------------------------------
# reporting


def host_description() -> str:
    """``"<cpu model>, N cores"`` from /proc/cpuinfo where available."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name or 'unknown CPU'}, {os.cpu_count() or 1} cores"


def verdict(result: BenchResult, camera_fps: float) -> str:
    """``p99 total X ms = Y % of the P ms frame period at F fps`` plus what it means."""
    period_ms = 1e3 / camera_fps
    p99 = result.p99_total_ms()
    pct = 100.0 * p99 / period_ms
    line = (f"p99 total {p99:.2f} ms = {pct:.1f} % of the {period_ms:.1f} ms frame period at "
            f"{camera_fps:g} fps")
    if pct < 50:
        return line + ": keeps up with the camera with room to spare"
    if pct < 100:
        return line + ": keeps up with the camera, little headroom"
    return line + ": slower than the camera, frames will be skipped"


def format_table(result: BenchResult, camera_fps: float) -> str:
    s = result.settings
    c = result.compiled
    threads = c.get("threads") or (str(s.threads) if s.threads else "all")
    eff_precision = c.get("precision")
    if eff_precision is None:
        precision = f"not reported by {s.device} (asked {s.precision})"
    elif eff_precision == s.precision:
        precision = s.precision
    else:
        precision = f"{s.precision} requested, OpenVINO runs {eff_precision}"
    devices = f" (runs on {c['devices']})" if c.get("devices") and c["devices"] != s.device else ""
    lines = [
        f"model     {result.model_name}: {result.model_info}",
        f"runtime   OpenVINO {result.openvino} on {s.device}{devices}, precision {precision}, "
        f"hint {s.hint}, {threads} threads, "
        + (f"{c['streams']} stream(s), " if "streams" in c else "")
        + f"preprocess {s.preprocess}",
        f"host      {host_description()}",
        f"frames    {result.frames}; {s.frames_count} measured after {s.warmup} warm-up",
        f"output    {s.output}{' (memory)' if s.output.strip() == 'record:' else ''}, "
        + describe_max_speed(s.max_speed_pct, "bench"),
        "",
        f"load (archive -> ready)  {result.load_s:7.3f} s  (read {result.read_s:.3f} s, "
        f"compile {result.compile_s:.3f} s)",
        f"first decision           {result.first_decision_s:7.3f} s  (archive -> first command "
        f"written; first frame {result.first_frame_ms:.1f} ms cold)",
        "",
        f"{'stage':<12}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}",
    ]
    for name in STAGES:
        st = result.stages[name]
        if name == TOTAL:
            lines.append("-" * 48)
        lines.append(f"{name:<12}" + "".join(f"{st[k]:9.3f}" for k in PCT_KEYS))
    lines += [
        "",
        f"throughput {result.fps:.1f} fps   CPU {result.cpu_ms_per_frame:.2f} ms/frame   "
        f"peak RSS {result.rss_mb:.0f} MB",
    ]
    if result.stale:
        lines.append(f"stale     {result.stale} frame(s) were older than "
                     f"{s.max_frame_age_s * 1e3:g} ms by the time of their decision and were not "
                     "acted on (neutral written instead, as `run` does)")
    if result.deadline_misses:
        lines.append(f"deadline  {result.deadline_misses} time(s) no command came within "
                     f"{s.deadline_s * 1e3:g} ms and the watchdog wrote neutral (is the machine "
                     "busy with something else?)")
    lines += [f"note      {n}" for n in result.notes]
    lines.append(f"verdict   {verdict(result, camera_fps)}")
    return "\n".join(lines)


def format_sweep(sweep_result: SweepResult, camera_fps: float) -> str:
    first = sweep_result.results[0]
    lines = [
        f"model     {first.model_name}: {first.model_info}",
        f"runtime   OpenVINO {first.openvino} on {first.settings.device}, precision "
        f"{first.settings.precision}; host {host_description()}",
        f"frames    {first.frames}; {first.settings.frames_count} measured after "
        f"{first.settings.warmup} warm-up per setting and round (settings take turns)",
        "",
        f"{'threads':>7} {'hint':<10} {'preprocess':<10} {'decode':>8} {'infer':>8} "
        f"{'total p50':>10} {'total p99':>10} {'fps':>8} {'load s':>7}",
    ]
    best = sweep_result.best
    for r in sweep_result.results:
        st = r.stages
        mark = "  <- fastest" if r is best else ""
        lines.append(
            f"{r.settings.threads:>7} {r.settings.hint:<10} {r.settings.preprocess:<10} "
            f"{st['decode']['p50_ms']:8.3f} {st['infer']['p50_ms']:8.3f} "
            f"{st[TOTAL]['p50_ms']:10.3f} {st[TOTAL]['p99_ms']:10.3f} {r.fps:8.1f} "
            f"{r.load_s:7.3f}{mark}"
        )
    lines.append("(per-stage columns are p50 in ms)")
    lines.append("")
    bs = best.settings
    lines.append(f"fastest   --threads {bs.threads} --hint {bs.hint} --preprocess {bs.preprocess} "
                 f"(p99 total {best.p99_total_ms():.2f} ms)")
    ranked = sorted(sweep_result.results, key=lambda r: r.p99_total_ms())
    if len(ranked) > 1 and ranked[1].p99_total_ms() <= 1.1 * ranked[0].p99_total_ms():
        rs = ranked[1].settings
        lines.append(f"close     --threads {rs.threads} --hint {rs.hint} --preprocess "
                     f"{rs.preprocess} is within 10 % (p99 total {ranked[1].p99_total_ms():.2f} "
                     "ms): that difference is noise, either is fine")
    for_run = sweep_result.best_for_run()
    if for_run is not best:
        rs = for_run.settings
        lines.append(f"for run   --threads {rs.threads} --preprocess {rs.preprocess} (`run` always "
                     f"uses the latency hint; p99 total {for_run.p99_total_ms():.2f} ms)")
    if for_run.settings.preprocess != "stock":
        lines.append("note      preprocess 'fast' decodes the JPEG at reduced size, close to the "
                     "simulator's images but not pixel-identical to the stock car's")
    lines.append(f"verdict   {verdict(for_run, camera_fps)}")
    return "\n".join(lines)


def _minor_label(value: float, _pos: object) -> str:
    """Label the 2x and 5x minor ticks of a log axis (1x are the major ones)."""
    text = f"{value:g}"
    return text if text.lstrip("0.")[:1] in ("2", "5") else ""


def write_plot(result: BenchResult, path: str | Path) -> Path:
    """A latency histogram per stage (p50 and p99 marked) as a PNG, written atomically."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("--plot needs matplotlib, which is not installed; "
                          "run `pip install matplotlib` or drop --plot") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(f"--plot {path}: folder {path.parent} does not exist; create it first")
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), constrained_layout=True)
    for ax, name in zip(axes.flat, STAGES):
        ms = result.samples_ms[name]
        st = result.stages[name]
        lo, hi = float(ms.min()), float(ms.max())
        if hi > lo > 0:  # latency tails are long: log-spaced bins on a log axis
            ax.hist(ms, bins=np.geomspace(lo, hi, min(60, max(10, ms.size // 5)) + 1),
                    color="#4878a8")
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
        else:
            ax.hist(ms, bins=10, color="#4878a8")
        ax.axvline(st["p50_ms"], color="#2a2", label=f"p50 {st['p50_ms']:.3f}")
        ax.axvline(st["p99_ms"], color="#c33", label=f"p99 {st['p99_ms']:.3f}")
        ax.set_title(name)
        ax.set_xlabel("ms")
        ax.set_ylabel("frames")
        ax.legend(fontsize=8)
    s = result.settings
    fig.suptitle(f"{result.model_name}: {s.device} {s.precision} {s.hint}, preprocess "
                 f"{s.preprocess}, {s.frames_count} frames")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=100)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write --plot {path}: {exc.strerror or exc}; "
                          "use a writable path") from None
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path
