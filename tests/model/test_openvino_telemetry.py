"""car-runtime sends nothing anywhere: OpenVINO's usage telemetry is off in every command.

``import openvino`` alone sends a Google Analytics event and keeps a client id under
``~/intel`` unless a consent file or a CI variable says no, so these tests run with a fresh
``HOME`` and without the CI variables OpenVINO looks for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import car_runtime_cmd

MODEL = Path(__file__).resolve().parents[1] / "data/models/deep_ffc_discrete.tar.gz"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    return {**env, "HOME": str(home)}


def test_plain_import_openvino_writes_its_telemetry_files(tmp_path):
    """The control: what the tests below guard against does happen here."""
    r = subprocess.run([sys.executable, "-c", "import openvino"], env=_env(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "intel").is_dir()


def test_loading_and_running_a_model_leaves_home_untouched(tmp_path):
    r = subprocess.run([*car_runtime_cmd(), "bench", "--model", str(MODEL), "--frames-count", "5",
                        "--warmup", "2"], env=_env(tmp_path), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "verdict" in r.stdout
    assert sorted(os.listdir(tmp_path)) == []


def test_the_runtime_uses_openvinos_no_op_telemetry(tmp_path):
    probe = ("import sys; from car_runtime.model.policy import import_openvino, shared_core;"
             "ov = import_openvino(); shared_core();"
             "print(ov.tools.ovc.telemetry_utils.tm.__name__, 'openvino_telemetry' in sys.modules"
             " and sys.modules['openvino_telemetry'] is not None)")
    r = subprocess.run([sys.executable, "-c", probe], env=_env(tmp_path), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["openvino.tools.ovc.telemetry_stub", "False"]
    assert sorted(os.listdir(tmp_path)) == []
