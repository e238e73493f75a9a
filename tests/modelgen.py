"""Build DeepRacer-format models and model archives inside the test suite, without TensorFlow.

Three tools, all deterministic (same arguments -> same bytes):

* :class:`TinyNet` -- a small policy network with the real DeepRacer tensor names. It writes a
  frozen TF1 ``model.pb`` (the protobuf wire format is hand-encoded here; no ``protobuf`` or
  TensorFlow import), an OpenVINO IR in NCHW (old Model Optimizer style) or NHWC (``ovc``
  style), and a matching ``model_metadata.json``. :meth:`TinyNet.reference_output` computes
  the same network in numpy, so a test can assert ``OpenVINO == numpy`` (f32, 1e-5).
* :func:`make_archive` with :class:`Member` -- a ``.tar.gz`` / ``.tar`` with exactly the members
  given, including hostile ones (``../evil``, absolute paths, links, devices).
* :func:`hostile_archive` -- ready-made bad archives by case name (:data:`HOSTILE_CASES`):
  path traversal, links, devices, zero/two ``.pb``, missing metadata, truncated gzip, a
  decompression bomb (> 2 GiB of zeros in ~2.5 MB, built in well under a second) and more.

The network (``S`` = sensor, ``h`` = ``main`` for clipped_ppo / ``policy`` for sac)::

    main_level/agent/{h}/online/network_0/{S}/{S}   Placeholder f32 [-1,120,160,C]   (raw 0..255)
      -> RealDiv 255 -> Conv2D 8x8 stride 4 VALID NHWC (F filters) -> BiasAdd -> Relu
      -> Reshape [-1, 29*39*F]  [-> ConcatV2 with LIDAR/SECTOR_LIDAR placeholder [-1,N]]
      -> MatMul -> BiasAdd -> output
    PPO: main_level/agent/main/online/network_1/ppo_head_0/policy        Softmax [?,n] or Identity [?,2]
    SAC: main_level/agent/policy/online/network_0/sac_policy_head_0/policy   Identity [?,2]

Usage::

    net = TinyNet(sensor="STEREO_CAMERAS", seed=3)
    model_dir = net.write_model_dir(tmp_path / "m")            # model.pb + model_metadata.json
    x = net.sample_input()                                     # uint8 [1,120,160,2]
    expected = net.reference_output(x)                         # float32 [1,5]
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

#: compile_model config for every test that compares model outputs (hosts with bf16 differ ~1e-3).
OV_F32: dict[str, str] = {"INFERENCE_PRECISION_HINT": "f32"}

HEIGHT, WIDTH = 120, 160
KERNEL, STRIDE = 8, 4
CONV_H = (HEIGHT - KERNEL) // STRIDE + 1  # 29
CONV_W = (WIDTH - KERNEL) // STRIDE + 1  # 39

CAMERA_SENSORS = ("FRONT_FACING_CAMERA", "observation", "LEFT_CAMERA", "STEREO_CAMERAS")
LIDAR_SENSORS = {"LIDAR": 64, "SECTOR_LIDAR": 8}  # default input width per lidar kind

PPO_OUTPUT = "main_level/agent/main/online/network_1/ppo_head_0/policy"
SAC_OUTPUT = "main_level/agent/policy/online/network_0/sac_policy_head_0/policy"


def input_name(sensor: str, algorithm: str = "clipped_ppo") -> str:
    """TF node name of a sensor placeholder (no ``:0``), as in the stock model optimizer."""
    head = "policy" if algorithm == "sac" else "main"
    return f"main_level/agent/{head}/online/network_0/{sensor}/{sensor}"


# --------------------------------------------------------------------------------------------
# Protobuf wire format (only what a GraphDef needs)
# --------------------------------------------------------------------------------------------

_DT_FLOAT, _DT_INT32 = 1, 3


def _varint(n: int) -> bytes:
    if n < 0:  # int64 two's complement, as protobuf encodes negative int64 varints
        n += 1 << 64
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _shape_proto(dims: Sequence[int]) -> bytes:
    # TensorShapeProto { repeated Dim dim = 2; }  Dim { int64 size = 1; }
    return b"".join(_field_bytes(2, _field_varint(1, d)) for d in dims)


def _tensor_proto(array: np.ndarray) -> bytes:
    # TensorProto { DataType dtype = 1; TensorShapeProto tensor_shape = 2; bytes tensor_content = 4; }
    if array.dtype == np.float32:
        dtype = _DT_FLOAT
    elif array.dtype == np.int32:
        dtype = _DT_INT32
    else:
        raise TypeError(f"unsupported const dtype {array.dtype}")
    content = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    return (
        _field_varint(1, dtype)
        + _field_bytes(2, _shape_proto(array.shape))
        + _field_bytes(4, content)
    )


# AttrValue oneof: list=1, s=2, i=3, f=4, b=5, type=6, shape=7, tensor=8
def _attr_type(dtype: int) -> bytes:
    return _field_varint(6, dtype)


def _attr_shape(dims: Sequence[int]) -> bytes:
    return _field_bytes(7, _shape_proto(dims))


def _attr_s(text: str) -> bytes:
    return _field_bytes(2, text.encode())


def _attr_i(value: int) -> bytes:
    return _field_varint(3, value)


def _attr_b(value: bool) -> bytes:
    return _field_varint(5, int(value))


def _attr_ints(values: Sequence[int]) -> bytes:
    # ListValue { repeated int64 i = 3 [packed]; }
    return _field_bytes(1, _field_bytes(3, b"".join(_varint(v) for v in values)))


def _attr_tensor(array: np.ndarray) -> bytes:
    return _field_bytes(8, _tensor_proto(array))


def _node(name: str, op: str, inputs: Sequence[str] = (), **attrs: bytes) -> bytes:
    """NodeDef { name=1; op=2; repeated input=3; map<string, AttrValue> attr=5; } (keys sorted)."""
    out = _field_bytes(1, name.encode()) + _field_bytes(2, op.encode())
    out += b"".join(_field_bytes(3, i.encode()) for i in inputs)
    for key in sorted(attrs):
        out += _field_bytes(5, _field_bytes(1, key.encode()) + _field_bytes(2, attrs[key]))
    return out


def _graph_def(nodes: Sequence[bytes], producer: int = 134) -> bytes:
    """GraphDef { repeated NodeDef node = 1; VersionDef versions = 4 { int32 producer = 1; } }."""
    return b"".join(_field_bytes(1, n) for n in nodes) + _field_bytes(4, _field_varint(1, producer))


# --------------------------------------------------------------------------------------------
# The tiny DeepRacer-shaped network
# --------------------------------------------------------------------------------------------


@dataclass
class TinyNet:
    """A seeded DeepRacer-format policy net. See the module docstring for the graph.

    ``n_outputs`` defaults to 5 for discrete PPO and is forced to 2 for continuous / SAC.
    ``lidar`` adds a second input ``.../network_0/{lidar}/{lidar}`` of width ``lidar_size``
    (default 64 for LIDAR, 8 for SECTOR_LIDAR), concatenated after the flattened conv.
    """

    sensor: str = "FRONT_FACING_CAMERA"
    algorithm: Literal["clipped_ppo", "sac"] = "clipped_ppo"
    action_space_type: Literal["discrete", "continuous"] = "discrete"
    n_outputs: int = 5
    lidar: str | None = None
    lidar_size: int | None = None
    seed: int = 0
    filters: int = 4
    #: (y0, y1, x0, x1) in input pixels: the output depends on this region only (saliency tests)
    region: tuple[int, int, int, int] | None = None
    conv_w: np.ndarray = field(init=False, repr=False)  # [8,8,C,F] (TF HWIO)
    conv_b: np.ndarray = field(init=False, repr=False)  # [F]
    fc_w: np.ndarray = field(init=False, repr=False)  # [features, n_outputs]
    fc_b: np.ndarray = field(init=False, repr=False)  # [n_outputs]

    def __post_init__(self) -> None:
        if self.sensor not in CAMERA_SENSORS:
            raise ValueError(f"sensor must be one of {CAMERA_SENSORS}, got {self.sensor!r}")
        if self.algorithm not in ("clipped_ppo", "sac"):
            raise ValueError(f"algorithm must be clipped_ppo or sac, got {self.algorithm!r}")
        if self.algorithm == "sac":
            self.action_space_type = "continuous"
        if self.action_space_type not in ("discrete", "continuous"):
            raise ValueError(f"bad action_space_type {self.action_space_type!r}")
        if self.action_space_type == "continuous":
            self.n_outputs = 2
        if self.n_outputs < 1:
            raise ValueError("n_outputs must be >= 1")
        if self.lidar is not None:
            if self.lidar not in LIDAR_SENSORS:
                raise ValueError(f"lidar must be one of {tuple(LIDAR_SENSORS)}, got {self.lidar!r}")
            if self.lidar_size is None:
                self.lidar_size = LIDAR_SENSORS[self.lidar]
        rng = np.random.default_rng(self.seed)
        c, f = self.channels, self.filters
        self.conv_w = rng.normal(0.0, (2.0 / (KERNEL * KERNEL * c)) ** 0.5, (KERNEL, KERNEL, c, f)).astype(np.float32)
        self.conv_b = rng.normal(0.0, 0.1, f).astype(np.float32)
        n_in = self.n_features
        gain = 6.0 if self.action_space_type == "discrete" else 3.0
        self.fc_w = (rng.normal(0.0, 1.0, (n_in, self.n_outputs)) * gain / n_in**0.5).astype(np.float32)
        self.fc_b = rng.normal(0.0, 0.1, self.n_outputs).astype(np.float32)
        if self.region is not None:
            # keep only conv positions whose 8x8 window lies inside the region
            y0, y1, x0, x1 = self.region
            keep = np.zeros((CONV_H, CONV_W), bool)
            for i in range(CONV_H):
                for j in range(CONV_W):
                    keep[i, j] = (y0 <= STRIDE * i and STRIDE * i + KERNEL <= y1
                                  and x0 <= STRIDE * j and STRIDE * j + KERNEL <= x1)
            if not keep.any():
                raise ValueError(f"region {self.region} holds no 8x8 conv window")
            mask = np.repeat(keep.reshape(-1), self.filters)  # NHWC flatten order
            self.fc_w[: self.n_flat][~mask] = 0.0

    # ---- shapes and names ---------------------------------------------------------------
    @property
    def channels(self) -> int:
        return 2 if self.sensor == "STEREO_CAMERAS" else 1

    @property
    def n_flat(self) -> int:
        return CONV_H * CONV_W * self.filters

    @property
    def n_features(self) -> int:
        return self.n_flat + (self.lidar_size or 0)

    @property
    def input_name(self) -> str:
        """Camera placeholder TF name (OpenVINO's .pb frontend adds ``:0``)."""
        return input_name(self.sensor, self.algorithm)

    @property
    def lidar_input_name(self) -> str | None:
        return input_name(self.lidar, self.algorithm) if self.lidar else None

    @property
    def output_name(self) -> str:
        return SAC_OUTPUT if self.algorithm == "sac" else PPO_OUTPUT

    @property
    def input_shape_nhwc(self) -> tuple[int, int, int, int]:
        return (1, HEIGHT, WIDTH, self.channels)

    # ---- numpy reference ----------------------------------------------------------------
    def sample_input(self, seed: int = 0, batch: int = 1) -> np.ndarray:
        """Image-like uint8 input [batch,120,160,C]: gradients plus noise. Feed as float32."""
        rng = np.random.default_rng(10_000 + seed)
        yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
        base = 60 + 80 * (yy / HEIGHT) + 40 * np.sin(xx / 17.0 + seed)
        imgs = base[None, :, :, None] + rng.normal(0, 25, (batch, HEIGHT, WIDTH, self.channels))
        return np.clip(np.rint(imgs), 0, 255).astype(np.uint8)

    def sample_lidar(self, seed: int = 0, batch: int = 1) -> np.ndarray | None:
        """Plausible lidar input (metres in [0.15,0.5], or 0/1 sectors), or None without lidar."""
        if not self.lidar:
            return None
        rng = np.random.default_rng(20_000 + seed)
        if self.lidar == "SECTOR_LIDAR":
            return rng.integers(0, 2, (batch, self.lidar_size)).astype(np.float32)
        return rng.uniform(0.15, 0.5, (batch, self.lidar_size)).astype(np.float32)

    def reference_output(self, x: np.ndarray, lidar: np.ndarray | None = None) -> np.ndarray:
        """The network in numpy (float64 internally). ``x``: NHWC [B,120,160,C] or [120,160,C],
        raw 0..255 values of any numeric dtype. Returns float32 [B, n_outputs]."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim == 3:
            a = a[None]
        if a.shape[1:] != (HEIGHT, WIDTH, self.channels):
            raise ValueError(f"x must be [B,{HEIGHT},{WIDTH},{self.channels}] NHWC, got {a.shape}")
        a = a / 255.0
        win = np.lib.stride_tricks.sliding_window_view(a, (KERNEL, KERNEL), axis=(1, 2))
        win = win[:, ::STRIDE, ::STRIDE]  # [B,29,39,C,8,8]
        kernel = self.conv_w.astype(np.float64).transpose(2, 0, 1, 3)  # [C,8,8,F]
        conv = np.tensordot(win, kernel, axes=([3, 4, 5], [0, 1, 2])) + self.conv_b
        feat = np.maximum(conv, 0.0).reshape(a.shape[0], -1)  # NHWC flatten, as TF Reshape
        if self.lidar:
            if lidar is None:
                raise ValueError(f"this net has a {self.lidar} input: pass lidar=[B,{self.lidar_size}]")
            lid = np.asarray(lidar, dtype=np.float64).reshape(a.shape[0], self.lidar_size)
            feat = np.concatenate([feat, lid], axis=1)
        logits = feat @ self.fc_w.astype(np.float64) + self.fc_b
        if self.action_space_type == "discrete":
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            logits = e / e.sum(axis=1, keepdims=True)
        return logits.astype(np.float32)

    # ---- frozen TF1 GraphDef ------------------------------------------------------------
    def graph_def_bytes(self) -> bytes:
        """Serialized frozen GraphDef (what ``model.pb`` holds)."""
        head = "policy" if self.algorithm == "sac" else "main"
        net = "network_0" if self.algorithm == "sac" else "network_1"
        emb = f"main_level/agent/{head}/online/{net}/{self.sensor}"
        head_prefix = self.output_name.rsplit("/", 1)[0]
        dense = f"{head_prefix}/{'policy_fc' if self.action_space_type == 'discrete' else 'policy_mean'}"
        f32 = _attr_type(_DT_FLOAT)
        x = self.input_name
        nodes = [
            _node(x, "Placeholder", dtype=f32, shape=_attr_shape([-1, HEIGHT, WIDTH, self.channels])),
            _node(f"{emb}/truediv/y", "Const", dtype=f32, value=_attr_tensor(np.array(255.0, np.float32))),
            _node(f"{emb}/truediv", "RealDiv", [x, f"{emb}/truediv/y"], T=f32),
            _node(f"{emb}/Conv2d_0/kernel", "Const", dtype=f32, value=_attr_tensor(self.conv_w)),
            _node(
                f"{emb}/Conv2d_0/Conv2D", "Conv2D", [f"{emb}/truediv", f"{emb}/Conv2d_0/kernel"], T=f32,
                strides=_attr_ints([1, STRIDE, STRIDE, 1]), padding=_attr_s("VALID"),
                data_format=_attr_s("NHWC"), dilations=_attr_ints([1, 1, 1, 1]),
                use_cudnn_on_gpu=_attr_b(True), explicit_paddings=_field_bytes(1, b""),
            ),
            _node(f"{emb}/Conv2d_0/bias", "Const", dtype=f32, value=_attr_tensor(self.conv_b)),
            _node(f"{emb}/Conv2d_0/BiasAdd", "BiasAdd", [f"{emb}/Conv2d_0/Conv2D", f"{emb}/Conv2d_0/bias"],
                  T=f32, data_format=_attr_s("NHWC")),
            _node(f"{emb}/Conv2d_0/Relu", "Relu", [f"{emb}/Conv2d_0/BiasAdd"], T=f32),
            _node(f"{emb}/Flatten/shape", "Const", dtype=_attr_type(_DT_INT32),
                  value=_attr_tensor(np.array([-1, self.n_flat], np.int32))),
            _node(f"{emb}/Flatten/Reshape", "Reshape", [f"{emb}/Conv2d_0/Relu", f"{emb}/Flatten/shape"],
                  T=f32, Tshape=_attr_type(_DT_INT32)),
        ]
        features = f"{emb}/Flatten/Reshape"
        if self.lidar:
            lid = self.lidar_input_name
            concat = f"main_level/agent/{head}/online/{net}/concat"
            nodes += [
                _node(lid, "Placeholder", dtype=f32, shape=_attr_shape([-1, self.lidar_size])),
                _node(f"{concat}/axis", "Const", dtype=_attr_type(_DT_INT32),
                      value=_attr_tensor(np.array(1, np.int32))),
                _node(concat, "ConcatV2", [features, lid, f"{concat}/axis"], N=_attr_i(2), T=f32,
                      Tidx=_attr_type(_DT_INT32)),
            ]
            features = concat
        nodes += [
            _node(f"{dense}/kernel", "Const", dtype=f32, value=_attr_tensor(self.fc_w)),
            _node(f"{dense}/MatMul", "MatMul", [features, f"{dense}/kernel"], T=f32,
                  transpose_a=_attr_b(False), transpose_b=_attr_b(False)),
            _node(f"{dense}/bias", "Const", dtype=f32, value=_attr_tensor(self.fc_b)),
            _node(f"{dense}/BiasAdd", "BiasAdd", [f"{dense}/MatMul", f"{dense}/bias"], T=f32,
                  data_format=_attr_s("NHWC")),
            _node(self.output_name, "Softmax" if self.action_space_type == "discrete" else "Identity",
                  [f"{dense}/BiasAdd"], T=f32),
        ]
        return _graph_def(nodes)

    def write_pb(self, path: str | Path) -> Path:
        """Write the frozen graph to ``path`` (e.g. ``.../model.pb``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.graph_def_bytes())
        return path

    # ---- OpenVINO IR ----------------------------------------------------------------------
    def ov_model(self, layout: Literal["NCHW", "NHWC"] = "NCHW", name_suffix: str | None = None):
        """The same network as an ``openvino.Model`` with static batch 1.

        ``NCHW``: camera input [1,C,120,160], as the car's 2021 Model Optimizer wrote it (tensor
        names without ``:0``). ``NHWC``: [1,120,160,C], as ``ovc``/``convert_model`` keep it
        (names with ``:0``). ``name_suffix`` overrides that suffix choice.
        """
        import openvino as ov

        ops = _opset()
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
        suffix = ("" if layout == "NCHW" else ":0") if name_suffix is None else name_suffix
        c = self.channels
        shape = [1, c, HEIGHT, WIDTH] if layout == "NCHW" else [1, HEIGHT, WIDTH, c]
        cam = ops.parameter(shape, np.float32, name=self.input_name)
        cam.output(0).get_tensor().set_names({self.input_name + suffix})
        x = cam.output(0)
        if layout == "NHWC":
            x = ops.transpose(x, ops.constant(np.array([0, 3, 1, 2], np.int64)))
        x = ops.divide(x, ops.constant(np.array(255.0, np.float32)))
        weights = self.conv_w.transpose(3, 2, 0, 1).copy()  # HWIO -> OIHW
        x = ops.convolution(x, ops.constant(weights), [STRIDE, STRIDE], [0, 0], [0, 0], [1, 1])
        x = ops.add(x, ops.constant(self.conv_b.reshape(1, -1, 1, 1)))
        x = ops.relu(x)
        x = ops.transpose(x, ops.constant(np.array([0, 2, 3, 1], np.int64)))  # flatten in TF order
        x = ops.reshape(x, ops.constant(np.array([1, self.n_flat], np.int64)), special_zero=False)
        params = [cam]
        if self.lidar:
            lid = ops.parameter([1, self.lidar_size], np.float32, name=self.lidar_input_name)
            lid.output(0).get_tensor().set_names({self.lidar_input_name + suffix})
            x = ops.concat([x, lid.output(0)], 1)
            params.append(lid)
        x = ops.matmul(x, ops.constant(self.fc_w), False, False)
        x = ops.add(x, ops.constant(self.fc_b.reshape(1, -1)))
        if self.action_space_type == "discrete":
            x = ops.softmax(x, 1)
        x.get_output_tensor(0).set_names({self.output_name + suffix})
        result = ops.result(x)
        return ov.Model([result], params, "deepracer_tiny")

    def write_ir(self, xml_path: str | Path, layout: Literal["NCHW", "NHWC"] = "NCHW",
                 name_suffix: str | None = None) -> Path:
        """Save ``model.xml`` + ``model.bin`` (f32 weights, not compressed). Returns the .xml path."""
        import openvino as ov

        xml_path = Path(xml_path)
        xml_path.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(self.ov_model(layout, name_suffix), str(xml_path), compress_to_fp16=False)
        return xml_path

    # ---- metadata and model folders -----------------------------------------------------
    def metadata(self) -> dict:
        """A ``model_metadata.json`` matching this net, in console key order.

        Discrete: ``n_outputs`` actions, steering spread over -30..30 deg, speed 1.0 m/s.
        Continuous: steering -30..30, speed 0.5..1.0. ``observation`` nets get the 2019 legacy
        form (``action_space`` only).
        """
        if self.action_space_type == "discrete":
            n = self.n_outputs
            steer = [0.0] if n == 1 else [round(-30.0 + 60.0 * i / (n - 1), 4) for i in range(n)]
            actions: list | dict = [
                {"steering_angle": s, "speed": 1.0, "index": i} for i, s in enumerate(steer)
            ]
        else:
            actions = {"steering_angle": {"high": 30.0, "low": -30.0}, "speed": {"high": 1.0, "low": 0.5}}
        if self.sensor == "observation":
            return {"action_space": actions}
        sensors = [self.sensor] + ([self.lidar] if self.lidar else [])
        return {
            "action_space": actions,
            "sensor": sensors,
            "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
            "training_algorithm": self.algorithm,
            "action_space_type": self.action_space_type,
            "version": "5",
        }

    def metadata_bytes(self) -> bytes:
        return (json.dumps(self.metadata(), indent=4) + "\n").encode()

    def write_model_dir(self, out_dir: str | Path,
                        fmt: Literal["pb", "ir_nchw", "ir_nhwc"] = "pb",
                        metadata: bool | dict = True) -> Path:
        """Write a model folder: ``model.pb`` (fmt ``pb``) or ``model.xml`` + ``model.bin``
        (``ir_nchw`` / ``ir_nhwc``), plus ``model_metadata.json`` (``metadata=True``: from
        :meth:`metadata`; a dict: written as given; ``False``: none). Returns ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if fmt == "pb":
            self.write_pb(out / "model.pb")
        elif fmt in ("ir_nchw", "ir_nhwc"):
            self.write_ir(out / "model.xml", "NCHW" if fmt == "ir_nchw" else "NHWC")
        else:
            raise ValueError(f"fmt must be pb, ir_nchw or ir_nhwc, got {fmt!r}")
        if metadata is not False:
            meta = self.metadata() if metadata is True else metadata
            (out / "model_metadata.json").write_text(json.dumps(meta, indent=4) + "\n")
        return out

    def write_console_archive(self, path: str | Path, metadata: bool | dict = True) -> Path:
        """``agent/model.pb`` + root ``model_metadata.json`` in a deterministic ``.tar.gz``."""
        members = [Member.file("agent/model.pb", self.graph_def_bytes())]
        if metadata is not False:
            meta = self.metadata() if metadata is True else metadata
            members.append(Member.file("model_metadata.json", json.dumps(meta, indent=4) + "\n"))
        return make_archive(path, members)


def _opset():
    """OpenVINO's graph-building ops (``openvino.opset13``; 2024.x also has it under runtime)."""
    try:
        import openvino.opset13 as ops
    except ImportError:  # pragma: no cover - older openvino
        import openvino.runtime.opset13 as ops  # type: ignore[no-redef]
    return ops


def write_slow_model_dir(out_dir: str | Path, *, layers: int = 12, width: int = 64,
                         n_outputs: int = 5) -> Path:
    """A deliberately heavy front-camera discrete IR (``layers`` 3x3 convolutions of ``width``
    channels at full 120x160 resolution) with the real DeepRacer tensor names and metadata.

    Used to make inference really slow (tens to hundreds of ms) for deadline and stall tests:
    the watchdog is exercised by a real OpenVINO model, not by a mocked stage.
    """
    import openvino as ov

    ops = _opset()
    rng = np.random.default_rng(7)
    net = TinyNet(n_outputs=n_outputs)
    cam = ops.parameter([1, HEIGHT, WIDTH, 1], np.float32, name=net.input_name)
    cam.output(0).get_tensor().set_names({net.input_name + ":0"})
    x = ops.transpose(cam.output(0), ops.constant(np.array([0, 3, 1, 2], np.int64)))
    x = ops.divide(x, ops.constant(np.array(255.0, np.float32)))
    channels = 1
    for _ in range(layers):
        w = (rng.standard_normal((width, channels, 3, 3)) / (3.0 * np.sqrt(channels))).astype(np.float32)
        x = ops.relu(ops.convolution(x, ops.constant(w), [1, 1], [1, 1], [1, 1], [1, 1]))
        channels = width
    x = ops.reduce_mean(x, ops.constant(np.array([2, 3], np.int64)), False)
    fc = rng.standard_normal((width, n_outputs)).astype(np.float32)
    x = ops.softmax(ops.matmul(x, ops.constant(fc), False, False), 1)
    x.get_output_tensor(0).set_names({net.output_name + ":0"})
    model = ov.Model([ops.result(x)], [cam], "deepracer_slow")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)
    (out / "model_metadata.json").write_bytes(net.metadata_bytes())
    return out


