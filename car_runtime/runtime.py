"""The drive loop: newest frame -> preprocess -> infer -> decide -> safety gate -> duty write.

One thread runs the hot loop (it owns the pipeline); control calls (arm, disarm, stop, max
speed, model swap, deadman heartbeats) may come from any thread (signal handlers, ROS services,
the web cockpit) and are applied at the top of the next iteration. The actuation layer's
watchdog sends neutral by itself when no fresh command arrives within the deadline, whatever
the loop is doing (camera stall, hung inference). Every way out of :meth:`DriveLoop.run` writes
neutral.

With a guardian process attached to the actuator (real outputs, see
:mod:`car_runtime.actuation.guardian`), the loop tells it whether it is armed, turns a guardian
trip into ``FAULT`` (event ``guardian_trip``) before its next driving write, and ends with
:attr:`ExitCode.GUARDIAN_LOST` if the guardian dies.

Adapters (ROS node, web cockpit, flight recorder) see the loop only through these control
methods and the step hooks (:meth:`DriveLoop.add_step_hook`), which run in the loop thread after
every write and must return at once (copy a reference, ``put_nowait``, never block or wait for a
lock another thread holds across I/O). A hook that raises is logged and removed: an adapter
failing never stops the car.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
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
        self.guardian_trips = 0

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
        self._check_guardian()
        self.actuator.set_armed(self.state is State.ARMED)

    def _check_guardian(self) -> None:
        """A guardian trip -> FAULT (neutral); a lost guardian -> stop with GUARDIAN_LOST."""
        failure = self.actuator.guardian_failure
        if failure is not None and not self._stop.is_set():
            self.request_stop(ExitCode.GUARDIAN_LOST, f"guardian lost: {failure}")
        trip = self.actuator.take_guardian_trip()
        if trip is not None:
            self.guardian_trips += 1
            log.error(
                "the guardian wrote neutral %.0f ms ago (%s for %.0f ms): the car is in fault and "
                "will not drive until it is disarmed and armed again", trip["ago_ms"],
                trip["reason"], trip["gap_ms"])
            self._apply(Event.GUARDIAN_TRIP)

    def _deadman_lost(self) -> bool:
        return self._deadman_s is not None and deadline_expired(
            now_s(), self._last_heartbeat_s, self._deadman_s)

    def _apply(self, event: Event) -> None:
        """Take ``event``; a change of state writes neutral *before* the new state is published,
        so whoever sees ``disarmed`` or ``fault`` (a page, a test, a ROS client) sees a car whose
        outputs are already at neutral."""
        before = self.state
        after = step(before, event).state
        if after is not before:
            log.info("state %s -> %s (%s)", before.value, after.value, event.name)
            self._neutral(None, state=after, event=event.value)
            self.state = after

    def _neutral(self, result: StepResult | None, state: State | None = None,
                 **context: object) -> DutyWrite:
        frame = result.frame if result is not None else None
        state = self.state if state is None else state
        w = self.actuator.neutral(
            frame_seq=frame.seq if frame else None,
            frame_age_ms=round((now_s() - frame.t_capture_s) * 1e3, 3) if frame else None,
            state=state.value,
            **context,
        )
        self._call_hooks(result, w, state)
        return w

    def _call_hooks(self, result: StepResult | None, w: DutyWrite, state: State) -> None:
        for hook in self._hooks:
            try:
                hook(result, w, state)
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
        end_state: State | None = None
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
            end_state = step(self.state, Event.ERROR).state
            code, reason = int(ExitCode.FAULT), (f"{type(exc).__name__}: {exc}" if str(exc)
                                                  else type(exc).__name__)
            log.error("drive loop fault: %s", reason)
        finally:
            if end_state is None:  # a fault stays visible in the last record
                end_state = (self.state if code == ExitCode.FAULT
                             else step(self.state, Event.END).state)
            try:
                self.actuator.set_armed(False)
                self._neutral(None, state=end_state, event="exit")
            except Exception as exc:  # a failing output: every channel that still accepts it
                log.error("neutral on exit failed: %s", exc)
                results = self.actuator.emergency_neutral()
                note = "neutral: " + ", ".join(f"{k} {v}" for k, v in results.items())
                log.error("%s", note)
                if code == ExitCode.OK:
                    code = int(ExitCode.FAULT)
                if note not in reason:
                    reason = f"{reason}; {note}"
            finally:
                self.state = end_state
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
            after = step(self.state, Event.STALE_FRAME).state
            self._neutral(None, state=after, event="stale_frame")
            self.state = after
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
        context = {
            "frame_seq": frame.seq,
            "frame_age_ms": round(age_s * 1e3, 3),
            "state": verdict.state.value,
        }
        if verdict.drive and decision.valid:
            w = self.actuator.command(decision.angle, decision.throttle, **context)
            if w.context.get("event") is None:  # not refused (guardian trip / lost)
                self.stats.driven += 1
        else:
            w = self.actuator.neutral(**context)
        self.state = verdict.state  # published after the write, as in _apply
        timer.lap("actuate")
        timer.end()
        self._call_hooks(result, w, verdict.state)

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
            "guardian_trips": self.guardian_trips,
            "guardian": self.actuator.guardian.status() if self.actuator.guardian else None,
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


#: Signals that end the run: neutral, then exit 128 + signal number (see :class:`ExitCode`).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2, signal.SIGPIPE)


class SignalExit(BaseException):
    """A stop signal that arrived before the drive loop ran (raised once, in the main thread, so
    start-up unwinds and closes the outputs at neutral). ``code`` = 128 + signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.code = ExitCode.for_signal(signum)
        super().__init__(f"{signal.Signals(signum).name} received")


