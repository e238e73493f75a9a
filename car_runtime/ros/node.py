"""The ``car_runtime`` ROS 2 node (``car-runtime ros``): a thin rclpy adapter over
:class:`~car_runtime.runtime.DriveLoop`.

The node re-implements no stage. It opens the same stack as ``car-runtime run`` (outputs first,
so the car rests at neutral while the model loads) and only translates ROS calls into loop
controls and loop state into ROS messages:

- ``~/enable`` (std_srvs/SetBool) -> :meth:`DriveLoop.arm` / :meth:`DriveLoop.disarm`;
  ``~/stop`` (std_srvs/Trigger) -> :meth:`DriveLoop.stop_driving` (neutral + disarm).
- parameter ``max_speed_pct`` -> :meth:`DriveLoop.set_max_speed_pct` (live); ``model_path``
  -> a new :class:`Pipeline` via :meth:`DriveLoop.swap_pipeline` (see
  :meth:`CarRuntimeNode._swap_model`).
- ``~/status`` (diagnostic_msgs/DiagnosticArray) from :meth:`DriveLoop.status` on a timer;
  ``~/decision`` (std_msgs/Float64MultiArray, fields :data:`DECISION_FIELDS`) and the optional
  ``~/debug_image`` (sensor_msgs/Image mono8) from the loop's ``on_step`` hook.

Threads:

- the drive loop (inference, PWM writes) runs in a worker thread, supervised from the main
  thread by :func:`~car_runtime.runtime.drive_with_signals` -- the very supervision of
  ``car-runtime run``: SIGINT/SIGTERM stop it with 128+signal, a stop has a grace period, and a
  stage stuck longer than ``stall_timeout_ms`` closes the outputs (neutral) and exits 5;
- the ``on_step`` hook (loop thread) only copies a few numbers into a newest-wins slot and
  triggers a guard condition; serialisation and publishing happen on the executor;
- a :class:`MultiThreadedExecutor` spins in its own thread with three callback groups
  (parameters, control services, publishing): a ``model_path`` change blocks its parameter
  callback while the new model compiles (seconds on the car), and ``~/stop`` and ``~/status``
  must keep answering meanwhile. If the executor dies, the loop is stopped: the car never
  drives without its ROS controls;
- models are compiled on the :class:`~car_runtime.controls.ModelLoader` thread, which never
  receives asynchronous signals; enable/stop/model swaps go through
  :class:`~car_runtime.controls.DriveControls`, the control surface ``run`` and the web cockpit
  use too.

Every way out (signal, end of input, fault) ends the loop, which writes neutral on its way out;
the actuator is then closed (neutral again).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, MultiArrayLayout
from std_srvs.srv import SetBool, Trigger

from car_runtime.actuation.output import DutyWrite
from car_runtime.config import describe_max_speed
from car_runtime.control.safety import ExitCode, State
from car_runtime import recording
from car_runtime.controls import STATE_WAIT_S, DriveControls, ModelInfo, ModelLoader
from car_runtime.errors import CarRuntimeError, ConfigError
from car_runtime.pipeline import StepResult
from car_runtime.ros.params import NODE_NAME, PARAMETERS, RosParam, live_change_refusal, run_config
from car_runtime.runtime import DriveLoop, drive_with_signals, open_actuator
from car_runtime.timing import now_s

#: Order and meaning of the values in each ``~/decision`` message (also in its layout label).
#: ``angle``/``throttle`` are what was written to the servo/ESC (0, 0 = neutral: disarmed, stale
#: frame or invalid output); ``action_index`` is NaN for continuous action spaces;
#: ``frame_stamp_s`` is the frame's capture time on the node's ROS clock (seconds).
DECISION_FIELDS = (
    "frame_seq",
    "frame_stamp_s",
    "frame_age_ms",
    "action_index",
    "steering_angle_deg",
    "speed_mps",
    "angle",
    "throttle",
    "armed",
)

#: Camera images: best effort, newest only (a late image is worthless).
IMAGE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
#: Decisions and status: reliable, newest only; nothing stale queues up.
LATEST_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

RCLError = _rclpy.RCLError

STOP_GRACE_S = 2.0  # how long shutdown waits for the loop before cutting it off


def _descriptor(p: RosParam) -> ParameterDescriptor:
    d = ParameterDescriptor(name=p.name, description=p.description)
    if not p.live:
        d.additional_constraints = "fixed at start-up: restart the node to change it"
    if p.range is not None:
        lo, hi = p.range
        if isinstance(p.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
        else:
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
    return d


def _type_name(value: Any) -> str:
    names = {bool: "true or false", int: "an integer", str: "a string",
             float: "a double (ROS reads 50 as an integer: write 50.0)"}
    return names[type(value)]


def _literal(value: Any) -> str:
    """``value`` as a ``-p name:=value`` literal."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if value != "" else "VALUE"