# --------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------

MemberKind = Literal["file", "dir", "symlink", "hardlink", "chardev", "fifo"]

_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chardev": tarfile.CHRTYPE,
    "fifo": tarfile.FIFOTYPE,
}


@dataclass(frozen=True)
class Member:
    """One tar member, written verbatim (names are NOT sanitised: ``../x`` and ``/x`` stay)."""

    name: str
    kind: MemberKind = "file"
    data: bytes = b""
    target: str = ""  # link target (symlink / hardlink)
    mode: int = 0o644
    devmajor: int = 0
    devminor: int = 0

    @classmethod
    def file(cls, name: str, data: bytes | str | Path, mode: int = 0o644) -> "Member":
        """A regular file; ``data`` is bytes, text, or a Path whose bytes are copied."""
        if isinstance(data, Path):
            data = data.read_bytes()
        elif isinstance(data, str):
            data = data.encode()
        return cls(name, "file", data, mode=mode)

    @classmethod
    def dir(cls, name: str) -> "Member":
        return cls(name, "dir", mode=0o755)

    @classmethod
    def symlink(cls, name: str, target: str) -> "Member":
        return cls(name, "symlink", target=target, mode=0o777)

    @classmethod
    def hardlink(cls, name: str, target: str) -> "Member":
        return cls(name, "hardlink", target=target)

    @classmethod
    def chardev(cls, name: str, major: int = 1, minor: int = 3) -> "Member":
        """A character device (default 1,3 = /dev/null)."""
        return cls(name, "chardev", mode=0o666, devmajor=major, devminor=minor)

    @classmethod
    def fifo(cls, name: str) -> "Member":
        return cls(name, "fifo", mode=0o644)

    def tarinfo(self) -> tarfile.TarInfo:
        info = tarfile.TarInfo(self.name)
        info.type = _TAR_TYPES[self.kind]
        info.mode = self.mode
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.size = len(self.data) if self.kind == "file" else 0
        info.linkname = self.target
        info.devmajor, info.devminor = self.devmajor, self.devminor
        return info