class StopSignals:
    """Every signal that can end or stop the process leaves the car at neutral, from start-up
    to exit. A context manager for the main thread; :meth:`attach` routes signals to a loop.

    - SIGINT, SIGTERM, SIGHUP (a lost terminal), SIGQUIT, SIGUSR1, SIGUSR2: the first one stops
      the run with ``128 + signal`` (:class:`ExitCode`): with a loop attached through
      :meth:`DriveLoop.request_stop` (neutral on the way out), before that by raising
      :class:`SignalExit` once in the main thread. Later ones (a burst of Ctrl-C, systemd's
      SIGTERM after a SIGINT) are only counted: never raised, never "Exception ignored".
    - SIGPIPE: only when stdout or stderr is a closed pipe (``car-runtime run | head``); a
      SIGPIPE from a network socket (a web client that went away) is ignored.
    - SIGHUP, SIGPIPE: a terminal or pipe that is gone is replaced by /dev/null, so the log
      lines and the summary printed on the way out cannot fail.
    - SIGTSTP (Ctrl-Z): disarm and wait (at most ``tstp_wait_s``) for the loop's neutral --
      else write neutral directly on every channel -- then stop. After SIGCONT the loop stays
      disarmed: arm again to drive. (SIGSTOP cannot be caught: the guardian covers it.)

    On exit the previous handlers come back, unless ``keep`` (a process about to exit): then
    the stop signals are ignored from there on -- a late one cannot kill the process with the
    wrong status while the interpreter shuts down (Python resets its own handlers to the
    default action then; an ignored signal it leaves alone).
    """

    def __init__(self, *, keep: bool = False, tstp_wait_s: float = 0.5) -> None:
        self.keep = keep
        self.tstp_wait_s = tstp_wait_s
        self.signum: int | None = None  # the first stop signal
        self.count = 0
        self._loop: DriveLoop | None = None
        self._raised = False
        self._previous: dict[int, object] = {}

    @property
    def code(self) -> int | None:
        return None if self.signum is None else ExitCode.for_signal(self.signum)

    def __enter__(self) -> "StopSignals":
        for s in STOP_SIGNALS:
            self._previous[s] = signal.signal(s, self._on_stop)
        self._previous[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self._on_tstp)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop = None
        self._raised = True  # never raise from here on
        if self.keep:
            for s in STOP_SIGNALS:
                signal.signal(s, signal.SIG_IGN)
            return
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]

    def attach(self, loop: "DriveLoop") -> None:
        self._loop = loop
        if self.signum is not None:  # a signal came during start-up, before the loop existed
            loop.request_stop(self.code, f"{signal.Signals(self.signum).name} received")

    def detach(self) -> None:
        self._loop = None
        self._raised = True  # the loop has ended: never raise into the shutdown path

    def _on_stop(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGPIPE and not _silence_broken_streams():
            log.debug("SIGPIPE from a socket (a peer went away): ignored")
            return
        if signum == signal.SIGHUP:
            _silence_broken_streams()
        self.count += 1
        if self.signum is not None:
            return
        self.signum = signum
        name = signal.Signals(signum).name
        loop = self._loop
        if loop is not None:
            log.info("%s received: stopping (neutral, exit %d)", name, self.code)
            loop.request_stop(self.code, f"{name} received")
        elif not self._raised:
            self._raised = True
            raise SignalExit(signum)

    def _on_tstp(self, _signum: int, _frame: object) -> None:
        loop = self._loop
        if loop is not None and loop.state is not State.FAULT:
            log.warning("SIGTSTP: disarming (neutral), then stopping; after SIGCONT the car "
                        "stays disarmed: arm again to drive")
            loop.disarm()
            end_s = now_s() + self.tstp_wait_s
            act = loop.actuator
            neutral = act.calibration.neutral_ns()

            def at_rest() -> bool:  # disarmed, and its neutral is out (no write half done)
                w = act.last_write
                return (loop.state is not State.ARMED and not loop.arm_pending
                        and act.write_stuck_s() is None and w is not None
                        and (w.servo_ns, w.motor_ns) == neutral)

            while not at_rest() and now_s() < end_s and loop.exit_code is None:
                time.sleep(0.002)
            if not at_rest():
                results = loop.actuator.emergency_neutral()
                log.error("the drive loop did not disarm within %.1f s: wrote neutral directly: %s",
                          self.tstp_wait_s, ", ".join(f"{k} {v}" for k, v in results.items()))
        _flush_std()
        os.kill(os.getpid(), signal.SIGSTOP)
        if loop is not None:
            log.warning("SIGCONT: resumed, %s (arm again to drive)", loop.state.value)


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _silence_broken_streams() -> bool:
    """Point stdout/stderr at /dev/null where they are a closed pipe or a hung-up terminal;
    True if one was."""
    broken = False
    poller = select.poll()
    for fd in (1, 2):
        try:
            poller.register(fd, select.POLLOUT)
        except (OSError, ValueError):
            continue
    try:
        events = poller.poll(0)
    except OSError:
        return False
    for fd, ev in events:
        if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
            broken = True
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, fd)
                os.close(null)
            except OSError:
                pass
    return broken


