"""The run's settings as recorded once per session (``/car_runtime/settings``): the model and
its fingerprint, calibration, max speed, preprocessing, precision, device, versions, CPU."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import threading
from pathlib import Path
from typing import Any

_hash_lock = threading.Lock()
_hash_cache: dict[tuple, str] = {}

#: Files :func:`model_sha256` hashes in a model folder (what the car loads from it).
_FOLDER_MODEL_FILES = ("model_metadata.json", "model.pb", "model.xml", "model.bin",
                       "agent/model.pb")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_sha256(path: str | Path) -> str:
    """The model's fingerprint: sha256 of the file (archive, ``.pb``, ``.xml``), or for a folder
    sha256 over ``name NUL sha256(content)`` lines of the model files in it. Cached by path,
    size and mtime; "" if the path cannot be read."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return ""
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    try:
        if p.is_dir():
            h = hashlib.sha256()
            for name in _FOLDER_MODEL_FILES:
                f = p / name
                if f.is_file():
                    h.update(f"{name}\0{_file_sha256(f)}\n".encode())
            digest = h.hexdigest()
        else:
            digest = _file_sha256(p)
    except OSError:
        return ""
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def versions() -> dict[str, str]:
    """Versions of what decides: car-runtime, OpenVINO, OpenCV, numpy, Python, rosbags."""
    from importlib.metadata import PackageNotFoundError, version

    import cv2
    import numpy as np

    from car_runtime import __version__

    out = {"car-runtime": __version__, "opencv": cv2.__version__, "numpy": np.__version__,
           "python": platform.python_version()}
    for dist, key in (("openvino", "openvino"), ("rosbags", "rosbags")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = ""
    return out


def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo (x86), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def metadata_json(metadata: Any) -> str:
    """The loaded ``model_metadata.json`` as JSON (its raw form when the metadata keeps it)."""
    raw = getattr(metadata, "raw", None)
    if isinstance(raw, dict):
        return json.dumps(raw, sort_keys=True)
    try:
        return json.dumps(dataclasses.asdict(metadata), sort_keys=True, default=str)
    except TypeError:
        return json.dumps(repr(metadata))


def config_json(cfg: Any) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)


def cpu_count() -> int:
    return os.cpu_count() or 1