def _compression_for(path: Path, compression: str | None) -> str:
    if compression is not None:
        if compression not in ("gz", ""):
            raise ValueError("compression must be 'gz' or '' (plain tar)")
        return compression
    name = path.name
    if name.endswith((".tar.gz", ".tgz")):
        return "gz"
    if name.endswith(".tar"):
        return ""
    raise ValueError(f"cannot tell compression from {name!r}: pass compression='gz' or ''")


def tar_bytes(members: Sequence[Member]) -> bytes:
    """An uncompressed GNU tar holding exactly ``members`` in order (deterministic)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for m in members:
            tar.addfile(m.tarinfo(), io.BytesIO(m.data) if m.kind == "file" else None)
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (mtime 0, no file name), like the fixture archives."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def make_archive(path: str | Path, members: Sequence[Member], compression: str | None = None) -> Path:
    """Write ``members`` to ``path`` as ``.tar.gz``/``.tgz`` (gzip) or ``.tar`` (plain);
    ``compression`` ('gz' or '') overrides the suffix. Deterministic bytes. Returns ``path``."""
    path = Path(path)
    raw = tar_bytes(members)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip_bytes(raw) if _compression_for(path, compression) == "gz" else raw)
    return path


def _as_bytes(data: bytes | str | Path | dict) -> bytes:
    if isinstance(data, dict):
        return (json.dumps(data, indent=4) + "\n").encode()
    if isinstance(data, Path):
        return data.read_bytes()
    if isinstance(data, str):
        return data.encode()
    return data


def console_archive(path: str | Path, model_pb: bytes | Path, metadata: bytes | str | Path | dict) -> Path:
    """Console / DRfC export layout: ``agent/model.pb`` + ``model_metadata.json`` at the root."""
    return make_archive(path, [Member.file("agent/model.pb", _as_bytes(model_pb)),
                               Member.file("model_metadata.json", _as_bytes(metadata))])


def root_pb_archive(path: str | Path, model_pb: bytes | Path, metadata: bytes | str | Path | dict) -> Path:
    """Older / third-party layout: ``model.pb`` + ``model_metadata.json`` both at the root."""
    return make_archive(path, [Member.file("model.pb", _as_bytes(model_pb)),
                               Member.file("model_metadata.json", _as_bytes(metadata))])


def ir_archive(path: str | Path, xml: Path, metadata: bytes | str | Path | dict, *,
               prefix: str = "", model_pb: bytes | Path | None = None) -> Path:
    """Pre-optimised layout (DREM PR #66 style): ``{prefix}model.xml`` + ``.bin`` (+ optional
    ``agent/model.pb``) with ``model_metadata.json`` at the root. ``xml``'s ``.bin`` must exist."""
    members = [Member.file(f"{prefix}model.xml", xml.read_bytes()),
               Member.file(f"{prefix}model.bin", xml.with_suffix(".bin").read_bytes())]
    if model_pb is not None:
        members.append(Member.file("agent/model.pb", _as_bytes(model_pb)))
    members.append(Member.file("model_metadata.json", _as_bytes(metadata)))
    return make_archive(path, members)


