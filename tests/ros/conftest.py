"""ROS 2 test plumbing: an isolated DDS domain on loopback, the node as a real subprocess, and
a probe node in the test process (real rclpy, real FastDDS; nothing mocked).

The environment is set at import, before any rclpy use, for this process and the node
subprocesses: ``ROS_DOMAIN_ID`` = 1 + pid % 100 (one domain per pytest process, so parallel
runs and xdist workers do not hear each other; 1..100 keeps FastDDS ports valid),
``RMW_IMPLEMENTATION=rmw_fastrtps_cpp``, and discovery limited to localhost
(``ROS_AUTOMATIC_DISCOVERY_RANGE`` on Iron and later, ``ROS_LOCALHOST_ONLY`` before).
rclpy itself is imported lazily, so the tests that check life *without* rclpy still run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

ROS_DOMAIN_ID = 1 + os.getpid() % 100
ROS_ENV = {
    "ROS_DOMAIN_ID": str(ROS_DOMAIN_ID),
    "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    "ROS_LOCALHOST_ONLY": "1",
}
os.environ.update(ROS_ENV)
os.environ.pop("ROS_STATIC_PEERS", None)

#: Stock-format calibration with mids unlike the stock defaults: neutral proves the file is used.
CALIBRATION = {
    "Calibration": {
        "Servo": {"min": 1_250_000, "mid": 1_500_000, "max": 1_750_000, "polarity": 1},
        "Motor": {"min": 1_300_000, "mid": 1_400_000, "max": 1_550_000, "polarity": -1},
        "version": 1,
    }
}
NEUTRAL_NS = (1_500_000, 1_400_000)  # (servo mid, motor mid) of CALIBRATION


def car_runtime_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("car-runtime")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "car_runtime.cli.main"]


def ros_value(value: Any) -> str:
    """A ``-p name:=value`` literal of the right ROS type (bool, double, int, string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


@dataclass
class NodeProcess:
    """``car-runtime ros`` in a subprocess; stdout+stderr go to ``log``."""

    proc: subprocess.Popen
    log: Path
    record: Path | None

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def interrupt(self, timeout_s: float = 30.0) -> int:
        """SIGINT, then wait for the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def ros_env() -> dict[str, str]:
    """Environment for a node subprocess: this process's, on the test's DDS domain."""
    return {**os.environ, **ROS_ENV, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}


@pytest.fixture
def car_runtime_cmd() -> list[str]:
    """How to run ``car-runtime`` (the console script of this interpreter)."""
    return car_runtime_command()


@pytest.fixture
def start_node(tmp_path: Path) -> Callable[..., NodeProcess]:
    """Factory: ``start_node(**params)`` runs ``car-runtime ros --ros-args -p k:=v ...``."""
    started: list[NodeProcess] = []

    def start(**params: Any) -> NodeProcess:
        log = tmp_path / f"node{len(started)}.log"
        args = [f"{k}:={ros_value(v)}" for k, v in params.items()]
        cmd = [*car_runtime_command(), "ros", "--ros-args"]
        for a in args:
            cmd += ["-p", a]
        output = str(params.get("output", ""))
        record = Path(output[len("record:"):]) if output.startswith("record:") else None
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path,
                env={**os.environ, **ROS_ENV, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"},
            )
        node = NodeProcess(proc, log, record)
        started.append(node)
        return node

    yield start
    for node in started:
        node.kill()


@pytest.fixture
def long_footage(tmp_path: Path, footage_seq_dir: Path) -> Path:
    """The 100 real car frames repeated 6 times (600 frames = 40 s at 15 fps), as symlinks, so
    a paced node does not reach the end of input during a test."""
    out = tmp_path / "footage-x6"
    out.mkdir()
    frames = sorted(footage_seq_dir.glob("*.jpg"))
    for rep in range(6):
        for i, src in enumerate(frames):
            (out / f"{rep * len(frames) + i:06d}.jpg").symlink_to(src)
    return out


@pytest.fixture
def calibration_file(tmp_path: Path) -> Path:
    import json

    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(CALIBRATION), encoding="utf-8")
    return path


@dataclass
class Probe:
    """A second node in the test process: subscriptions, service and parameter clients."""

    context: Any
    node: Any
    executor: Any
    received: dict[str, list] = field(default_factory=dict)

    def spin(self, duration_s: float = 0.05) -> None:
        self.executor.spin_once(timeout_sec=duration_s)

    def wait_for(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        """Spin until ``predicate()`` is truthy; fail naming ``what`` after ``timeout_s``."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            value = predicate()
            if value:
                return value
            self.spin(0.05)
        pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")

    def subscribe(self, msg_type: Any, topic: str, qos: Any) -> list:
        box: list = []
        self.received[topic] = box
        self.node.create_subscription(msg_type, topic, box.append, qos)
        return box

    def call(self, srv_type: Any, name: str, request: Any, timeout_s: float = 30.0) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            self.wait_for(lambda: client.service_is_ready(), timeout_s, f"service {name}")
            future = client.call_async(request)
            self.wait_for(future.done, timeout_s, f"a response from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameter(self, node_name: str, name: str, value: Any, timeout_s: float = 60.0):
        """Through the node's ``set_parameters`` service; returns the SetParametersResult."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        parameter = Parameter(name, value=value).to_parameter_msg()
        request = SetParameters.Request(parameters=[parameter])
        response = self.call(SetParameters, f"/{node_name}/set_parameters", request, timeout_s)
        return response.results[0]


@pytest.fixture
def probe():
    """A probe node on its own rclpy context (shut down afterwards)."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("car_runtime_test_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield Probe(context, node, executor)
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()


@pytest.fixture
def broken_model(tmp_path: Path, demo_model: Path) -> Path:
    """A model folder with real metadata and a model.pb that is not a graph."""
    import tarfile

    folder = tmp_path / "broken-model"
    folder.mkdir()
    with tarfile.open(demo_model) as tar:
        meta = tar.extractfile("model_metadata.json")
        assert meta is not None
        (folder / "model_metadata.json").write_bytes(meta.read())
    (folder / "model.pb").write_bytes(b"this is not a TensorFlow graph\n" * 64)
    return folder



@pytest.fixture
def neutral_ns() -> tuple[int, int]:
    """(servo mid, motor mid) in ns of ``calibration_file``."""
    return NEUTRAL_NS