def drive_with_signals(
    loop: DriveLoop, *, grace_s: float = 2.0, stall_s: float = 2.0,
    signals: StopSignals | None = None,
) -> int:
    """Run ``loop`` in a worker thread, supervised from this (the main) thread, with
    :class:`StopSignals` routed to it (``signals``, or a new set that stays installed).

    If the loop does not finish within ``grace_s`` after a stop, or makes no progress for
    ``stall_s`` (a hung stage or a PWM write that does not return: the watchdog already sent
    neutral where it could), neutral is written on every channel that still accepts it, without
    the device lock and bounded in time, one ``error:`` line says why, and the process exits
    hard: the stop's code, or :attr:`ExitCode.WATCHDOG` (5).
    """
    done = threading.Event()
    result: list[int] = []

    def worker() -> None:
        try:
            result.append(loop.run())
        finally:
            done.set()

    own = signals is None
    if signals is None:
        signals = StopSignals(keep=True).__enter__()
    signals.attach(loop)
    thread = threading.Thread(target=worker, name="drive-loop", daemon=True)
    thread.start()
    try:
        stop_seen: float | None = None
        while not done.wait(0.05):
            if loop.stopping:
                stop_seen = stop_seen or now_s()
                if now_s() - stop_seen > grace_s:
                    _force_exit(loop, loop.stop_code,
                                f"the drive loop did not stop within {grace_s:.1f} s")
            elif now_s() - loop.last_progress_s > stall_s:
                stuck_s = loop.actuator.write_stuck_s()
                if stuck_s is not None:
                    why = (f"a PWM write to {loop.actuator.busy_target or 'the output'} has not "
                           f"returned for {stuck_s:.1f} s")
                else:
                    why = f"the drive loop is stuck for {stall_s:.1f} s (a hung stage)"
                _force_exit(loop, int(ExitCode.WATCHDOG), why)
    finally:
        signals.detach()
        if own:  # the loop has ended and the process is on its way out
            signals.__exit__(None, None, None)
    return result[0] if result else int(ExitCode.FAULT)