def truncated_copy(src: str | Path, dst: str | Path, keep_bytes: int | None = None,
                   keep_fraction: float = 0.5) -> Path:
    """Copy the first ``keep_bytes`` (default: ``keep_fraction`` of the file) of ``src`` to ``dst``
    -- a download cut short. Returns ``dst``."""
    data = Path(src).read_bytes()
    n = int(len(data) * keep_fraction) if keep_bytes is None else keep_bytes
    if not 0 <= n < len(data):
        raise ValueError(f"keep_bytes must be in [0, {len(data)}), got {n}")
    dst = Path(dst)
    dst.write_bytes(data[:n])
    return dst


# ---- decompression bomb --------------------------------------------------------------------

_CRC_POLY = 0xEDB88320


def _gf2_times(matrix: list[int], vec: int) -> int:
    total, i = 0, 0
    while vec:
        if vec & 1:
            total ^= matrix[i]
        vec >>= 1
        i += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def crc32_zero_extend(crc: int, n_zero_bytes: int) -> int:
    """``zlib.crc32(bytes(n), crc)`` in O(log n) (zlib's crc32_combine operator), so a
    multi-GiB bomb gets a correct gzip trailer without hashing gigabytes."""
    if n_zero_bytes <= 0:
        return crc
    reg = crc ^ 0xFFFFFFFF  # raw register; zero bytes act linearly on it
    odd = [_CRC_POLY] + [1 << n for n in range(31)]  # one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    n = n_zero_bytes
    while True:
        even = _gf2_square(odd)  # first pass: one zero byte
        if n & 1:
            reg = _gf2_times(even, reg)
        n >>= 1
        if not n:
            break
        odd = _gf2_square(even)
        if n & 1:
            reg = _gf2_times(odd, reg)
        n >>= 1
        if not n:
            break
    return reg ^ 0xFFFFFFFF


