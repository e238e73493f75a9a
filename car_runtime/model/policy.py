"""Run a DeepRacer policy with OpenVINO: no TensorFlow, no Model Optimizer.

The frozen ``.pb`` is read directly by OpenVINO's TensorFlow frontend. The input is found by
sensor name (``.../agent/{main|policy}/online/network_0/<SENSOR>/<SENSOR>``), reshaped to
batch 1, its layout read from the shape (NHWC from ``.pb``, NCHW from old MO IRs), and compiled
for latency with f32 precision by default. One infer request is reused with a preallocated,
zero-copy input buffer; :meth:`Policy.infer` returns a view of the output.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from car_runtime.errors import ConfigError, ModelError
from car_runtime.model.archive import ModelBundle, open_model
from car_runtime.model.metadata import SENSOR_CHANNELS, ModelMetadata

log = logging.getLogger(__name__)

PRECISIONS = ("f32", "f16", "bf16")
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
MODEL_HEIGHT, MODEL_WIDTH = 120, 160


def _any_text(value: object) -> str:
    """An rt_info value (``OVAny``) as text."""
    return str(value.astype(str)) if hasattr(value, "astype") else str(value)


@dataclass(frozen=True)
class InputInfo:
    name: str
    sensor: str
    shape: tuple[int, ...]  # as compiled (batch 1)
    layout: str  # "NHWC" | "NCHW"

    @property
    def height(self) -> int:
        return self.shape[1] if self.layout == "NHWC" else self.shape[2]

    @property
    def width(self) -> int:
        return self.shape[2] if self.layout == "NHWC" else self.shape[3]

    @property
    def channels(self) -> int:
        return self.shape[3] if self.layout == "NHWC" else self.shape[1]


@dataclass(frozen=True)
class OutputInfo:
    name: str
    shape: tuple[int, ...]


def _sensor_of(names: set[str], sensor: str, head: str) -> int:
    """Rank how well tensor ``names`` match the input of ``sensor`` (0 = no match)."""
    exact = re.compile(rf"agent/{head}/online/network_0/{re.escape(sensor)}/{re.escape(sensor)}(:0)?$")
    loose = re.compile(rf"network_0/{re.escape(sensor)}/{re.escape(sensor)}(:\d+)?$")
    if any(exact.search(n) for n in names):
        return 2
    if any(loose.search(n) for n in names):
        return 1
    return 0


def _layout(shape: list, channels: int) -> str:
    """Decide NHWC vs NCHW from a 4-D camera input shape."""
    def dim(i: int) -> int | None:
        d = shape[i]
        return None if d is None or d < 0 else int(d)

    if dim(3) == channels and dim(1) != channels:
        return "NHWC"
    if dim(1) == channels and dim(3) != channels:
        return "NCHW"
    if dim(3) == channels:
        return "NHWC"
    raise ModelError(
        f"cannot tell the layout of input shape {shape}: expected [?,120,160,{channels}] (NHWC) "
        f"or [?,{channels},120,160] (NCHW) for this sensor"
    )


def _ov_reason(exc: BaseException) -> str:
    """The informative line of an OpenVINO exception (its first lines are source locations)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if not ln.startswith(("Exception from ", "Check '")):
            return ln
    return lines[0] if lines else type(exc).__name__


def import_openvino():
    """The ``openvino`` module, imported with Intel's usage telemetry off.

    ``import openvino`` otherwise sends a "general_import" event to Google Analytics and keeps
    a client id and a usage counter under ``~/intel`` (unless a consent file or a CI variable
    says no). A car sends nothing anywhere and writes nothing outside its configured paths, so
    ``openvino_telemetry`` is made unimportable before OpenVINO is first imported; OpenVINO
    then uses its own no-op stub. Every import of OpenVINO in car-runtime goes through here.
    """
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # None: ``import`` raises ImportError
    import openvino

    return openvino


_core_lock = threading.Lock()
_core = None


def shared_core():
    """The process's one ``openvino.Core`` (creating it loads the plugins: ~0.1-0.2 s)."""
    global _core
    with _core_lock:
        if _core is None:
            _core = import_openvino().Core()
        return _core


