"""The drive loop: newest frame -> preprocess -> infer -> decide -> safety gate -> duty write.

One thread runs the hot loop (it owns the pipeline); control calls (arm, disarm, stop, max
speed, model swap, deadman heartbeats) may come from any thread (signal handlers, ROS services,
the web cockpit) and are applied at the top of the next iteration. The actuation layer's
watchdog sends neutral by itself when no fresh command arrives within the deadline, whatever
the loop is doing (camera stall, hung inference). Every way out of :meth:`DriveLoop.run` writes
neutral.

Adapters (ROS node, web cockpit, flight recorder) see the loop only through these control
methods and the step hooks (:meth:`DriveLoop.add_step_hook`), which run in the loop thread after
every write and must return at once (copy a reference, ``put_nowait``, never block or wait for a
lock another thread holds across I/O). A hook that raises is logged and removed: an adapter
failing never stops the car.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from car_runtime import sdnotify
from car_runtime.actuation.output import Actuator, DutyWrite
from car_runtime.control.safety import Event, ExitCode, State, deadline_expired, step
from car_runtime.pipeline import Pipeline, StepResult
from car_runtime.timing import RateMeter, now_s
from car_runtime.vision.frame import LatestFrameSlot
from car_runtime.vision.sources import FrameSource

if TYPE_CHECKING:
    from car_runtime.config import RunConfig
    from car_runtime.model.policy import LoadedModel

log = logging.getLogger(__name__)

#: Called from the loop thread after every write: (step result or None, the write, state).
#: ``result`` is None for writes that are not a decision (events: start, arm, stale_frame...).
#: ``result.output`` is a view into the inference buffer: copy it to keep it past the call.
StepHook = Callable[["StepResult | None", DutyWrite, State], None]


@dataclass
class LoopStats:
    frames: int = 0
    driven: int = 0
    stale: int = 0
    skipped: int = 0  # frames overwritten in the slot before the loop took them
    errors: int = 0
    last_frame_age_ms: float = 0.0


class DriveLoop:
    """Runs the car until the input ends, a stop is requested, or a stage fails."""

    def __init__(
        self,
        source: FrameSource,
        pipeline: Pipeline,
        actuator: Actuator,
        *,
        armed: bool = False,
        max_frame_age_s: float = 0.1,
        frame_wait_s: float = 0.05,
        status_interval_s: float = 0.0,
        on_step: StepHook | None = None,
        slot: LatestFrameSlot | None = None,
    ) -> None:
        self.source = source
        self.pipeline = pipeline
        self.actuator = actuator
        self.max_frame_age_s = max_frame_age_s
        self.frame_wait_s = frame_wait_s
        self.status_interval_s = status_interval_s
        self._hooks: list[StepHook] = [on_step] if on_step is not None else []
        self.hook_errors = 0
        self.slot = slot or LatestFrameSlot()
        self.last_progress_s = now_s()  # updated every iteration; a stuck stage stops it
        self.state = State.DISARMED
        self.stats = LoopStats()
        self.rate = RateMeter()
        self.exit_code: int | None = None
        self.exit_reason = ""
        self._events: list[Event] = [Event.ARM] if armed else []
        self._pending_pipeline: Pipeline | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stop_code = int(ExitCode.OK)
        self._stop_reason = ""
        self._watchdog_s = sdnotify.watchdog_interval_s()
        self._deadman_s: float | None = None  # None = no deadman
        self._last_heartbeat_s = -float("inf")
        self.deadman_trips = 0
        self._calibrating = False  # the loop writes nothing (a calibration tool owns the PWM)
        self._calibration_request: bool | None = None

    # -- control, from any thread ---------------------------------------------------------------
    def arm(self) -> None:
        self._post(Event.ARM)

    def disarm(self) -> None:
        self._post(Event.DISARM)

    def stop_driving(self) -> None:
        """Neutral and disarm (the ROS ``stop`` service); the loop keeps running."""
        self._post(Event.STOP)

    def reset_fault(self) -> None:
        self._post(Event.RESET)

    def set_max_speed_pct(self, pct: float) -> None:
        self.pipeline.mapper.max_speed_pct = pct  # validated by the mapper; a float store

    @property
    def max_speed_pct(self) -> float:
        return self.pipeline.mapper.max_speed_pct

    def set_deadman(self, timeout_s: float | None) -> None:
        """Require heartbeats to stay armed: with ``timeout_s``, the loop disarms (event
        ``link_lost``, neutral) when no :meth:`heartbeat` arrived for ``timeout_s``, and an arm
        request without a fresh heartbeat is ignored. ``None`` turns the deadman off."""
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"deadman timeout must be > 0 s, got {timeout_s!r}")
        self._deadman_s = timeout_s

    @property
    def deadman_s(self) -> float | None:
        return self._deadman_s

    def heartbeat(self) -> None:
        """The controlling client is alive (any thread; a float store, never blocks)."""
        self._last_heartbeat_s = now_s()

    def heartbeat_age_s(self) -> float:
        return now_s() - self._last_heartbeat_s

    def set_calibration_mode(self, on: bool) -> None:
        """Hand the outputs to a calibration tool (``on``) or take them back.

        Applied at the next iteration (watch :attr:`calibrating`): entering disarms (neutral)
        and from then on the loop takes frames but writes nothing and refuses to arm; the
        tool writes raw pulses through the actuator, whose deadline watchdog returns them to
        neutral when they stop. Leaving writes neutral and the loop drives (disarmed) again."""
        with self._lock:
            self._calibration_request = bool(on)

    @property
    def calibrating(self) -> bool:
        return self._calibrating

    def add_step_hook(self, hook: StepHook) -> None:
        """Call ``hook(result, write, state)`` in the loop thread after every write.

        The hook must return at once and never block (see the module docstring). Add hooks
        before :meth:`run` starts; one that raises is logged and removed."""
        self._hooks = [*self._hooks, hook]

    def remove_step_hook(self, hook: StepHook) -> None:
        self._hooks = [h for h in self._hooks if h is not hook]

    def swap_pipeline(self, pipeline: Pipeline) -> None:
        """Use ``pipeline`` (a newly loaded model) from the next frame on."""
        with self._lock:
            self._pending_pipeline = pipeline

    def request_stop(self, code: int = ExitCode.OK, reason: str = "stop requested") -> None:
        """Leave :meth:`run` after the current step; neutral is written on the way out."""
        if not self._stop.is_set():
            self._stop_code, self._stop_reason = int(code), reason
            self._stop.set()

    @property
    def arm_pending(self) -> bool:
        """True if an arm request waits for the next iteration."""
        with self._lock:
            return Event.ARM in self._events

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def stop_code(self) -> int:
        """The exit code a requested stop will end with."""
        return self._stop_code

    def _post(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    # -- the loop ---------------------------------------------------------------------------------
    def apply_pending(self) -> None:
        with self._lock:
            events, self._events = self._events, []
            pending, self._pending_pipeline = self._pending_pipeline, None
            calibrate, self._calibration_request = self._calibration_request, None
        if pending is not None:
            pending.mapper.max_speed_pct = self.pipeline.mapper.max_speed_pct
            self.pipeline = pending
        if calibrate is not None and calibrate != self._calibrating:
            if calibrate:
                if self.state is not State.DISARMED:
                    self._apply(Event.DISARM)
                self._calibrating = True
                log.info("calibration mode: the loop writes nothing until it ends")
            else:
                self._calibrating = False
                log.info("calibration mode ended")
                self._neutral(None, event="calibration_end")
        for event in events:
            if event is Event.ARM and self._calibrating:
                log.warning("arm refused: calibrating")
                continue
            if event is Event.ARM and self._deadman_lost():
                log.warning("arm refused: no heartbeat from the controlling client for %.0f ms",
                            self.heartbeat_age_s() * 1e3)
                continue
            self._apply(event)
        if self.state is State.ARMED and self._deadman_lost():
            self.deadman_trips += 1
            log.warning("deadman: no heartbeat for %.0f ms, disarming", self.heartbeat_age_s() * 1e3)
            self._apply(Event.LINK_LOST)

    def _deadman_lost(self) -> bool:
        return self._deadman_s is not None and deadline_expired(
            now_s(), self._last_heartbeat_s, self._deadman_s)

    def _apply(self, event: Event) -> None:
        before = self.state
        self.state = step(self.state, event).state
        if self.state is not before:
            log.info("state %s -> %s (%s)", before.value, self.state.value, event.name)
            self._neutral(None, event=event.value)

    def _neutral(self, result: StepResult | None, **context: object) -> DutyWrite:
        frame = result.frame if result is not None else None
        w = self.actuator.neutral(
            frame_seq=frame.seq if frame else None,
            frame_age_ms=round((now_s() - frame.t_capture_s) * 1e3, 3) if frame else None,
            state=self.state.value,
            **context,
        )
        self._call_hooks(result, w)
        return w

    def _call_hooks(self, result: StepResult | None, w: DutyWrite) -> None:
        for hook in self._hooks:
            try:
                hook(result, w, self.state)
            except Exception:  # an adapter failing never stops the car
                self.hook_errors += 1
                log.exception("step hook %r failed; removed (the car keeps driving)", hook)
                self.remove_step_hook(hook)

    def run(self) -> int:
        """Drive until done; return the exit code (see :class:`ExitCode`)."""
        slot = self.slot
        code, reason = int(ExitCode.OK), "end of input"
        last_notify = last_status = now_s()
        sdnotify.ready()
        try:
            self.source.start(slot)
            last_seq = 0
            while not self._stop.is_set():
                self.apply_pending()
                now = self.last_progress_s = now_s()
                if self._watchdog_s and now - last_notify >= self._watchdog_s:
                    sdnotify.watchdog()
                    last_notify = now
                if self.status_interval_s and now - last_status >= self.status_interval_s:
                    self._report_status()
                    last_status = now
                frame = slot.wait_newer(last_seq, self.frame_wait_s)
                if frame is None:
                    if slot.closed:
                        if self.source.error is not None:
                            code = int(ExitCode.CAMERA_LOST)
                            reason = f"camera lost: {self.source.error}"
                        break
                    continue
                self.stats.skipped += frame.seq - last_seq - 1
                last_seq = frame.seq
                self.stats.frames += 1
                self.rate.tick()
                if not self._calibrating:
                    self.drive_one(frame)
            else:
                code, reason = self._stop_code, self._stop_reason
        except Exception as exc:  # any stage failure: neutral, then exit with FAULT
            self.stats.errors += 1
            self.state = step(self.state, Event.ERROR).state
            code, reason = int(ExitCode.FAULT), f"{type(exc).__name__}: {exc}"
            log.error("drive loop fault: %s", reason)
        finally:
            if code != ExitCode.FAULT:  # a fault stays visible in the last record
                self.state = step(self.state, Event.END).state
            try:
                self._neutral(None, event="exit")
            finally:
                self.source.stop()
                sdnotify.stopping()
        self.exit_code, self.exit_reason = code, reason
        log.info("drive loop ended: %s (exit %d)", reason, code)
        return code

    def drive_one(self, frame) -> None:
        timer = self.pipeline.timer
        age_s = now_s() - frame.t_capture_s
        if age_s > self.max_frame_age_s:
            self.stats.stale += 1
            self.state = step(self.state, Event.STALE_FRAME).state
            self._neutral(None, event="stale_frame")
            return
        result = self.pipeline.step(frame)
        age_s = now_s() - frame.t_capture_s
        self.stats.last_frame_age_ms = age_s * 1e3
        decision = result.decision
        if age_s > self.max_frame_age_s:  # it aged while we worked on it: never act on it
            self.stats.stale += 1
            verdict = step(self.state, Event.STALE_FRAME)
        else:
            verdict = step(self.state, Event.DECISION)
        self.state = verdict.state
        context = {
            "frame_seq": frame.seq,
            "frame_age_ms": round(age_s * 1e3, 3),
            "state": self.state.value,
        }
        if verdict.drive and decision.valid:
            w = self.actuator.command(decision.angle, decision.throttle, **context)
            self.stats.driven += 1
        else:
            w = self.actuator.neutral(**context)
        timer.lap("actuate")
        timer.end()
        self._call_hooks(result, w)

    def status(self) -> dict:
        """A snapshot for status lines, ROS diagnostics and sd_notify STATUS."""
        return {
            "state": self.state.value,
            "fps": round(self.rate.fps(), 2),
            "frame_age_ms": round(self.stats.last_frame_age_ms, 2),
            "frames": self.stats.frames,
            "stale": self.stats.stale,
            "skipped": self.stats.skipped,
            "deadline_misses": self.actuator.deadline_misses,
            "clamped": self.actuator.clamped,
            "nonfinite": self.pipeline.mapper.nonfinite,
            "deadman_ms": None if self._deadman_s is None else round(self._deadman_s * 1e3, 1),
            "deadman_trips": self.deadman_trips,
            "hook_errors": self.hook_errors,
            "calibrating": self._calibrating,
            "stages": self.pipeline.timer.summary(),
        }

    def _report_status(self) -> None:
        s = self.status()
        line = (
            f"{s['state']:8s} {s['fps']:5.1f} fps  age {s['frame_age_ms']:6.1f} ms  "
            f"stale {s['stale']}  deadline misses {s['deadline_misses']}  "
            f"{self.pipeline.timer.status_line()}"
        )
        sdnotify.status(line)
        log.info("%s", line)


def drive_with_signals(loop: DriveLoop, *, grace_s: float = 2.0, stall_s: float = 2.0) -> int:
    """Run ``loop`` in a worker thread; SIGINT/SIGTERM stop it with exit code 128+signal.

    If the loop does not finish within ``grace_s`` after a stop, or makes no progress for
    ``stall_s`` (a hung stage: the watchdog already sent neutral), the actuator is closed
    (neutral) from here and the process exits hard: the signal's code, or
    :attr:`ExitCode.WATCHDOG`.
    """
    done = threading.Event()
    result: list[int] = []

    def worker() -> None:
        try:
            result.append(loop.run())
        finally:
            done.set()

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        log.info("%s received: stopping", name)
        loop.request_stop(128 + signum, f"{name} received")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=worker, name="drive-loop", daemon=True)
    thread.start()
    try:
        stop_seen: float | None = None
        while not done.wait(0.05):
            code = None
            if loop.stopping:
                stop_seen = stop_seen or now_s()
                if now_s() - stop_seen > grace_s:
                    log.error("drive loop did not stop within %.1f s: forcing neutral", grace_s)
                    code = loop.stop_code
            elif now_s() - loop.last_progress_s > stall_s:
                log.error("drive loop stuck for %.1f s (hung stage): forcing neutral", stall_s)
                code = int(ExitCode.WATCHDOG)
            if code is not None:
                loop.actuator.close()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return result[0] if result else int(ExitCode.FAULT)


# -- wiring shared by `car-runtime run` and the ROS node -------------------------------------------

def open_actuator(cfg: "RunConfig") -> Actuator:
    """Calibration (stock defaults with a warning if the file is missing) and the output, with
    the deadline watchdog. The car is at neutral when this returns."""
    from car_runtime.actuation.calibration import load_calibration
    from car_runtime.actuation.output import open_output

    calibration = load_calibration(cfg.calibration, missing="defaults")
    return Actuator(
        open_output(cfg.output, calibration), calibration, deadline_s=cfg.deadline_ms / 1e3
    )


def load_pipeline(
    cfg: "RunConfig",
    model: str | None = None,
    *,
    max_speed_pct: float | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> tuple["LoadedModel", Pipeline]:
    """Load ``model`` (default ``cfg.model``) and build the per-frame stages from ``cfg``.

    Long-running processes load through :class:`car_runtime.controls.ModelLoader` (one
    signal-safe thread); ``on_phase`` reports progress (see ``load_model``)."""
    from car_runtime.model.policy import load_model

    loaded = load_model(
        model or cfg.model, device=cfg.device, precision=cfg.precision, threads=cfg.threads,
        on_phase=on_phase,
    )
    pipeline = Pipeline(
        loaded.policy,
        preprocess=cfg.preprocess,
        max_speed_pct=cfg.max_speed_pct if max_speed_pct is None else max_speed_pct,
        sac_squash=cfg.sac_squash,
    )
    return loaded, pipeline