def gzip_bomb_archive(path: str | Path, declared_bytes: int = 5 * 2**29, *,
                      member_name: str = "agent/model.pb",
                      prefix_members: Sequence[Member] | None = None) -> Path:
    """A valid ``.tar.gz`` whose member ``member_name`` really inflates to ``declared_bytes`` of
    zeros (default 2.5 GiB). The gzip file is ~1/1000 of that (~2.6 MB) and takes well under
    a second to build: identical deflate blocks (full flush) are repeated instead of compressed
    again, and the CRC is extended mathematically. ``prefix_members`` (default: a small
    ``model_metadata.json``) come first. The stream and its CRC/ISIZE trailer are correct, so
    only a size limit stops an extractor."""
    if prefix_members is None:
        prefix_members = [Member.file("model_metadata.json", json.dumps({"action_space": []}) + "\n")]
    if declared_bytes >= 8 * 2**30:
        raise ValueError("declared_bytes must be < 8 GiB (ustar size field)")
    head = _tar_without_trailer(prefix_members)
    bomb = Member(member_name, "file", b"", mode=0o644).tarinfo()
    bomb.size = declared_bytes
    head += bomb.tobuf(tarfile.GNU_FORMAT)
    total_zeros = declared_bytes + (-declared_bytes % tarfile.BLOCKSIZE) + 2 * tarfile.BLOCKSIZE
    total_zeros += -(len(head) + total_zeros) % tarfile.RECORDSIZE  # pad to a whole tar record

    chunk = 1 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = [comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH)]
    n_chunks, tail = divmod(total_zeros, chunk)
    if n_chunks:
        block = comp.compress(bytes(chunk)) + comp.flush(zlib.Z_FULL_FLUSH)
        again = comp.compress(bytes(chunk)) + comp.flush(zlib.Z_FULL_FLUSH)
        assert block == again, "deflate blocks after a full flush should repeat"
        body.append(block * (n_chunks - 1) + again)
    body.append(comp.compress(bytes(tail)) + comp.flush(zlib.Z_FINISH))
    size = len(head) + total_zeros
    crc = crc32_zero_extend(zlib.crc32(head), total_zeros)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, mtime 0, max compression, OS unknown
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b"".join(body) + trailer)
    return path


