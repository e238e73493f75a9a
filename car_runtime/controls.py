"""The one control surface the adapters use: ``run`` (signals), the ROS node, the web cockpit
and the flight recorder all drive the car through :class:`DriveControls`.

- arm / disarm / stop and the max speed go straight to the :class:`~car_runtime.runtime.DriveLoop`
  control methods (applied by the loop thread at its next iteration);
- :meth:`DriveControls.load_model` swaps the model like the stock ``ctrl_pkg``: disarm (neutral),
  compile the new model on the model thread while the loop keeps running at neutral, swap it in,
  then restore the armed state the user asked for -- also when the load fails and the old model
  stays. One load at a time: a second one is refused with :class:`~car_runtime.errors.BusyError`;
- :meth:`DriveControls.status` is the loop's status plus the model, the load in progress and
  the facts other parts register (recording, guardian, ...);
- calibration (:meth:`DriveControls.begin_calibration` ... :meth:`end_calibration`): the loop
  hands the outputs over, raw pulses go through the same actuator (its deadline watchdog
  returns them to neutral when they stop) and are held only while the controlling client's
  heartbeats arrive; :meth:`save_calibration` writes the file atomically and applies it live.

Every model is compiled on :class:`ModelLoader`'s single thread, which never receives
asynchronous signals (see :func:`block_async_signals`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from car_runtime.control.safety import State
from car_runtime.errors import BusyError, CarRuntimeError, ConfigError, ModelError
from car_runtime.timing import now_s

if TYPE_CHECKING:
    from car_runtime.actuation.calibration import Calibration
    from car_runtime.actuation.output import DutyWrite
    from car_runtime.config import RunConfig
    from car_runtime.model.metadata import ModelMetadata
    from car_runtime.model.policy import LoadedModel
    from car_runtime.pipeline import Pipeline
    from car_runtime.runtime import DriveLoop

log = logging.getLogger(__name__)

STATE_WAIT_S = 1.0  # how long arm/stop callers wait to see the loop apply a request

#: Signals that fault handling needs; every other signal is blocked on the model thread.
_SYNCHRONOUS_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
                        signal.SIGTRAP, signal.SIGSYS, signal.SIGABRT}


def block_async_signals() -> None:
    """Model-thread initializer: never let the kernel deliver SIGINT/SIGTERM/... here.

    OpenVINO's CPU plugin (``SigAltStackSetup``, for AMX) installs a ``sigaltstack`` on the
    thread that first compiles with a new ``ov.Core`` and unmaps it when that core is destroyed
    -- from whichever thread drops it, without restoring the first thread's stack. Python's
    handlers use ``SA_ONSTACK``, so the next SIGINT delivered to the compiling thread crashes
    the process (SIGSEGV, si_code SI_KERNEL). A swapped-out model is dropped on the drive-loop
    thread, so we compile on this thread, which never receives asynchronous signals.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.valid_signals()) - _SYNCHRONOUS_SIGNALS)


class ModelLoader:
    """Loads models with ``cfg``'s device/precision/preprocess settings, one at a time, on one
    dedicated signal-blocking thread. Context manager; :meth:`close` ends the thread."""

    def __init__(self, cfg: "RunConfig") -> None:
        self.config = cfg
        self._thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="model-loader", initializer=block_async_signals)

    def load(
        self,
        path: str,
        *,
        max_speed_pct: float | None = None,
        on_phase: Callable[[str], None] | None = None,
    ) -> tuple["LoadedModel", "Pipeline"]:
        """Open and compile ``path`` on the model thread (the caller waits)."""
        from car_runtime.runtime import load_pipeline

        return self._thread.submit(
            load_pipeline, self.config, path, max_speed_pct=max_speed_pct, on_phase=on_phase
        ).result()

    def close(self) -> None:
        self._thread.shutdown()

    def __enter__(self) -> "ModelLoader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ModelInfo:
    """The model the car drives with (or is about to, right after a swap)."""

    name: str
    path: str  # as given (archive, folder, .pb or .xml)
    metadata: "ModelMetadata"
    load_s: float

    @classmethod
    def of(cls, loaded: "LoadedModel", path: str) -> "ModelInfo":
        return cls(loaded.bundle.name, str(path), loaded.metadata, loaded.load_s)