def _force_exit(loop: DriveLoop, code: int, why: str) -> None:
    """Neutral on every channel that takes it, one line, exit ``code`` now (never returns)."""
    results = loop.actuator.emergency_neutral()
    guardian = loop.actuator.guardian
    if guardian is not None:
        guardian.abandon()  # it writes neutral too, and exits
    line = f"{why}; neutral: " + ", ".join(f"{k} {v}" for k, v in results.items())
    log.error("%s (exit %d)", line, code)
    try:
        print(f"error: {line}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
    _flush_std()
    os._exit(code)


# -- wiring shared by `car-runtime run` and the ROS node -------------------------------------------

def open_actuator(cfg: "RunConfig") -> Actuator:
    """Calibration (stock defaults with a warning if the file is missing), the output with the
    deadline watchdog, and -- for real outputs with ``cfg.guardian`` -- the guardian process.
    The car is at neutral when this returns."""
    from car_runtime.actuation.calibration import load_calibration
    from car_runtime.actuation.output import open_output

    calibration = load_calibration(cfg.calibration, missing="defaults")
    actuator = Actuator(
        open_output(cfg.output, calibration), calibration, deadline_s=cfg.deadline_ms / 1e3
    )
    if cfg.guardian:
        try:
            attach_guardian(actuator, cfg.deadline_ms / 1e3)
        except BaseException:
            actuator.close()
            raise
    return actuator


def attach_guardian(actuator: Actuator, deadline_s: float, *,
                    to_disable: str = "set guardian: false") -> None:
    """Start the guardian process for ``actuator``'s output (if another process can reach it;
    otherwise a warning) and attach it. HardwareError if it cannot start (its message ends
    with ``to_disable``: how to go on without a guardian)."""
    from car_runtime.actuation.guardian import GuardianError, GuardianLink
    from car_runtime.actuation.recorder import Recorder
    from car_runtime.errors import HardwareError

    output = actuator.output
    targets = output.guardian_targets()
    if targets is None:
        if not isinstance(output, Recorder):
            log.warning("no guardian for %s: another process cannot open it; only the in-process "
                        "watchdog covers stalls (use a device path like /dev/ttyACM0)",
                        type(output).__name__)
        return
    try:
        link = GuardianLink(targets, deadline_s)
    except GuardianError as exc:
        raise HardwareError(
            f"the guardian process could not start: {exc}; fix that, or {to_disable} to "
            "drive without the out-of-process fail-safe"
        ) from None
    actuator.attach_guardian(link)
    log.info("guardian pid %d watches %s (deadline %.0f ms)", link.pid,
             ", ".join(t.path for t in targets), deadline_s * 1e3)


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