def _tar_without_trailer(members: Sequence[Member]) -> bytes:
    """Headers + padded data of ``members`` with no end-of-archive blocks."""
    out = bytearray()
    for m in members:
        out += m.tarinfo().tobuf(tarfile.GNU_FORMAT)
        if m.kind == "file" and m.data:
            out += m.data + bytes(-len(m.data) % tarfile.BLOCKSIZE)
    return bytes(out)


def lying_size_archive(path: str | Path, declared_bytes: int = 8 * 2**30, *,
                       member_name: str = "agent/model.pb", actual: bytes = b"\0" * 4096) -> Path:
    """A ``.tar.gz`` whose member header declares ``declared_bytes`` (default 8 GiB, GNU
    base-256 size field) but whose stream ends after ``actual`` bytes: a loader must not trust
    the header size (pre-allocation, progress bars) and must fail cleanly on the short read."""
    info = Member(member_name).tarinfo()
    info.size = declared_bytes
    raw = Member.file("model_metadata.json", "{}\n").tarinfo().tobuf(tarfile.GNU_FORMAT)
    raw += b"{}\n" + bytes(tarfile.BLOCKSIZE - 3)
    raw += info.tobuf(tarfile.GNU_FORMAT) + actual
    path = Path(path)
    path.write_bytes(gzip_bytes(raw))
    return path


