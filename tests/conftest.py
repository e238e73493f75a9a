"""Shared pytest fixtures: paths to the bundled test data and models, plus generated models.

Everything here is session-scoped and read-only: copy a file into ``tmp_path`` before
changing it. Tests never read ``/work/shared``; all data lives in ``tests/data`` and ``models/``
(see the PROVENANCE.md / README.md files there).

Comparing model outputs? Compile with the ``ov_f32`` config (``INFERENCE_PRECISION_HINT=f32``):
on hosts with bf16 (AVX512_BF16/AMX) OpenVINO's default precision differs by up to ~2e-3.

Generated models: ``tiny_model(fmt="pb", **TinyNet kwargs)`` -> :class:`GeneratedModel`
(see ``tests/modelgen.py``), built once per session per argument set.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # `import modelgen` from any test, whatever the import mode
    sys.path.insert(0, str(TESTS_DIR))

import modelgen  # noqa: E402

REPO_DIR = TESTS_DIR.parent
DATA_DIR = TESTS_DIR / "data"

SLIM_MODEL_NAMES = (
    "shallow_stereo_discrete_slim",
    "shallow_ffc_continuous_slim",
    "shallow_legacy_observation_slim",
)


def _must_exist(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (restore it from git; see PROVENANCE.md beside it)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``tests/data``: models/, metadata/, footage/."""
    return _must_exist(DATA_DIR)


@pytest.fixture(scope="session")
def slim_models() -> dict[str, Path]:
    """Name -> folder with ``model.pb``, ``model_metadata.json``, ``reference_io.npz`` (x uint8
    NHWC, y = TensorFlow's output). Names: shallow_stereo_discrete_slim (STEREO_CAMERAS, 5
    actions), shallow_ffc_continuous_slim (FRONT_FACING_CAMERA, continuous [?,2]),
    shallow_legacy_observation_slim (``observation`` input, legacy metadata, 5 actions)."""
    return {name: _must_exist(DATA_DIR / "models" / name) for name in SLIM_MODEL_NAMES}


@pytest.fixture(scope="session")
def deep_archive() -> Path:
    """Console-layout ``.tar.gz`` (agent/model.pb + model_metadata.json), DEEP net with BN and
    tf.cond Switch/Merge, 10 discrete actions. Reference I/O: ``deep_reference_io``."""
    return _must_exist(DATA_DIR / "models" / "deep_ffc_discrete.tar.gz")


@pytest.fixture(scope="session")
def deep_reference_io() -> Path:
    """``.npz`` with ``x`` (uint8 [1,120,160,1]) and ``y`` (TF output [1,10]) for deep_archive."""
    return _must_exist(DATA_DIR / "models" / "deep_ffc_discrete.reference_io.npz")


@pytest.fixture(scope="session")
def realsize_shallow_dir() -> Path:
    """``models/shallow_ffc_discrete_realsize``: real-size (23.4 MB) SHALLOW FFC net, 5 actions,
    with model.pb, model_metadata.json, reference_io.npz."""
    return _must_exist(REPO_DIR / "models" / "shallow_ffc_discrete_realsize")


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The bundled README quick-start model: UNTRAINED console-layout archive (10 actions)."""
    return _must_exist(REPO_DIR / "models" / "demo-untrained-deep-ffc-discrete.tar.gz")


@pytest.fixture(scope="session")
def metadata_dir() -> Path:
    """``tests/data/metadata``: ``metadata-only/*.json`` (22 real model_metadata.json files) and
    ``ir-xml-no-weights/<name>/`` (2 real IR .xml topologies, no .bin, with their metadata)."""
    return _must_exist(DATA_DIR / "metadata")


@pytest.fixture(scope="session")
def footage_dir() -> Path:
    """``tests/data/footage``: sim-demo-stills-640x480/ (+ png-rgba/), car-foam-mat-track-640x480/
    (car-event-track-seq-160x120/ is package data: :func:`footage_seq_dir`)."""
    return _must_exist(DATA_DIR / "footage")


@pytest.fixture(scope="session")
def footage_seq_dir() -> Path:
    """100 consecutive real-car frames, 160x120 colour JPEG, ``000000.jpg`` .. ``000099.jpg``
    (package data: ``bench`` uses them on the car)."""
    from car_runtime import data

    return _must_exist(data.FOOTAGE)


@pytest.fixture(scope="session")
def ov_f32() -> dict[str, str]:
    """compile_model config for output comparisons: ``{"INFERENCE_PRECISION_HINT": "f32"}``."""
    return dict(modelgen.OV_F32)


@dataclass(frozen=True)
class GeneratedModel:
    """A :class:`modelgen.TinyNet` written to ``dir`` (model.pb or model.xml/.bin + metadata)."""

    dir: Path
    net: modelgen.TinyNet

    @property
    def model_file(self) -> Path:
        pb = self.dir / "model.pb"
        return pb if pb.exists() else self.dir / "model.xml"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., GeneratedModel]:
    """Factory: ``tiny_model(fmt="pb"|"ir_nchw"|"ir_nhwc", **TinyNet kwargs)`` -> GeneratedModel,
    cached per argument set for the session. Treat the folder as read-only."""
    cache: dict[tuple, GeneratedModel] = {}

    def make(fmt: str = "pb", **kwargs) -> GeneratedModel:
        key = (fmt, tuple(sorted(kwargs.items())))
        if key not in cache:
            net = modelgen.TinyNet(**kwargs)
            out = tmp_path_factory.mktemp(f"tiny_{fmt}")
            cache[key] = GeneratedModel(net.write_model_dir(out, fmt=fmt), net)
        return cache[key]

    return make