@dataclass(frozen=True)
class Loading:
    """A model load in progress."""

    name: str
    phase: str  # "waiting" | "opening" | "compiling"
    started_s: float  # now_s() clock


class DriveControls:
    """Arm, disarm, stop, max speed, model loads and status over one :class:`DriveLoop`.

    Thread-safe; every method may be called from any thread except the drive-loop thread
    (:meth:`load_model` and the ``wait`` variants block).
    """

    def __init__(self, loop: "DriveLoop", loader: ModelLoader, model: ModelInfo) -> None:
        self.loop = loop
        self.loader = loader
        self.model = model
        self.loading: Loading | None = None
        self.want_armed = loop.state is State.ARMED or loop.arm_pending
        self._lock = threading.Lock()
        self._facts: dict[str, Callable[[], Any]] = {}
        self._model_listeners: list[Callable[[ModelInfo], None]] = []
        self._calibration_lock = threading.Lock()
        self._calibration_pulse_ns: tuple[int, int] | None = None  # (servo, motor) held

    # -- driving ---------------------------------------------------------------------------------
    def arm(self, *, wait_s: float = 0.0) -> tuple[bool, str]:
        """Ask to drive. During a model load the car arms when the model is ready.

        Returns ``(ok, message)``; with ``wait_s`` it waits up to that long for the loop to be
        armed (it may refuse: a latched fault, or the deadman without a fresh heartbeat)."""
        if self.loop.calibrating:
            return False, "not armed: calibrating; finish the calibration first"
        with self._lock:
            self.want_armed = True
            loading = self.loading
            if loading is None:
                self.loop.arm()
        if loading is not None:
            return True, f"loading {loading.name}: arms when it is ready"
        if not wait_s:
            return True, "arm requested"
        ok = self.wait_state(State.ARMED, wait_s)
        return ok, (State.ARMED.value if ok else self._not_armed_reason())

    def disarm(self, *, wait_s: float = 0.0) -> tuple[bool, str]:
        """Stop driving (neutral) but keep the loop running; clears a latched fault."""
        return self._stand_down(self.loop.disarm, wait_s, "disarm requested", "")

    def stop(self, *, wait_s: float = 0.0) -> tuple[bool, str]:
        """Neutral and disarm (the STOP button, the ROS ``stop`` service)."""
        return self._stand_down(self.loop.stop_driving, wait_s, "stop requested",
                                "stop requested; ")

    def _stand_down(self, post: Callable[[], None], wait_s: float, requested: str,
                    failed_prefix: str) -> tuple[bool, str]:
        with self._lock:
            self.want_armed = False
            post()
        if not wait_s:
            return True, requested
        ok = self.wait_state(State.DISARMED, wait_s)
        return ok, ("neutral, disarmed" if ok else f"{failed_prefix}state is {self.loop.state.value}")

    def set_max_speed_pct(self, pct: Any) -> float:
        """Set the throttle scale (0-100, like the stock slider) live; ConfigError otherwise."""
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
            raise ConfigError(f"max speed must be a number from 0 to 100 (percent), got {pct!r}")
        self.loop.set_max_speed_pct(float(pct))
        return float(pct)

    def heartbeat(self) -> None:
        """The controlling client is alive (feeds the loop's deadman)."""
        self.loop.heartbeat()

    def wait_state(self, target: State, timeout_s: float = STATE_WAIT_S) -> bool:
        """Wait until the loop is in ``target`` (or has ended); True if it got there."""
        deadline_s = now_s() + timeout_s
        while self.loop.state is not target and self.loop.exit_code is None and now_s() < deadline_s:
            time.sleep(0.005)
        return self.loop.state is target

    def _not_armed_reason(self) -> str:
        state = self.loop.state
        if state is State.FAULT:
            return "not armed: the car is in fault; disarm (or stop) to clear it, then arm again"
        if self.loop.deadman_s is not None and self.loop.heartbeat_age_s() > self.loop.deadman_s:
            return "not armed: no heartbeat from the controlling client (deadman)"
        return f"not armed: state is {state.value}"

    # -- models ----------------------------------------------------------------------------------
    def load_model(self, path: str | Path) -> ModelInfo:
        """Load ``path`` while the car waits at neutral, swap it in, restore the armed state.

        Raises :class:`BusyError` if a load is already running, or the load's
        :class:`CarRuntimeError` (the old model keeps driving). Blocks for the load.
        """
        path = str(path)
        name = Path(path).name
        with self._lock:
            if self.loading is not None:
                raise BusyError(f"model {self.loading.name} is loading; wait until it is ready")
            if self.loop.calibrating:
                raise BusyError("calibrating: finish the calibration before loading a model")
            self.loading = Loading(name, "waiting", now_s())
            self.loop.disarm()
        log.info("loading model %s (neutral while loading)", name)

        def phase(p: str) -> None:
            current = self.loading
            if current is not None:
                self.loading = Loading(current.name, p, current.started_s)

        error: CarRuntimeError | None = None
        try:
            loaded, pipeline = self.loader.load(
                path, max_speed_pct=self.loop.max_speed_pct, on_phase=phase)
            channels = self.loop.pipeline.policy.channels
            if pipeline.policy.channels != channels:
                raise ModelError(
                    f"{name} needs {pipeline.policy.channels} camera(s) but the car runs with "
                    f"{channels}; restart car-runtime with this model"
                )
        except CarRuntimeError as exc:
            error = exc
        except Exception as exc:  # an OpenVINO/OpenCV surprise: refuse, keep the old model
            error = ModelError(f"{name}: {type(exc).__name__}: {exc}")
        else:
            info = ModelInfo.of(loaded, path)
            for listener in list(self._model_listeners):  # before the loop can use it
                try:
                    listener(info)
                except Exception:
                    log.exception("model listener %r failed", listener)
            self.loop.swap_pipeline(pipeline)
            self.model = info
            log.info("model %s ready in %.2f s", info.name, info.load_s)
        finally:
            with self._lock:
                self.loading = None
                if self.want_armed:
                    self.loop.arm()
        if error is not None:
            log.error("model %s refused, keeping %s: %s", name, self.model.name, error)
            raise error
        return info

    def add_model_listener(self, fn: Callable[[ModelInfo], None]) -> None:
        """Call ``fn(info)`` (in the loading thread) when a model loaded successfully and is
        about to be swapped in: after the car was disarmed for the load, before the loop can
        run the new model (so whatever ``fn`` queues comes before the new model's first write).
        ``fn`` must return at once; one that raises is logged and the swap goes on."""
        self._model_listeners.append(fn)

    # -- calibration -----------------------------------------------------------------------------
    def begin_calibration(self, *, wait_s: float = STATE_WAIT_S) -> None:
        """Disarm and hand the outputs from the loop to :meth:`calibration_pulse`.

        BusyError during a model load, or if the loop does not answer within ``wait_s``."""
        with self._lock:
            if self.loading is not None:
                raise BusyError(f"model {self.loading.name} is loading; calibrate when it is ready")
            self.want_armed = False
            self.loop.set_calibration_mode(True)
        if not self._wait(lambda: self.loop.calibrating, wait_s):
            self.loop.set_calibration_mode(False)
            raise BusyError("the drive loop did not hand over the outputs; try again")
        log.info("calibrating: the car is disarmed and the loop writes nothing")

    def calibration_pulse(self, servo_ns: int | None = None, motor_ns: int | None = None) -> DutyWrite:
        """Write raw pulses (``None`` keeps a channel) within the RC range; held by
        :meth:`hold_calibration`. ConfigError when not calibrating or out of range."""
        from car_runtime.cli.calibrate import NUDGE_LIMITS_NS

        lo, hi = NUDGE_LIMITS_NS
        for name, v in (("servo", servo_ns), ("motor", motor_ns)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
                raise ConfigError(f"{name} pulse must be an integer from {lo} to {hi} ns, got {v!r}")
        with self._calibration_lock:
            if not self.loop.calibrating:
                raise ConfigError("not calibrating: begin the calibration first")
            w = self.loop.actuator.raw(servo_ns, motor_ns, event="calibrate")
            self._calibration_pulse_ns = (w.servo_ns, w.motor_ns)
            return w

    def hold_calibration(self, max_heartbeat_age_s: float) -> bool:
        """Re-send the held pulse if a heartbeat arrived within ``max_heartbeat_age_s``; else
        send nothing (the actuator watchdog then writes neutral). Call it more often than the
        actuator deadline. Returns True if it sent."""
        with self._calibration_lock:
            held = self._calibration_pulse_ns
            if held is None or not self.loop.calibrating:
                return False
            if self.loop.heartbeat_age_s() > max_heartbeat_age_s:
                return False
            self.loop.actuator.raw(*held, event="calibrate_hold")
            return True

    def end_calibration(self, *, wait_s: float = STATE_WAIT_S) -> bool:
        """Stop the pulses and give the outputs back to the loop, which writes neutral."""
        with self._calibration_lock:
            self._calibration_pulse_ns = None
            self.loop.set_calibration_mode(False)
        return self._wait(lambda: not self.loop.calibrating, wait_s)

    @property
    def calibration_pulse_ns(self) -> tuple[int, int] | None:
        return self._calibration_pulse_ns

    def save_calibration(self, cal: "Calibration", path: str | Path | None = None) -> Path:
        """Save ``cal`` (atomic, previous version kept in the history) to ``path`` (default the
        run's calibration file) and apply it at once. BusyError while armed."""
        from car_runtime.actuation.calibration import save_calibration

        if self.loop.state is State.ARMED or self.loop.arm_pending:
            raise BusyError("the car is armed: STOP before changing the calibration")
        written = save_calibration(cal, path if path is not None else self.loader.config.calibration)
        self.loop.actuator.set_calibration(cal)
        log.info("calibration saved to %s and applied", written)
        return written

    def _wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline_s = now_s() + timeout_s
        while not predicate() and self.loop.exit_code is None and now_s() < deadline_s:
            time.sleep(0.005)
        return predicate()

    # -- status ----------------------------------------------------------------------------------
    def add_facts(self, name: str, fn: Callable[[], Any]) -> None:
        """Include ``fn()`` (cheap, non-blocking, JSON-able) as ``status()[name]``."""
        self._facts[name] = fn

    def fact(self, name: str) -> Any:
        """The current value of the fact registered as ``name`` (None if there is none, or it
        fails): one fact without building the whole :meth:`status`."""
        fn = self._facts.get(name)
        if fn is None:
            return None
        try:
            return fn()
        except Exception:
            return None

    def status(self) -> dict[str, Any]:
        """The loop's status plus model, load in progress, max speed, deadman and facts."""
        loop = self.loop
        s = loop.status()
        loading = self.loading
        s.update(
            model=self.model.name,
            model_path=self.model.path,
            action_space_type=self.model.metadata.action_space_type,
            loading=None if loading is None else {
                "name": loading.name, "phase": loading.phase,
                "elapsed_s": round(now_s() - loading.started_s, 2)},
            max_speed_pct=loop.max_speed_pct,
            armed_requested=self.want_armed,
            driven=loop.stats.driven,
            exit_reason=loop.exit_reason if loop.exit_code is not None else None,
        )
        for name, fn in list(self._facts.items()):
            try:
                s[name] = fn()
            except Exception as exc:  # a broken fact never breaks the status
                s[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return s