class CarRuntimeNode(Node):
    """One node, ``car_runtime``: declares its parameters, opens the drive stack, wires ROS.

    Raises :class:`CarRuntimeError` (bad parameter, model, calibration, camera, output) with the
    outputs already back at neutral and closed. Drive with ``drive_with_signals(node.loop)``
    (see :func:`main`), then :meth:`close`.
    """

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.config = run_config(self._declare_parameters())
        if not self.config.model:
            raise ConfigError(
                "no model given; pass --ros-args -p model_path:=PATH (a model.tar.gz, a model "
                "folder or a model.xml)"
            )
        self._debug_period_s = self._period(self.get_parameter("debug_image_hz").value)
        self._pending_lock = threading.Lock()
        self._pending_decision: tuple | None = None
        self._pending_image: tuple[np.ndarray, float, int] | None = None
        self._last_image_s = -math.inf
        self._last_counts = (0, 0, 0)  # frames, stale, deadline misses at the last status
        self._closed = False
        self.loader = ModelLoader(self.config)  # every model is compiled there, one at a time
        try:
            self._open_stack()
        except BaseException:
            self.loader.close()
            raise
        self._adapters = contextlib.ExitStack()  # the flight recorder (record_dir)
        try:
            self._adapters.enter_context(recording.attach(self.controls, self.config))
            self._adapters.callback(self.actuator.close)  # its final neutral goes in the bag
        except BaseException:
            self.source.close()
            self.actuator.close()
            self.loader.close()
            raise
        self._decision_layout = MultiArrayLayout(
            dim=[MultiArrayDimension(label=",".join(DECISION_FIELDS), size=len(DECISION_FIELDS),
                                     stride=len(DECISION_FIELDS))],
            data_offset=0,
        )
        control = MutuallyExclusiveCallbackGroup()
        publishing = MutuallyExclusiveCallbackGroup()
        self._decision_pub = self.create_publisher(Float64MultiArray, "~/decision", LATEST_QOS,
                                                   callback_group=publishing)
        self._image_pub = self.create_publisher(Image, "~/debug_image", IMAGE_QOS,
                                                callback_group=publishing)
        self._status_pub = self.create_publisher(DiagnosticArray, "~/status", LATEST_QOS,
                                                 callback_group=publishing)
        self._wake = self.create_guard_condition(self._publish_pending, callback_group=publishing)
        if self.config.status_interval_s > 0:
            self.create_timer(self.config.status_interval_s, self._publish_status,
                              callback_group=publishing)
        self.create_service(SetBool, "~/enable", self._on_enable, callback_group=control)
        self.create_service(Trigger, "~/stop", self._on_stop, callback_group=control)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- set-up ----------------------------------------------------------------------------------
    def _declare_parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for p in PARAMETERS:
            example = f"-p {p.name}:={_literal(p.default)}"
            try:
                values[p.name] = self.declare_parameter(p.name, p.default, _descriptor(p)).value
            except InvalidParameterTypeException:
                if isinstance(p.default, str):
                    example += f" (quote numbers: -p {p.name}:=\"'4'\")"
                raise ConfigError(f"parameter {p.name} must be {_type_name(p.default)}, "
                                  f"e.g. {example}") from None
            except InvalidParameterValueException:
                lo, hi = p.range or (math.nan, math.nan)
                raise ConfigError(f"parameter {p.name} is outside {lo:g}..{hi:g}, "
                                  f"e.g. {example}") from None
        return values

    def _open_stack(self) -> None:
        """Calibration, outputs (neutral), model, camera, loop -- in that order, like ``run``."""
        import cv2


        from car_runtime.vision.sources import open_source

        cfg = self.config
        cv2.setNumThreads(1)  # OpenVINO owns the cores
        self.actuator = open_actuator(cfg)
        try:
            loaded, pipeline = self.loader.load(cfg.model)
            metadata, load_s = loaded.metadata, loaded.load_s
            self.source = open_source(cfg.camera, fps=cfg.fps, stereo=metadata.is_stereo)
        except BaseException:
            self.actuator.close()
            raise
        self.loop = DriveLoop(
            self.source,
            pipeline,
            self.actuator,
            armed=cfg.arm,
            max_frame_age_s=cfg.max_frame_age_ms / 1e3,
            status_interval_s=0.0,  # ~/status replaces the log lines
            on_step=self._on_step,
        )
        self.controls = DriveControls(self.loop, self.loader, ModelInfo.of(loaded, cfg.model))
        self.get_logger().info(
            f"model {self.model_name}: {metadata.action_space_type}, "
            f"{metadata.action_space.size} outputs, ready in {load_s:.2f} s; camera {cfg.camera}, "
            f"output {cfg.output}; {'ARMED' if cfg.arm else 'disarmed'}"
            f"{'' if cfg.arm else ' (arm: call ~/enable)'}, "
            f"{describe_max_speed(cfg.max_speed_pct, 'ros')}, deadline {cfg.deadline_ms:g} ms"
        )

    @property
    def model_name(self) -> str:
        return self.controls.model.name if hasattr(self, "controls") else "?"

    @staticmethod
    def _period(hz: float) -> float:
        return 1.0 / hz if hz > 0 else 0.0

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def driving(self) -> bool:
        """True until the drive loop has ended (or the node is closed)."""
        return self.loop.exit_code is None and not self._closed

    def close(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the loop if it still runs (it writes neutral on its way out), then close the
        camera, the outputs (neutral) and the model thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.loop.request_stop(ExitCode.OK, "node shutting down")
        end_s = now_s() + grace_s
        while self.loop.exit_code is None and now_s() < end_s:
            time.sleep(0.01)
        try:
            self._adapters.close()  # the recorder closes its session: a complete bag
            self.source.close()
        finally:
            self.actuator.close()
            self.loader.close()
        s = self.loop.status()
        self.get_logger().info(
            f"{self.loop.exit_reason or 'closed'}: {s['frames']} frames, "
            f"{self.loop.stats.driven} driven, {s['stale']} stale, "
            f"{s['deadline_misses']} deadline misses (exit {self.loop.exit_code})"
        )

    # -- the loop's hook (drive-loop thread: copy and hand off, nothing else) ---------------------
    def _on_step(self, result: StepResult | None, w: DutyWrite, state: State) -> None:
        if result is None:
            return
        frame, d = result.frame, result.decision
        decision = (
            frame.seq, frame.t_capture_s, w.context.get("frame_age_ms"), d.action_index,
            d.steering_deg, d.speed_mps, w.angle, w.throttle, state is State.ARMED,
        )
        image = None
        period_s = self._debug_period_s
        if period_s and frame.t_capture_s - self._last_image_s >= period_s:
            self._last_image_s = frame.t_capture_s
            pipeline = self.loop.pipeline
            channels = pipeline.policy.channels
            pixels = np.hstack([pipeline.model_input(c) for c in range(channels)])
            image = (pixels, frame.t_capture_s, frame.seq)
        with self._pending_lock:
            self._pending_decision = decision
            if image is not None:
                self._pending_image = image
        self._wake.trigger()

    # -- publishing (executor) -------------------------------------------------------------------
    def _stamp_ns(self, t_capture_s: float) -> int:
        """A monotonic capture time on the node's ROS clock."""
        return self.get_clock().now().nanoseconds - int((now_s() - t_capture_s) * 1e9)

    def _publish_pending(self) -> None:
        with self._pending_lock:
            decision, image = self._pending_decision, self._pending_image
            self._pending_decision = self._pending_image = None
        if decision is not None:
            seq, t_capture_s, age_ms, index, steer, speed, angle, throttle, armed = decision
            values = (seq, self._stamp_ns(t_capture_s) / 1e9, age_ms, index, steer, speed, angle,
                      throttle, float(armed))
            msg = Float64MultiArray(layout=self._decision_layout)
            msg.data = [math.nan if v is None else float(v) for v in values]
            self._decision_pub.publish(msg)
        if image is not None:
            pixels, t_capture_s, seq = image
            msg = Image()
            stamp_ns = self._stamp_ns(t_capture_s)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            msg.header.frame_id = f"model_input/{seq}"
            msg.height, msg.width = pixels.shape
            msg.encoding = "mono8"
            msg.step = pixels.shape[1]
            msg.data = pixels.tobytes()
            self._image_pub.publish(msg)

    def _publish_status(self) -> None:
        s = self.loop.status()
        loading = self.controls.loading.name if self.controls.loading is not None else None
        counts = (s["frames"], s["stale"], s["deadline_misses"])
        new_frames, new_stale, new_misses = (a - b for a, b in zip(counts, self._last_counts))
        self._last_counts = counts
        problems = []
        if loading:
            problems.append(f"loading model {loading}")
        if new_misses:
            problems.append(f"{new_misses} deadline misses")
        if new_stale:
            problems.append(f"{new_stale} stale frames")
        if not new_frames:
            problems.append("no frames")
        if self.loop.exit_code is not None:
            problems.append(f"drive loop ended: {self.loop.exit_reason}")
        status = DiagnosticStatus(name=f"{NODE_NAME}: drive loop", hardware_id=self.config.output)
        if s["state"] == State.FAULT.value or self.loop.exit_code:
            status.level = DiagnosticStatus.ERROR
        elif problems:
            status.level = DiagnosticStatus.WARN
        else:
            status.level = DiagnosticStatus.OK
        status.message = ", ".join([s["state"], *problems])
        values: dict[str, Any] = {
            "state": s["state"],
            "model": self.model_name,
            "model_loading": loading or "",
            "max_speed_pct": self.loop.pipeline.mapper.max_speed_pct,
            "fps": s["fps"],
            "frame_age_ms": s["frame_age_ms"],
            "frames": s["frames"],
            "driven": self.loop.stats.driven,
            "stale": s["stale"],
            "skipped": s["skipped"],
            "deadline_misses": s["deadline_misses"],
            "clamped": s["clamped"],
            "nonfinite": s["nonfinite"],
            "camera": self.config.camera,
        }
        for stage, t in s["stages"].items():
            values[f"{stage}_p50_ms"] = round(t["p50_ms"], 3)
            values[f"{stage}_p99_ms"] = round(t["p99_ms"], 3)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(msg)

    # -- services --------------------------------------------------------------------------------
    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data:
            response.success, response.message = self.controls.arm(wait_s=STATE_WAIT_S)
        else:
            response.success, response.message = self.controls.disarm(wait_s=STATE_WAIT_S)
        return response

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.controls.stop(wait_s=STATE_WAIT_S)
        return response

    # -- parameters ------------------------------------------------------------------------------
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.value != self.get_parameter(p.name).value}
        for name in changes:
            reason = live_change_refusal(name)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        try:
            config = run_config({k: v for k, v in changes.items()}, base=self.config)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if "model_path" in changes:
            if not config.model:
                return SetParametersResult(
                    successful=False, reason="model_path cannot be empty; give a model to load")
            reason = self._swap_model(config.model)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        if "max_speed_pct" in changes:
            self.loop.set_max_speed_pct(config.max_speed_pct)
        if "debug_image_hz" in changes:
            self._debug_period_s = self._period(changes["debug_image_hz"])
        self.config = config
        return SetParametersResult(successful=True)

    def _swap_model(self, path: str) -> str | None:
        """Load ``path`` while the car waits at neutral (see
        :meth:`DriveControls.load_model`); None on success, else the reason.

        The parameter callback (an executor thread) waits while the model thread compiles; the
        drive loop keeps running at neutral and the other callback groups keep answering.
        """
        try:
            self.controls.load_model(path)
        except CarRuntimeError as exc:
            return str(exc)
        return None