# ---- hostile archives by name -----------------------------------------------------------------

#: Every case :func:`hostile_archive` can build. Each is a model archive a loader must refuse
#: (or, for ``symlink``/``hardlink``/``chardev``/``fifo``/``traversal``/``absolute``, must
#: at least never follow / create outside its extraction directory).
HOSTILE_CASES = (
    "traversal",           # + member "../evil.txt"
    "absolute",            # + member "/tmp/car_runtime_evil.txt"
    "symlink",             # + agent/link -> /etc/passwd (symlink)
    "symlink_pb",          # agent/model.pb is itself a symlink to /etc/passwd
    "hardlink",            # + agent/hard hardlink -> /etc/passwd
    "chardev",             # + agent/null, a character device 1,3
    "fifo",                # + agent/fifo, a named pipe
    "zero_pb",             # model_metadata.json (+ README.txt) but no .pb
    "two_pb",              # agent/model.pb + model_15.pb
    "no_metadata",         # agent/model.pb only
    "metadata_in_subdir",  # agent/model.pb + agent/model_metadata.json (stock: not found)
    "truncated",           # a valid console archive cut at half its bytes
    "bomb",                # agent/model.pb inflates to 2.5 GiB of zeros (~2.6 MB gzip)
    "lying_size",          # header says 8 GiB, stream ends after 4 KiB
    "garbage",             # 4 KiB of random bytes named .tar.gz
    "empty",               # a 0-byte file
)