def compile_config(device: str, precision: str, hint: str, threads: int | None) -> dict:
    """OpenVINO compile properties for one latency-optimised request."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if hint not in HINTS:
        raise ConfigError(f"hint {hint!r} is not one of {', '.join(HINTS)}")
    # The precision hint goes to every device (AUTO passes it on): bf16 hosts would otherwise
    # silently change outputs.
    config: dict[str, object] = {"PERFORMANCE_HINT": HINTS[hint], "INFERENCE_PRECISION_HINT": precision}
    if device.upper().startswith("CPU"):
        config["INFERENCE_NUM_THREADS"] = int(threads or os.cpu_count() or 1)
    return config


class Policy:
    """A compiled DeepRacer policy with one reused request.

    ``camera_view(i)`` is an (H, W) float32 view into the input buffer for camera channel ``i``
    (stereo: 0 = left, 1 = right); preprocessing writes there, then :meth:`infer` runs.
    """

    def __init__(
        self,
        model_path: str | Path,
        metadata: ModelMetadata,
        *,
        device: str = "CPU",
        precision: str = "f32",
        hint: str = "latency",
        threads: int | None = None,
        batch: int = 1,
    ) -> None:
        ov = import_openvino()
        metadata.check_runnable()
        self.metadata = metadata
        self.device = device
        self.precision = precision
        t0 = time.perf_counter()
        core = shared_core()
        try:
            model = core.read_model(str(model_path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long texts
            first = _ov_reason(exc)
            raise ModelError(
                f"OpenVINO cannot read {Path(model_path).name} ({first[:200]}); "
                "is it a DeepRacer frozen graph (model.pb) or an OpenVINO IR?"
            ) from None
        self.read_s = time.perf_counter() - t0

        sensor = metadata.camera_sensors[0]
        channels = SENSOR_CHANNELS[sensor]
        assert channels is not None
        head = metadata.input_head
        scored = sorted(
            ((_sensor_of(set(p.get_names()), sensor, head), i, p) for i, p in enumerate(model.inputs)),
            key=lambda t: (-t[0], t[1]),
        )
        if not scored or scored[0][0] == 0:
            names = ", ".join(sorted(n for p in model.inputs for n in p.get_names()))
            raise ModelError(
                f"the model has no input for sensor {sensor} (expected "
                f"main_level/agent/{head}/online/network_0/{sensor}/{sensor}; inputs are {names}); "
                "check that model_metadata.json belongs to this model"
            )
        if len(model.inputs) != 1:
            names = ", ".join(sorted(n for p in model.inputs for n in p.get_names()))
            raise ModelError(
                f"the model has {len(model.inputs)} inputs ({names}) but its metadata lists only "
                f"{sensor}; car-runtime feeds exactly one camera input"
            )
        port = scored[0][2]
        pshape = port.get_partial_shape()
        if pshape.rank.is_dynamic or pshape.rank.get_length() != 4:
            raise ModelError(f"camera input {port.any_name} has shape {pshape}, expected 4-D")
        dims = [d.get_length() if d.is_static else None for d in pshape]
        layout = _layout(dims, channels)
        if layout == "NHWC":
            static = [batch, dims[1] or MODEL_HEIGHT, dims[2] or MODEL_WIDTH, channels]
        else:
            static = [batch, channels, dims[2] or MODEL_HEIGHT, dims[3] or MODEL_WIDTH]
        try:
            model.reshape({port: ov.PartialShape(static)})
        except Exception as exc:  # e.g. a graph with batch 1 built in (old IRs)
            raise ModelError(f"the model cannot run with batch {batch} ({_ov_reason(exc)[:200]})"
                             ) from None

        if len(model.outputs) < 1:
            raise ModelError("the model has no output")
        out_port = model.outputs[0]  # stock takes the first output
        out_shape = tuple(int(d) for d in out_port.get_shape())
        out_size = int(np.prod(out_shape))
        expected = metadata.action_space.size
        if out_size != expected * batch:
            raise ModelError(
                f"the model outputs {out_size} values but model_metadata.json describes "
                f"{expected} ({metadata.action_space_type}); the metadata belongs to another model"
            )

        config = compile_config(device, precision, hint, threads)
        t1 = time.perf_counter()
        try:
            compiled = core.compile_model(model, device, config)
        except Exception as exc:
            first = _ov_reason(exc)
            raise ModelError(
                f"OpenVINO cannot compile the model for {device} ({first[:200]}); "
                "try --device CPU"
            ) from None
        self.compile_s = time.perf_counter() - t1

        self.input = InputInfo(port.any_name, sensor, tuple(static), layout)
        self.output = OutputInfo(out_port.any_name, out_shape)
        self._request = compiled.create_infer_request()
        self._compiled = compiled
        self._buffer = np.zeros(static, dtype=np.float32)
        self._request.set_input_tensor(ov.Tensor(self._buffer, shared_memory=True))
        if layout == "NHWC":
            self._views = [self._buffer[0, :, :, c] for c in range(channels)]
        else:
            self._views = [self._buffer[0, c] for c in range(channels)]
        log.debug("compiled %s for %s in %.0f ms: %s", Path(model_path).name, device,
                  self.compile_s * 1e3, self.compiled_properties())

    @property
    def channels(self) -> int:
        return self.input.channels

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.input.height, self.input.width

    def camera_view(self, channel: int) -> np.ndarray:
        """(H, W) float32 view of the input buffer for one camera channel."""
        return self._views[channel]

    @property
    def input_buffer(self) -> np.ndarray:
        return self._buffer

    def compiled_properties(self) -> dict[str, str]:
        """What OpenVINO actually runs: precision, devices, streams, threads (best effort)."""
        out: dict[str, str] = {}
        for key, name in (("INFERENCE_PRECISION_HINT", "precision"), ("EXECUTION_DEVICES", "devices"),
                          ("NUM_STREAMS", "streams"), ("INFERENCE_NUM_THREADS", "threads")):
            try:
                value = self._compiled.get_property(key)
            except Exception:  # not every device reports every property
                continue
            if hasattr(value, "get_type_name"):
                value = value.get_type_name()
            elif isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)
            out[name] = str(value)
        return out

    def kernels(self) -> dict[str, list[str]]:
        """The kernels OpenVINO selected, per operation type of the runtime graph: e.g.
        ``{"Convolution": ["jit_sse42_f32"], "FullyConnected": ["jit_gemm_f32"]}`` on an SSE4.2
        Atom (from each op's ``primitiveType``; empty for devices that do not report it)."""
        found: dict[str, set[str]] = {}
        try:
            ops = self._compiled.get_runtime_model().get_ordered_ops()
        except Exception:  # noqa: BLE001 - not every device exposes a runtime model
            return {}
        for op in ops:
            info = op.get_rt_info()
            if "primitiveType" not in info or "layerType" not in info:
                continue
            kind, prim = (_any_text(info["layerType"]), _any_text(info["primitiveType"]))
            if prim and not prim.startswith(("undef", "unknown")) and kind not in ("Input", "Output"):
                found.setdefault(kind, set()).add(prim)
        return {kind: sorted(prims) for kind, prims in sorted(found.items())}

    def infer(self) -> np.ndarray:
        """Run the reused request on the current input buffer; return the flat output (a view,
        valid until the next call)."""
        self._request.infer()
        return self._request.get_output_tensor(0).data.reshape(-1)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Copy ``x`` (any layout-matching shape incl. batch) into the buffer and infer; returns a copy."""
        np.copyto(self._buffer, np.asarray(x, dtype=np.float32).reshape(self._buffer.shape))
        return self.infer().copy()


@dataclass
class LoadedModel:
    """A model opened and compiled, with its timing facts."""

    bundle: ModelBundle
    policy: Policy
    load_s: float  # archive -> ready (open + read + compile)

    @property
    def metadata(self) -> ModelMetadata:
        return self.bundle.metadata

    def close(self) -> None:
        self.bundle.close()

    def __enter__(self) -> "LoadedModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_model(
    path: str | Path,
    *,
    device: str = "CPU",
    precision: str = "f32",
    hint: str = "latency",
    threads: int | None = None,
    on_phase: "Callable[[str], None] | None" = None,
    batch: int = 1,
) -> LoadedModel:
    """Open any model form (see :func:`open_model`) and compile it; the temp folder of an
    archive is removed as soon as OpenVINO holds the weights.

    ``on_phase`` (optional) is called with ``"opening"`` (extract, check metadata) and
    ``"compiling"`` (OpenVINO read + compile) as each begins, for progress displays. ``batch``
    > 1 compiles for that many inputs at once (``Policy.input_buffer`` is [batch, ...], the
    camera views are item 0's); ModelError if the graph cannot be reshaped."""
    t0 = time.perf_counter()
    if on_phase is not None:
        on_phase("opening")
    bundle = open_model(path)
    if on_phase is not None:
        on_phase("compiling")
    try:
        policy = Policy(
            bundle.model_path, bundle.metadata, device=device, precision=precision, hint=hint,
            threads=threads, batch=batch,
        )
    except BaseException:
        bundle.close()
        raise
    bundle.close()  # compiled model holds its own copy of the weights
    return LoadedModel(bundle, policy, time.perf_counter() - t0)
