"""The wheel carries everything the car needs: build it from a copy of the package (no checkout
beside it), install it into a fresh venv, and run ``install-service`` and ``doctor`` from there.

How the fresh venv gets its dependencies: the wheel itself is installed with ``--no-deps``, and
a ``.pth`` line appends this test environment's site-packages (openvino, numpy, cv2...) to the
fresh venv's path. A ``.pth`` *path line* does not run that folder's own ``.pth`` files, so an
editable install of car_runtime there stays invisible: the test checks that ``car_runtime`` is
imported from the fresh venv. Resolving the dependencies from PyPI is measured separately
(README, "Install"), not in every test run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

import car_runtime

SOURCE = Path(car_runtime.__file__).resolve().parent
PROJECT = SOURCE.parent

pytestmark = pytest.mark.slow


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run away from the checkout (``python -c`` puts the working folder first on sys.path) and
    without PYTHONPATH, so only what is installed can be imported."""
    kw.setdefault("cwd", "/")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, **kw)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT / name, src / name)
    shutil.copytree(SOURCE, src / "car_runtime",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(root / "dist")])
    build_s = time.perf_counter() - t0
    wheel = next((root / "dist").glob("car_runtime-*.whl"))
    shutil.rmtree(src)  # nothing of the source is left to fall back on

    venv = root / "venv"
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)])
    install_s = time.perf_counter() - t0
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    package = site / "car_runtime"
    print(f"wheel {wheel.name}: {wheel.stat().st_size / 1e3:.0f} kB, installed "
          f"{_du(package) / 1e3:.0f} kB; build {build_s:.1f} s, venv + install (no deps) "
          f"{install_s:.1f} s")
    return {"wheel": wheel, "venv": venv, "exe": venv / "bin" / "car-runtime", "site": site,
            "package": package}


def test_wheel_holds_every_data_file(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    expected = set()
    for folder in (SOURCE / "data", SOURCE / "web" / "static"):
        if folder.is_dir():
            expected |= {p.relative_to(SOURCE.parent).as_posix() for p in folder.rglob("*")
                         if p.is_file() and "__pycache__" not in p.parts}
    assert expected <= names, sorted(expected - names)
    for must in ("car_runtime/data/systemd/car-runtime.service",
                 "car_runtime/data/systemd/99-car-runtime.rules",
                 "car_runtime/data/systemd/config.example.yaml",
                 "car_runtime/data/calibration/calibration.json",
                 "car_runtime/data/launch/car_runtime.launch.py",
                 "car_runtime/data/footage/car-event-track-seq-160x120/000099.jpg"):
        assert must in names
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)


def test_car_runtime_comes_from_the_fresh_venv(installed):
    out = _run([str(installed["venv"] / "bin" / "python"), "-c",
                "import car_runtime, car_runtime.data as d; print(car_runtime.__file__); "
                "print(d.SYSTEMD)"]).stdout.split()
    assert out[0].startswith(str(installed["package"]))
    assert out[1] == str(installed["package"] / "data" / "systemd")


def test_install_service_from_the_wheel(installed, tmp_path):
    exe = str(installed["exe"])
    dry = _run([exe, "install-service", "--dry-run"])
    assert "would write /etc/systemd/system/car-runtime.service" in dry.stdout
    assert f"would link /usr/local/bin/car-runtime -> {exe}" in dry.stdout
    stage = tmp_path / "stage"
    _run([exe, "install-service", "--prefix", str(stage)])
    unit = (stage / "etc/systemd/system/car-runtime.service").read_text()
    assert f"ExecStart={exe} run --config /etc/car-runtime/config.yaml" in unit
    shipped = installed["package"] / "data" / "systemd"
    assert (stage / "etc/udev/rules.d/99-car-runtime.rules").read_bytes() == (
        shipped / "99-car-runtime.rules").read_bytes()
    assert os.readlink(stage / "usr/local/bin/car-runtime") == exe


def test_doctor_and_bench_from_the_wheel(installed, demo_model):
    exe = str(installed["exe"])
    t0 = time.perf_counter()
    proc = subprocess.run([exe, "doctor", "--json", "--model", str(demo_model)],
                          capture_output=True, text=True, timeout=600, cwd="/")
    print(f"doctor --json from the wheel: {time.perf_counter() - t0:.2f} s")
    assert proc.returncode in (0, 1), proc.stderr  # 1: this machine may have a ❌ (no camera)
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["model"]["level"] == "ok"
    assert checks["speed"]["details"]["frames"] == 60  # the bench ran on the wheel's footage
    # `bench` with its default frames: the footage shipped in the wheel.
    proc = _run([exe, "bench", "--model", str(demo_model), "--frames-count", "5", "--warmup", "1"])
    assert "bundled real car footage (100 frames" in proc.stdout
