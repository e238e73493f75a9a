"""The flight recorder: every driving session of the car becomes a rosbag2 folder.

Attach it with :func:`attach` (``car-runtime run --record DIR`` / ``record_dir:``, the ROS node)::

    with recording.attach(controls, cfg):    # cfg.record_dir, record_storage, record_min_free_mb
        drive_with_signals(loop)

It sees the car only through :class:`~car_runtime.controls.DriveControls` (a model listener and
the ``recording`` status facts), the actuator's write listener and one step hook:

- the **write listener** (:meth:`Actuator.add_write_listener`) sees every write in write order
  -- the loop's, the watchdog's neutral, the guardian's refusals and losses, calibration pulses,
  the final close and emergency neutral -- and queues it (a reference, ``put_nowait``);
- the **step hook** runs in the loop thread right after a loop write and adds what the loop
  knows about that write (the frame, a copy of the model output, the decision, which model made
  it) to the queued entry.

Both return at once. When the writer thread falls behind by ``queue_frames`` entries the
listener drops *recording* entries (counted: ``recording_dropped`` in every audit message, in
``status()["recording"]`` and in ``metadata.yaml``) -- never a drive frame.

The writer thread applies the session rules (:mod:`.session`), serializes and writes the
messages (:mod:`.messages`), flushes about once a second (``fsync`` every 5 s), and checks
the free space. Below ``record_min_free_mb``, or on any write error (a full disk), it closes
or abandons the session, logs one warning, and records nothing more in this run: the car keeps
driving.

Session folder: ``DIR/<model-name>-YYYYmmdd-HHMMSS/`` (local time of the first driving
write), with ``metadata.yaml`` and ``<folder>.mcap`` (or ``.db3``) once closed. A model change
closes the session: decisions are told apart by the pipeline that made them, so a frame of the
old model never lands in the new model's session or the other way round.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import itertools
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from car_runtime.control.safety import State
from car_runtime.errors import ConfigError
from car_runtime.recording import messages, session, settings
from car_runtime.recording.bagwriter import BagWriter
from car_runtime.timing import now_s

if TYPE_CHECKING:
    from car_runtime.actuation.output import DutyWrite
    from car_runtime.config import RunConfig
    from car_runtime.controls import DriveControls, ModelInfo
    from car_runtime.pipeline import StepResult

log = logging.getLogger(__name__)

QUEUE_FRAMES = 60  # ~2 s at 30 fps; each entry holds one frame's JPEG (a reference)
FLUSH_S = 1.0
FSYNC_S = 5.0
FREE_CHECK_S = 1.0
JPEG_QUALITY = 90  # only for sources that deliver pixels (video files)
WRITER_NICE = 10  # the writer thread yields the CPU to the drive loop and inference
#: How long the writer keeps later writes back while an earlier one is missing: a loop write
#: waits for the step hook (called right after it), so another thread's write can arrive
#: first; the writer puts them back in write order. Only a loop write that is never reported
#: (the loop ended right after it) leaves a gap that long.
GAP_WAIT_S = 1.0

_END = object()


@dataclass(slots=True)
class _Item:
    """One write (references only; ``output`` is a copy). The write listener creates it; a loop
    write is queued by the step hook, which fills in the rest."""

    seq: int  # write order (consecutive over the entries queued)
    t_s: float  # now_s() when written
    write: "DutyWrite"
    deadline_misses: int
    dropped: int  # entries dropped so far (all sessions)
    state: State | None = None  # the loop's state (loop writes)
    frame: Any = None  # Frame or None
    output: np.ndarray | None = None
    decision: Any = None  # Decision or None
    gen: int = 0  # which pipeline (model) the loop ran, 1, 2, ...; 0 = unknown
    pipeline: Any = None  # weakref to that pipeline


@dataclass(slots=True)
class _ModelChanged:
    info: "ModelInfo"


class _Session:
    def __init__(self, name: str, path: Path, bag: BagWriter, model: "ModelInfo",
                 pipeline: Any, dropped_at_open: int, t_open_s: float) -> None:
        self.name = name
        self.path = path
        self.bag = bag
        self.model = model
        self.pipeline = pipeline  # weakref to the model's pipeline, or None
        self.dropped_at_open = dropped_at_open
        self.t_open_s = t_open_s
        self.frames = 0
        self.writes = 0
        self.bytes = 0
        self.dropped = 0
        self.max_speed_pct: float | None = None
        self.last_flush_s = t_open_s
        self.last_fsync_s = t_open_s


def session_name(model_name: str, when: time.struct_time) -> str:
    """``<model>-YYYYmmdd-HHMMSS`` with the model name made safe for a folder name."""
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", model_name).strip("._") or "model"
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S', when)}"


def free_mb(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 1e6


class FlightRecorder:
    """See the module docstring. Use :func:`attach`; ``start()`` / ``close()`` otherwise."""

    def __init__(
        self,
        controls: "DriveControls",
        root: str | Path,
        *,
        storage: str = "mcap",
        min_free_mb: float = 200.0,
        config: "RunConfig | None" = None,
        idle_close_s: float = session.IDLE_CLOSE_S,
        queue_frames: int = QUEUE_FRAMES,
        flush_s: float = FLUSH_S,
        fsync_s: float = FSYNC_S,
    ) -> None:
        self.controls = controls
        self.loop = controls.loop
        self.root = Path(root).expanduser()
        self.storage = storage
        self.min_free_mb = float(min_free_mb)
        self.config = config
        self.idle_close_s = idle_close_s
        self.queue_frames = queue_frames
        self.flush_s = flush_s
        self.fsync_s = fsync_s
        self._queue: queue.Queue = queue.Queue()
        self._queue_peak = 0
        self._thread: threading.Thread | None = None
        self._stopped = False  # read by the listener: recording is off for good
        self._dropped = 0  # entries dropped because the writer fell behind
        self._drop_lock = threading.Lock()  # only taken when dropping
        # the loop thread's side (listener calls from it, and the step hook):
        self._loop_tid: int | None = None  # learnt at the hook's first call
        self._loop_item: _Item | None = None  # its last write, waiting for the hook
        self._seq = itertools.count()  # listener calls are serialized: write order
        self._hook_pipeline: Any = None  # weakref to the pipeline of the last hooked write
        self._gen = 0
        # the writer thread's side:
        self._rules = session.SessionState()
        self._session: _Session | None = None
        self._model: "ModelInfo" = controls.model
        self._model_gen: int | None = None  # the pipeline generation self._model runs as
        self._model_pipeline: Any = None
        self._retired_gen = 0  # generations up to this one belong to replaced models
        self._last_gen = 0
        self._next_seq = 0  # the next write to record, in write order
        self._held: dict[int, _Item] = {}  # writes that arrived before an earlier one
        self._gap_since_s: float | None = None
        self.sessions: list[str] = []  # names of the sessions written in this run
        self.error: str | None = None
        self._free_mb: float | None = None
        self._last_free_check_s = -math.inf
        self._check_root()

    # -- set-up -----------------------------------------------------------------------------------
    def _check_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the recording folder {self.root}: {exc.strerror or exc}; set "
                "record_dir (--record) to a writable folder"
            ) from None
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise ConfigError(
                f"recording folder {self.root} is not a writable folder; set record_dir "
                "(--record) to one the car-runtime user may write"
            )

    def start(self) -> "FlightRecorder":
        self._free_mb = free_mb(self.root)
        if self._free_mb < self.min_free_mb:
            self._stop_for_good(
                f"only {self._free_mb:.0f} MB free in {self.root} (record_min_free_mb "
                f"{self.min_free_mb:g}); not recording, the car drives")
        self._thread = threading.Thread(target=self._run, name="flight-recorder", daemon=True)
        self._thread.start()
        self.controls.add_model_listener(self._on_model)
        self.controls.add_facts("recording", self.facts)
        self.loop.actuator.add_write_listener(self.on_write)
        self.loop.add_step_hook(self.on_step)
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop listening, close the open session (a complete bag), end the thread. Close the
        actuator first to have its final neutral in the bag."""
        self.loop.remove_step_hook(self.on_step)
        self.loop.actuator.remove_write_listener(self.on_write)
        thread, self._thread = self._thread, None
        if thread is None:
            return
        pending, self._loop_item = self._loop_item, None
        if pending is not None:  # the loop's last write, never reported by the hook
            self._queue.put(pending)
        self._queue.put(_END)
        thread.join(timeout_s)
        if thread.is_alive():
            log.error("the flight recorder did not finish within %.0f s; the last session may be "
                      "torn (still readable)", timeout_s)

    # -- the writers' side (any thread; must return at once) -------------------------------------
    def on_write(self, w: "DutyWrite") -> None:
        """Actuator write listener: queue every write (a loop write: hand it to the hook)."""
        if self._stopped:
            return
        from_loop = w.thread_id == self._loop_tid  # the watchdog thread may deliver it
        if from_loop and self._loop_item is not None:
            # an earlier loop write the hook never saw (the guardian undid it): as it is
            self._queue.put_nowait(self._loop_item)
            self._loop_item = None
        n = self._queue.qsize()
        if n >= self.queue_frames:
            with self._drop_lock:
                self._dropped += 1
            return
        if n >= self._queue_peak:
            self._queue_peak = n + 1
        item = _Item(next(self._seq), now_s(), w, self.loop.actuator.deadline_misses,
                     self._dropped)
        if from_loop:
            self._loop_item = item  # queued by the step hook, once complete: one wake-up
        else:
            self._queue.put_nowait(item)

    def on_step(self, result: "StepResult | None", w: "DutyWrite", state: State) -> None:
        """Step hook (loop thread, right after ``w`` was written): add the loop's view of it
        and queue it. Until its first call the loop thread is unknown, so the loop's first
        write (a neutral before any session can open) is queued without it."""
        if self._loop_tid is None:
            self._loop_tid = threading.get_ident()
        item = self._loop_item
        if item is None or item.write is not w:
            return  # dropped (counted), or recording stopped
        self._loop_item = None
        pipeline = self.loop.pipeline  # the loop thread swaps it: this one made the decision
        ref = self._hook_pipeline
        if ref is None or ref() is not pipeline:
            self._gen += 1
            self._hook_pipeline = ref = weakref.ref(pipeline)
        item.gen, item.pipeline, item.state = self._gen, ref, state
        if result is not None:
            item.frame, item.output, item.decision = (result.frame, result.output.copy(),
                                                      result.decision)
        self._queue.put_nowait(item)

    def _on_model(self, info: "ModelInfo") -> None:
        self._queue.put_nowait(_ModelChanged(info))

    # -- status -----------------------------------------------------------------------------------
    def facts(self) -> dict[str, Any]:
        """``status()["recording"]``: cheap, JSON-able."""
        s = self._session
        state = "stopped" if self._stopped else "recording" if s is not None else "waiting"
        return {
            "state": state,  # waiting (for the car to drive) | recording | stopped
            "dir": str(self.root),
            "session": s.name if s is not None else None,
            "frames": s.frames if s is not None else 0,
            "writes": s.writes if s is not None else 0,
            "dropped": s.dropped if s is not None else 0,
            "dropped_total": self._dropped,
            "queued": self._queue.qsize(),
            "queue_peak": self._queue_peak,
            "queue_limit": self.queue_frames,
            "bytes": s.bytes if s is not None else 0,
            "sessions": len(self.sessions),
            "free_mb": None if self._free_mb is None else round(self._free_mb, 1),
            "error": self.error,
        }

    # -- the writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:  # Linux: a thread's nice value is its own; the loop and inference come first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
        except (OSError, AttributeError):
            pass
        settings.model_sha256(self._model.path)  # warm the cache before the first session
        tick_s = min(self.flush_s, FREE_CHECK_S) / 2
        while True:
            try:
                item = self._queue.get(timeout=tick_s)
            except queue.Empty:
                item = None
            if self._stopped and self._session is None:
                self._held.clear()
                if item is _END:
                    return
                continue  # drain: nothing is recorded any more
            try:
                if item is _END:
                    self._release(force=True)
                    self._apply(session.Event.END, now_s(), None)
                    return
                if isinstance(item, _ModelChanged):
                    self._release()
                    self._model_changed(item.info)
                elif item is None:
                    self._release()
                    self._apply(session.Event.TICK, now_s(), None)
                elif item.seq < self._next_seq:  # late, after its gap was given up
                    self._write(item)
                else:
                    self._held[item.seq] = item
                    self._release()
                self._housekeeping()
            except OSError as exc:
                self._fail(exc)
            except Exception as exc:  # a bug must not take the car down: stop recording
                log.exception("flight recorder failed")
                self._fail(exc)
            if item is _END:
                return

    def _release(self, force: bool = False) -> None:
        """Record the held writes that are next in write order; give up on a missing one
        after ``GAP_WAIT_S`` (or at once with ``force``)."""
        held = self._held
        while held:
            while self._next_seq in held:
                self._write(held.pop(self._next_seq))
                self._next_seq += 1
            if not held:
                break
            t = now_s()
            if self._gap_since_s is None:
                self._gap_since_s = t
            if not force and t - self._gap_since_s < GAP_WAIT_S:
                return
            self._next_seq = min(held)  # the missing write never came
        self._gap_since_s = None

    def _write(self, item: _Item) -> None:
        self._apply(self._event_for(item), item.t_s, item)

    def _model_changed(self, info: "ModelInfo") -> None:
        """Controls are about to swap in ``info``: close the session; the next pipeline the loop
        runs is that model (its decisions open the next session)."""
        self._apply(session.Event.MODEL_CHANGED, now_s(), None)
        self._model = info
        self._retired_gen = max(self._retired_gen, self._last_gen)
        self._model_gen = self._model_pipeline = None
        settings.model_sha256(info.path)

    def _event_for(self, item: _Item) -> session.Event:
        driving = (item.frame is not None and item.state is State.ARMED
                   and item.decision is not None and item.decision.valid)
        g = item.gen
        if g:
            self._last_gen = max(self._last_gen, g)
            if self._model_gen is None and g > self._retired_gen:
                self._model_gen, self._model_pipeline = g, item.pipeline
            elif self._model_gen is not None and g > self._model_gen:
                # the loop's pipeline changed without DriveControls.load_model: a model change
                self._model_changed(self.controls.model)
                self._model_gen, self._model_pipeline = g, item.pipeline
            if g != self._model_gen:
                driving = False  # a decision of the model being replaced opens no session
        return session.Event.DRIVING if driving else session.Event.WRITE

    def _apply(self, event: session.Event, t_s: float, item: _Item | None) -> None:
        self._rules, action = session.step(self._rules, event, t_s, self.idle_close_s)
        if action in (session.Action.CLOSE, session.Action.REOPEN):
            self._close_session()
        if action in (session.Action.OPEN, session.Action.REOPEN):
            self._open_session(item)
        if action in (session.Action.OPEN, session.Action.REOPEN, session.Action.RECORD):
            assert item is not None
            self._record(item)

    def _open_session(self, item: _Item | None) -> None:
        if not self._check_free(force=True):
            return
        when = time.localtime()
        name = session_name(self._model.name, when)
        path = self.root / name
        n = 2
        while path.exists():
            path = self.root / f"{name}-{n}"
            n += 1
        bag = BagWriter(path, self.storage)
        dropped = item.dropped if item is not None else self._dropped
        self._session = _Session(path.name, path, bag, self._model, self._model_pipeline,
                                 dropped, now_s())
        self.sessions.append(path.name)
        log.info("recording session %s", path)

    def _close_session(self, *, reason: str = "") -> None:
        s = self._session
        if s is None:
            return
        # The facts show the session as recording until it is closed on disk (the cockpit
        # must not offer a bag for download or deletion while its end is being written).
        try:
            bag = s.bag
            bag.set_custom_data("car_runtime.model", s.model.name)
            bag.set_custom_data("car_runtime.model_path", s.model.path)
            bag.set_custom_data("car_runtime.frames", str(s.frames))
            bag.set_custom_data("car_runtime.writes", str(s.writes))
            bag.set_custom_data("car_runtime.dropped", str(s.dropped))
            if reason:
                bag.set_custom_data("car_runtime.stopped", reason)
            bag.close()
        finally:
            self._session = None
        log.info("recording session %s closed: %d frames, %d dropped, %.1f MB", s.name,
                 s.frames, s.dropped, s.bytes / 1e6)

    def _record(self, item: _Item) -> None:
        s = self._session
        if s is None:
            return
        c = messages.classes()
        offset_s = time.time() - now_s()  # wall clock - monotonic, now
        t_ns = int((item.t_s + offset_s) * 1e9)
        s.dropped = item.dropped - s.dropped_at_open
        d = item.decision
        # the max speed the decision was made with (it travels with it), so --verify recomputes
        # with the same value even if it changed between the decision and this write
        pct = d.max_speed_pct if d is not None and d.max_speed_pct is not None else (
            s.max_speed_pct if s.max_speed_pct is not None else self.loop.max_speed_pct)
        if pct != s.max_speed_pct:
            s.max_speed_pct = pct
            s.bytes += s.bag.write(messages.SETTINGS, t_ns, self._settings_msg(c, t_ns, s))
        w = item.write
        frame = item.frame
        if frame is not None:
            stamp = _stamp(c, frame.t_capture_s + offset_s)
            header = c.Header(stamp=stamp, frame_id=str(frame.seq))
            images = [c.CompressedImage(header=header, format=fmt, data=data)
                      for fmt, data in map(_compressed, frame.images)]
            out = item.output
            results = [c.InferResults(class_label=i, class_prob=float(v), x_min=0.0, y_min=0.0,
                                      x_max=0.0, y_max=0.0) for i, v in enumerate(out)]
            s.bytes += s.bag.write(messages.RL_RESULTS, t_ns,
                                   c.InferResultsArray(results=results, images=images))
            s.bytes += s.bag.write(messages.AUTO_DRIVE, t_ns,
                                   c.ServoCtrlMsg(angle=w.angle, throttle=w.throttle,
                                                  source_stamp=stamp))
            s.frames += 1
        s.bytes += s.bag.write(messages.WRITES, t_ns, self._write_msg(c, t_ns, item, s))
        s.writes += 1

    def _write_msg(self, c: Any, t_ns: int, item: _Item, s: _Session) -> Any:
        w, d = item.write, item.decision
        ctx = w.context
        seq, age = ctx.get("frame_seq"), ctx.get("frame_age_ms")
        clamped = ctx.get("clamped")
        state = ctx.get("state") or (item.state.value if item.state is not None else "")
        return c.DriveWrite(
            stamp=_stamp_ns(c, t_ns),
            t=float(w.t_s),
            state=str(state),
            event=str(ctx.get("event") or ""),
            angle=float(w.angle),
            throttle=float(w.throttle),
            servo_ns=int(w.servo_ns),
            motor_ns=int(w.motor_ns),
            frame_seq=-1 if seq is None else int(seq),
            frame_age_ms=math.nan if age is None else float(age),
            clamped=json.dumps(clamped, sort_keys=True) if clamped else "",
            decided=d is not None,
            action_index=-1 if d is None or d.action_index is None else int(d.action_index),
            steering_deg=0.0 if d is None else float(d.steering_deg),
            speed_mps=0.0 if d is None else float(d.speed_mps),
            decision_angle=0.0 if d is None else float(d.angle),
            decision_throttle=0.0 if d is None else float(d.throttle),
            decision_valid=bool(d is not None and d.valid),
            output=(np.empty(0, np.float32) if item.output is None
                    else np.asarray(item.output, np.float32).reshape(-1)),
            recording_dropped=max(0, s.dropped),
            deadline_misses=int(item.deadline_misses),
        )

    def _settings_msg(self, c: Any, t_ns: int, s: _Session) -> Any:
        cfg = self.config
        model = s.model
        pipeline = (s.pipeline() if s.pipeline is not None else None) or self.loop.pipeline
        try:
            compiled = pipeline.policy.compiled_properties()
        except Exception:  # best effort: a property OpenVINO does not report
            compiled = {}
        calibration = self.loop.actuator.calibration
        return c.RunSettings(
            stamp=_stamp_ns(c, t_ns),
            model_name=model.name,
            model_path=str(Path(model.path).expanduser().resolve()),
            model_sha256=settings.model_sha256(model.path),
            metadata_json=settings.metadata_json(model.metadata),
            max_speed_pct=float(s.max_speed_pct or 0.0),
            preprocess=pipeline.preprocessor.mode,
            precision=str(getattr(cfg, "precision", "") or ""),
            device=str(getattr(cfg, "device", "") or ""),
            threads=int(getattr(cfg, "threads", 0) or 0),
            sac_squash=bool(getattr(cfg, "sac_squash", False)),
            calibration_json=json.dumps(calibration.to_stock_dict(), sort_keys=True),
            config_json=settings.config_json(cfg) if cfg is not None else "{}",
            versions_json=json.dumps(settings.versions(), sort_keys=True),
            cpu=settings.cpu_model(),
            compiled_json=json.dumps(compiled, sort_keys=True),
        )

    def _housekeeping(self) -> None:
        s = self._session
        if s is None:
            return
        t = now_s()
        if t - s.last_flush_s >= self.flush_s:
            fsync = t - s.last_fsync_s >= self.fsync_s
            s.bag.flush(fsync=fsync)
            s.last_flush_s = t
            if fsync:
                s.last_fsync_s = t
        self._check_free()

    def _check_free(self, force: bool = False) -> bool:
        t = now_s()
        if not force and t - self._last_free_check_s < FREE_CHECK_S:
            return True
        self._last_free_check_s = t
        self._free_mb = free_mb(self.root)
        if self._free_mb >= self.min_free_mb:
            return True
        reason = (f"only {self._free_mb:.0f} MB free in {self.root} (record_min_free_mb "
                  f"{self.min_free_mb:g})")
        self._rules, _ = session.step(self._rules, session.Event.FAILED, t)
        self._close_session(reason=reason)
        self._stop_for_good(f"{reason}; the car keeps driving")
        return False

    def _fail(self, exc: BaseException) -> None:
        s, self._session = self._session, None
        self._rules, _ = session.step(self._rules, session.Event.FAILED, now_s())
        where = f" {s.path}" if s is not None else ""
        if s is not None:
            s.bag.abort()
        detail = f"{exc.strerror} ({exc.filename or where.strip()})" if isinstance(
            exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        self._stop_for_good(
            f"cannot write{where}: {detail}; the car keeps driving"
            + ("; the bag so far stays readable (torn)" if s is not None else ""))

    def _stop_for_good(self, message: str) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.error = message
        log.warning("recording stopped: %s", message)


def _stamp(c: Any, t_s: float) -> Any:
    sec = math.floor(t_s)
    return c.Time(sec=int(sec), nanosec=min(999_999_999, int(round((t_s - sec) * 1e9))))


def _stamp_ns(c: Any, t_ns: int) -> Any:
    return c.Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)


