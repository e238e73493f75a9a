"""Every input path of the loader, on models built in the test suite (tests/modelgen.py):
SAC heads, the legacy ``observation`` input, stereo, LEFT_CAMERA, OpenVINO IR in NCHW/NHWC, in
a folder and in an archive -- each checked against the numpy reference of the same network --
and the models the runtime must refuse."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import modelgen
from car_runtime.errors import MetadataError, ModelError
from car_runtime.model.policy import Policy, load_model
from car_runtime.model.metadata import parse_metadata
from car_runtime.pipeline import Pipeline
from car_runtime.timing import now_s
from car_runtime.vision.frame import Frame

TOL = 1e-5

CASES = {
    "sac": dict(algorithm="sac", seed=1),
    "observation": dict(sensor="observation", seed=2),
    "stereo": dict(sensor="STEREO_CAMERAS", seed=3),
    "left_camera": dict(sensor="LEFT_CAMERA", seed=4),
    "continuous": dict(action_space_type="continuous", seed=5),
    "discrete7": dict(n_outputs=7, seed=6),
}


def nhwc_to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    return x.transpose(0, 3, 1, 2) if layout == "NCHW" else x


@pytest.mark.parametrize("fmt", ["pb", "ir_nchw", "ir_nhwc"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_model_matches_numpy(tiny_model, case, fmt):
    gen = tiny_model(fmt=fmt, **CASES[case])
    net = gen.net
    loaded = load_model(gen.dir)
    policy = loaded.policy
    layout = "NCHW" if fmt == "ir_nchw" else "NHWC"
    assert policy.input.layout == layout
    assert policy.input.sensor == net.sensor
    assert policy.input.name.removesuffix(":0") == net.input_name  # sensor + head found by name
    assert policy.output.name.removesuffix(":0") == net.output_name
    assert (policy.input.height, policy.input.width, policy.channels) == (120, 160, net.channels)
    assert policy.output.shape == (1, net.n_outputs)
    for seed in range(2):
        x = net.sample_input(seed=seed)
        np.testing.assert_allclose(
            policy.run(nhwc_to_layout(x, layout)), net.reference_output(x).ravel(), rtol=0, atol=TOL
        )


def test_sac_names(tiny_model):
    gen = tiny_model(fmt="pb", **CASES["sac"])
    policy = load_model(gen.dir).policy
    assert policy.input.name.startswith("main_level/agent/policy/online/network_0/FRONT_FACING_CAMERA/")
    assert "sac_policy_head_0/policy" in policy.output.name
    assert policy.metadata.input_head == "policy"


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("prefix", ["", "agent/"])
def test_ir_in_archive(tmp_path, layout, prefix):
    net = modelgen.TinyNet(sensor="FRONT_FACING_CAMERA", seed=21)
    xml = net.write_ir(tmp_path / "src" / "model.xml", layout)
    arc = modelgen.ir_archive(tmp_path / "ir.tar.gz", xml, net.metadata(), prefix=prefix)
    loaded = load_model(arc)
    assert loaded.bundle.fmt == "ir" and loaded.policy.input.layout == layout
    x = net.sample_input(seed=5)
    np.testing.assert_allclose(
        loaded.policy.run(nhwc_to_layout(x, layout)), net.reference_output(x).ravel(), atol=TOL
    )


def test_ir_xml_file_with_metadata_beside_it(tiny_model):
    gen = tiny_model(fmt="ir_nchw", **CASES["stereo"])
    loaded = load_model(gen.dir / "model.xml")
    assert (loaded.bundle.kind, loaded.bundle.fmt) == ("file", "ir")
    assert loaded.policy.input.shape == (1, 2, 120, 160)


def track_like(seed: int) -> np.ndarray:
    """A 640x480 BGR image with structure (so left/right differ clearly)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((480, 640, 3), np.uint8)
    img[:] = rng.integers(40, 90, 3, dtype=np.uint8)
    cv2.line(img, (100 + 60 * seed, 479), (320, 200), (255, 255, 255), 12)
    cv2.line(img, (560 - 40 * seed, 479), (330, 200), (0, 220, 255), 8)
    return img