def hostile_archive(path: str | Path, case: str, model_pb: bytes | Path,
                    metadata: bytes | str | Path | dict) -> Path:
    """Write the bad archive ``case`` (one of :data:`HOSTILE_CASES`) to ``path`` (.tar.gz).

    ``model_pb``/``metadata`` are a *valid* model (e.g. ``TinyNet().graph_def_bytes()`` and
    ``TinyNet().metadata()``), so the only thing wrong is what the case names."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pb, meta = _as_bytes(model_pb), _as_bytes(metadata)
    good = [Member.file("agent/model.pb", pb), Member.file("model_metadata.json", meta)]
    extra = {
        "traversal": [Member.file("../evil.txt", "escaped\n")],
        "absolute": [Member.file("/tmp/car_runtime_evil.txt", "escaped\n")],
        "symlink": [Member.symlink("agent/link", "/etc/passwd")],
        "hardlink": [Member.hardlink("agent/hard", "/etc/passwd")],
        "chardev": [Member.chardev("agent/null", 1, 3)],
        "fifo": [Member.fifo("agent/fifo")],
    }
    if case in extra:
        return make_archive(path, good + extra[case])
    if case == "symlink_pb":
        return make_archive(path, [Member.symlink("agent/model.pb", "/etc/passwd"), good[1]])
    if case == "zero_pb":
        return make_archive(path, [good[1], Member.file("README.txt", "no model here\n")])
    if case == "two_pb":
        return make_archive(path, good + [Member.file("model_15.pb", pb)])
    if case == "no_metadata":
        return make_archive(path, good[:1])
    if case == "metadata_in_subdir":
        return make_archive(path, [good[0], Member.file("agent/model_metadata.json", meta)])
    if case == "truncated":
        full = gzip_bytes(tar_bytes(good))
        path.write_bytes(full[: len(full) // 2])
        return path
    if case == "bomb":
        return gzip_bomb_archive(path, prefix_members=[good[1]])
    if case == "lying_size":
        return lying_size_archive(path)
    if case == "garbage":
        path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        return path
    if case == "empty":
        path.write_bytes(b"")
        return path
    raise ValueError(f"unknown case {case!r}; choose from {HOSTILE_CASES}")