def _compressed(img: Any) -> tuple[str, np.ndarray]:
    """``(format, data)`` of one camera image: the camera's own bytes as a uint8 array (no
    copy), format ``jpeg`` (``png`` for PNG files); pixels are JPEG-encoded here and say so."""
    if isinstance(img, (bytes, bytearray, memoryview)):
        data = np.frombuffer(img, np.uint8)
        return ("png" if bytes(data[:8]) == b"\x89PNG\r\n\x1a\n" else "jpeg"), data
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("OpenCV could not JPEG-encode a frame")
    return messages.REENCODED_FORMATS[img.ndim == 2], buf.reshape(-1)


@contextmanager
def attach(controls: "DriveControls", cfg: "RunConfig") -> Iterator[FlightRecorder | None]:
    """Record ``cfg.record_dir`` sessions for the loop behind ``controls`` (nothing if unset).

    Raises :class:`ConfigError` at once if the folder cannot be created or written."""
    if not cfg.record_dir:
        yield None
        return
    recorder = FlightRecorder(controls, cfg.record_dir, storage=cfg.record_storage,
                              min_free_mb=cfg.record_min_free_mb, config=cfg).start()
    try:
        yield recorder
    finally:
        recorder.close()
        if recorder.sessions:
            log.info("recorded %d session(s) in %s: %s", len(recorder.sessions), recorder.root,
                     ", ".join(recorder.sessions))