@pytest.mark.parametrize("fmt", ["pb", "ir_nchw"])
def test_stereo_pipeline_left_is_channel_0(tiny_model, fmt):
    """Through the car's own Pipeline: images (left, right) -> channels (0, 1), either layout."""
    gen = tiny_model(fmt=fmt, **CASES["stereo"])
    policy = load_model(gen.dir).policy
    pipe = Pipeline(policy, max_speed_pct=100)
    left, right = track_like(0), track_like(2)
    ok, left_jpg = cv2.imencode(".jpg", left)
    assert ok
    result = pipe.step(Frame(seq=1, t_capture_s=now_s(), images=(left_jpg.tobytes(), right)))

    def stock(img):
        return cv2.cvtColor(cv2.resize(img, (160, 120), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2GRAY)

    left_decoded = cv2.imdecode(left_jpg, cv2.IMREAD_COLOR)
    x = np.stack([stock(left_decoded), stock(right)], axis=-1)[None]
    expected = gen.net.reference_output(x).ravel()
    np.testing.assert_allclose(result.output, expected, atol=TOL)
    swapped = gen.net.reference_output(x[..., ::-1]).ravel()
    assert np.abs(swapped - expected).max() > 1e-3  # the order is observable
    assert result.decision.action_index == int(np.argmax(expected))
    np.testing.assert_array_equal(pipe.model_input(0), x[0, :, :, 0])
    np.testing.assert_array_equal(pipe.model_input(1), x[0, :, :, 1])


# ---- refused models ------------------------------------------------------------------------

@pytest.mark.parametrize("lidar", ["LIDAR", "SECTOR_LIDAR"])
def test_lidar_model_refused(tmp_path, lidar):
    net = modelgen.TinyNet(lidar=lidar, seed=8)
    folder = net.write_model_dir(tmp_path / "m")
    with pytest.raises(MetadataError, match=rf"needs {lidar} input, which car-runtime cannot feed"):
        load_model(folder)


def test_hidden_lidar_input_refused(tmp_path):
    """Metadata says camera only but the graph also wants LIDAR: never feed it zeros."""
    net = modelgen.TinyNet(lidar="LIDAR", seed=8)
    meta = net.metadata()
    meta["sensor"] = ["FRONT_FACING_CAMERA"]
    folder = net.write_model_dir(tmp_path / "m", metadata=meta)
    with pytest.raises(ModelError, match=r"has 2 inputs .*LIDAR/LIDAR.*feeds exactly one camera"):
        load_model(folder)


@pytest.mark.parametrize("n_actions", [3, 6])
def test_output_size_mismatch_refused(tmp_path, n_actions):
    net = modelgen.TinyNet(n_outputs=5, seed=9)
    meta = modelgen.TinyNet(n_outputs=n_actions).metadata()
    folder = net.write_model_dir(tmp_path / "m", metadata=meta)
    with pytest.raises(ModelError, match=rf"outputs 5 values but model_metadata.json describes {n_actions}"):
        load_model(folder)


def test_continuous_metadata_on_discrete_model_refused(tmp_path):
    net = modelgen.TinyNet(n_outputs=5, seed=9)
    meta = modelgen.TinyNet(action_space_type="continuous").metadata()
    with pytest.raises(ModelError, match=r"outputs 5 values .* describes 2 \(continuous\)"):
        load_model(net.write_model_dir(tmp_path / "m", metadata=meta))


@pytest.mark.parametrize("claimed", ["STEREO_CAMERAS", "LEFT_CAMERA", "observation"])
def test_sensor_missing_from_graph_refused(tmp_path, claimed):
    net = modelgen.TinyNet(sensor="FRONT_FACING_CAMERA", seed=10)
    meta = net.metadata()
    meta["sensor"] = [claimed]
    folder = net.write_model_dir(tmp_path / "m", metadata=meta)
    with pytest.raises(ModelError, match=rf"no input for sensor {claimed} .*belongs to this model"):
        load_model(folder)


def test_bad_model_file_refused(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.pb").write_bytes(b"\x0a\x03not a graph")
    (folder / "model_metadata.json").write_text(json.dumps(modelgen.TinyNet().metadata()))
    with pytest.raises(ModelError, match=r"OpenVINO cannot read model.pb \(Unable to read the model"):
        load_model(folder)


def test_policy_refuses_unknown_device(tiny_model):
    gen = tiny_model(fmt="pb", **CASES["observation"])
    meta = parse_metadata(gen.net.metadata())
    with pytest.raises(ModelError, match=r"cannot compile the model for NOPE .*try --device CPU"):
        Policy(gen.dir / "model.pb", meta, device="NOPE")


@pytest.mark.parametrize("precision", ["f16"])  # bf16 needs CPU support: not asserted
def test_other_precisions_compile_and_stay_close(tiny_model, precision):
    """--precision is honoured (compiles on CPU); outputs stay near f32 for this tiny net."""
    gen = tiny_model(fmt="pb", **CASES["continuous"])
    loaded = load_model(gen.dir, precision=precision)
    assert loaded.policy.precision == precision
    x = gen.net.sample_input()
    np.testing.assert_allclose(loaded.policy.run(x), gen.net.reference_output(x).ravel(), atol=0.05)


def test_bad_precision_is_a_config_error(tiny_model):
    from car_runtime.errors import ConfigError

    gen = tiny_model(fmt="pb", **CASES["continuous"])
    with pytest.raises(ConfigError, match="precision 'f64'"):
        load_model(gen.dir, precision="f64")