def _spin(executor: MultiThreadedExecutor, loop: DriveLoop) -> None:
    """The executor thread: serve ROS until shut down; if ROS dies, the car must not drive on."""
    try:
        executor.spin()
    except ExternalShutdownException:
        loop.request_stop(ExitCode.OK, "ROS shut down")
    except BaseException as exc:
        loop.request_stop(ExitCode.FAULT, f"ROS executor failed: {type(exc).__name__}: {exc}")
        raise


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM, the end of input, a fault or a stuck stage.

    The drive loop is supervised exactly as in ``car-runtime run`` (:func:`drive_with_signals`:
    signals, stop grace period, stall watchdog); the executor spins in its own thread. Returns
    the loop's :class:`ExitCode` (0 end of input, 128+signal, 3 fault, 4 camera lost; a stuck
    stage exits the process with 5). Bad parameters or inputs raise :class:`CarRuntimeError`.
    """
    try:
        rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    except RCLError as exc:  # e.g. a -p value that is not valid YAML
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"bad ROS arguments ({first}); write -p name:=value and quote values YAML would "
            "misread, e.g. -p \"output:='record:'\""
        ) from None
    node: CarRuntimeNode | None = None
    executor = MultiThreadedExecutor(num_threads=3)
    spinner: threading.Thread | None = None
    code = int(ExitCode.FAULT)
    try:
        node = CarRuntimeNode()
        executor.add_node(node)
        spinner = threading.Thread(target=_spin, args=(executor, node.loop), name="ros-executor",
                                   daemon=True)
        spinner.start()
        code = drive_with_signals(node.loop, stall_s=node.config.stall_timeout_ms / 1e3)
    finally:
        if node is not None:
            node.close()
        executor.shutdown(timeout_sec=STOP_GRACE_S)
        if spinner is not None:
            spinner.join(STOP_GRACE_S)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
