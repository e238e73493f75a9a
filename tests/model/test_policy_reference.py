"""OpenVINO (no TensorFlow) reproduces TensorFlow's output for every bundled fixture, through
``load_model`` in every form a user has: archive, folder and bare ``.pb`` file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import modelgen
from car_runtime.model.archive import extract_archive
from car_runtime.model.policy import load_model

TOL = 1e-5


def check(model: Path, reference: Path) -> None:
    ref = np.load(reference)
    x, y = ref["x"], ref["y"]
    loaded = load_model(model)  # precision defaults to f32 (INFERENCE_PRECISION_HINT)
    assert loaded.policy.precision == "f32"
    assert loaded.policy.input.layout == "NHWC"
    assert loaded.policy.input.shape == (1, 120, 160, x.shape[-1])
    assert loaded.policy.output.shape == tuple(y.shape)
    out = loaded.policy.run(x)
    np.testing.assert_allclose(out, y.ravel(), rtol=0, atol=TOL)
    # the zero-copy path the car uses: write the buffer, infer, read the view
    np.copyto(loaded.policy.input_buffer, x.astype(np.float32))
    np.testing.assert_allclose(loaded.policy.infer(), y.ravel(), rtol=0, atol=TOL)


def forms(folder: Path, tmp: Path) -> dict[str, Path]:
    """folder, .pb file and a console archive built from ``folder``."""
    archive = modelgen.console_archive(
        tmp / f"{folder.name}.tar.gz", folder / "model.pb", folder / "model_metadata.json"
    )
    return {"folder": folder, "pb": folder / "model.pb", "archive": archive}


@pytest.mark.parametrize("name", ["shallow_stereo_discrete_slim", "shallow_ffc_continuous_slim",
                                  "shallow_legacy_observation_slim"])
@pytest.mark.parametrize("form", ["folder", "pb", "archive"])
def test_slim_fixture_matches_tensorflow(slim_models, tmp_path, name, form):
    folder = slim_models[name]
    check(forms(folder, tmp_path)[form], folder / "reference_io.npz")


@pytest.mark.parametrize("form", ["archive", "folder", "pb"])
def test_deep_fixture_matches_tensorflow(deep_archive, deep_reference_io, tmp_path, form):
    """DEEP net: batch norm + dropout under tf.cond (Switch/Merge) and a dynamic flatten."""
    if form == "archive":
        model = deep_archive
    else:
        extract_archive(deep_archive, tmp_path)
        folder = tmp_path / "installed"
        folder.mkdir()
        shutil.move(tmp_path / "agent" / "model.pb", folder / "model.pb")  # as the car does
        shutil.move(tmp_path / "model_metadata.json", folder / "model_metadata.json")
        model = folder if form == "folder" else folder / "model.pb"
    check(model, deep_reference_io)


@pytest.mark.parametrize("form", ["folder", "pb", "archive"])
def test_realsize_shallow_matches_tensorflow(realsize_shallow_dir, tmp_path, form):
    if form == "archive":
        # plain tar: the 23 MB of random weights barely compress, and gzip would only cost time
        model = modelgen.make_archive(tmp_path / "realsize.tar", [
            modelgen.Member.file("agent/model.pb", realsize_shallow_dir / "model.pb"),
            modelgen.Member.file("model_metadata.json", realsize_shallow_dir / "model_metadata.json"),
        ])
    else:
        model = realsize_shallow_dir if form == "folder" else realsize_shallow_dir / "model.pb"
    check(model, realsize_shallow_dir / "reference_io.npz")


def test_demo_model_loads(demo_model):
    loaded = load_model(demo_model)
    assert loaded.metadata.action_space.size == loaded.policy.output.shape[-1] == 10
    out = loaded.policy.run(np.full((1, 120, 160, 1), 128, np.uint8))
    assert np.isfinite(out).all() and out.sum() == pytest.approx(1.0, abs=1e-5)  # softmax
