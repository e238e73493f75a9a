"""The cockpit's models: list the models folders, take uploads, delete.

Folders: ``models_dir`` (uploads go there; entries can be deleted) and, when present, the stock
car's ``/opt/aws/deepracer/artifacts`` (listed and loadable, read-only here). An entry is an
archive (``*.tar.gz``, ``*.tgz``, ``*.tar``) or a model folder; its id is ``<folder>/<name>``
and is only ever looked up in the listing, never joined onto a path.

Uploads are streamed to a private temp folder inside ``models_dir`` under their final name
(so errors name the user's file), size-capped, checked for compression bombs, validated by the
same :func:`car_runtime.model.archive.open_model` code as ``run`` (plus the sensor check), then
renamed into place; a refused upload leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import tarfile
import threading
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from car_runtime.errors import CarRuntimeError, ModelError
from car_runtime.model.archive import METADATA_NAME, open_model
from car_runtime.model.metadata import ModelMetadata, parse_metadata

log = logging.getLogger(__name__)

STOCK_ARTIFACTS_DIR = "/opt/aws/deepracer/artifacts"
MAX_UPLOAD_BYTES = 256 * 2**20
#: A model archive holds float weights that barely compress; refuse one that expands more.
MAX_EXPANSION_RATIO = 8
MIN_EXPANSION_LIMIT_BYTES = 64 * 2**20
MAX_UPLOAD_MEMBERS = 1000
MAX_NAME_CHARS = 120
UPLOAD_SUFFIXES = (".tar.gz", ".tgz")
_LISTED_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
_UPLOAD_PREFIX = ".upload-"


class WebError(CarRuntimeError):
    """A request the cockpit refuses, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelEntry:
    id: str  # "<folder>/<name>"
    folder: str  # "models" | "artifacts"
    name: str
    path: str
    kind: str  # "archive" | "folder"
    size_bytes: int
    mtime_s: float
    deletable: bool
    sensors: list[str] | None = None
    action_space_type: str | None = None
    actions: int | None = None
    action_space: Any = None  # discrete: [[steering_deg, speed_mps], ...]; continuous: bounds
    runnable: bool = False
    problem: str | None = None  # why it cannot run (one line), if so

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Upload:
    name: str
    tmp_dir: Path
    tmp_path: Path
    final_path: Path


def _describe(meta: ModelMetadata) -> dict[str, Any]:
    space = meta.action_space
    if meta.action_space_type == "discrete":
        summary: Any = [[a.steering_deg, a.speed_mps] for a in space.actions]  # type: ignore[union-attr]
    else:
        summary = {"steering_deg": [space.steering_low_deg, space.steering_high_deg],  # type: ignore[union-attr]
                   "speed_mps": [space.speed_low_mps, space.speed_high_mps]}  # type: ignore[union-attr]
    return {"sensors": list(meta.sensors), "action_space_type": meta.action_space_type,
            "actions": space.size, "action_space": summary}


def read_archive_metadata(path: Path) -> ModelMetadata:
    """``model_metadata.json`` at the root of a model archive, without extracting the rest."""
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                parts = [p for p in PurePosixPath(member.name).parts if p not in ("", ".")]
                if parts == [METADATA_NAME] and member.isfile():
                    if member.size > 1 << 20:
                        raise ModelError(f"{path.name}: {METADATA_NAME} is larger than 1 MiB")
                    src = tar.extractfile(member)
                    data = src.read() if src is not None else b""
                    try:
                        return parse_metadata(json.loads(data.decode("utf-8")))
                    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                        raise ModelError(f"{path.name}: {METADATA_NAME} is not valid JSON ({exc})") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise ModelError(f"{path.name} is not a readable tar.gz ({type(exc).__name__}: {detail})") from None
    raise ModelError(f"{path.name} has no {METADATA_NAME} at its root")


def check_upload_name(filename: str | None) -> str:
    """The name an uploaded file is stored under, or WebError(400) saying how to rename it."""
    if not filename:
        raise WebError(400, "the upload has no file name; send the model as form field 'file'")
    if any(ord(c) < 32 or ord(c) == 127 for c in filename):
        raise WebError(400, "the file name has control characters; rename the file "
                            "(letters, digits, . _ - + only) and upload it again")
    if "/" in filename or "\\" in filename or ".." in filename:
        raise WebError(400, f"the file name {filename!r} holds a path (/, \\ or ..); rename the "
                            "file (letters, digits, . _ - + only) and upload it again")
    name = filename.strip().replace(" ", "_")
    if not name.lower().endswith(UPLOAD_SUFFIXES):
        raise WebError(400, f"{filename!r} is not a model archive: upload the model.tar.gz "
                            "exported from the console or your training")
    if not _NAME_RE.fullmatch(name) or len(name) > MAX_NAME_CHARS:
        raise WebError(400, f"the file name {filename!r} is not allowed: use at most "
                            f"{MAX_NAME_CHARS} letters, digits, . _ - + (not starting with .)")
    return name


def check_expansion(path: Path, display_name: str) -> None:
    """Refuse archives that expand far beyond their size (compression bombs) or hold too many
    members, reading only as far as the limit. Unreadable archives pass here: open_model then
    names the problem the same way ``run`` does."""
    compressed = path.stat().st_size
    limit = max(MIN_EXPANSION_LIMIT_BYTES, MAX_EXPANSION_RATIO * compressed)
    total = 0
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_UPLOAD_MEMBERS:
                    raise ModelError(f"{display_name} has more than {MAX_UPLOAD_MEMBERS} members: "
                                     "not a DeepRacer model archive")
                total += 512 + max(member.size, 0)
                if total > limit:
                    raise ModelError(
                        f"{display_name} expands to more than {limit // 2**20} MiB from "
                        f"{compressed / 2**20:.1f} MiB (a compression bomb?): not a DeepRacer "
                        "model archive")
    except (tarfile.TarError, EOFError, zlib.error, OSError):
        return


class ModelStore:
    """Lists, accepts and deletes models; thread-safe (blocking: call it off the event loop)."""

    def __init__(self, models_dir: str | Path, *, extra_dirs: dict[str, str | Path] | None = None,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.models_dir = Path(models_dir)
        if extra_dirs is None:
            extra_dirs = {"artifacts": STOCK_ARTIFACTS_DIR}
        self.folders: dict[str, Path] = {"models": self.models_dir,
                                         **{k: Path(v) for k, v in extra_dirs.items()}}
        self.max_upload_bytes = max_upload_bytes
        self._cache: dict[tuple, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.uploading = False

    # -- listing -----------------------------------------------------------------------------
    def list(self) -> list[ModelEntry]:
        entries: list[ModelEntry] = []
        for folder, root in self.folders.items():
            try:
                children = sorted(root.iterdir(), key=lambda p: p.name.lower())
            except OSError:
                continue
            for p in children:
                if p.name.startswith("."):
                    continue
                entry = self._entry(folder, p)
                if entry is not None:
                    entries.append(entry)
        return entries

    def _entry(self, folder: str, p: Path) -> ModelEntry | None:
        try:
            st = p.stat()
        except OSError:
            return None
        if p.is_file() and p.name.lower().endswith(_LISTED_SUFFIXES):
            kind, size = "archive", st.st_size
        elif p.is_dir() and not p.is_symlink():
            kind = "folder"
            size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        else:
            return None
        key = (str(p), st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            facts = self._cache.get(key)
        if facts is None:
            facts = self._inspect(p, kind)
            with self._lock:
                if len(self._cache) > 256:
                    self._cache.clear()
                self._cache[key] = facts
        return ModelEntry(f"{folder}/{p.name}", folder, p.name, str(p), kind, size, st.st_mtime,
                          folder == "models", **facts)

    @staticmethod
    def _inspect(p: Path, kind: str) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        try:
            if kind == "archive":
                meta = read_archive_metadata(p)
            else:
                with open_model(p) as bundle:
                    meta = bundle.metadata
            facts = _describe(meta)
            meta.check_runnable()
            return {**facts, "runnable": True}
        except CarRuntimeError as exc:
            return {**facts, "runnable": False, "problem": str(exc)}

    def find(self, model_id: Any) -> ModelEntry:
        if not isinstance(model_id, str) or not model_id:
            raise WebError(400, 'give the model as {"id": "models/NAME"} (ids from GET /api/models)')
        for entry in self.list():
            if entry.id == model_id:
                return entry
        raise WebError(404, f"no model {model_id!r}; GET /api/models lists them")

    # -- uploads -----------------------------------------------------------------------------
    def begin_upload(self, name: str) -> Upload:
        """Reserve ``name`` and a private temp folder; WebError if it exists or one is running."""
        with self._lock:
            if self.uploading:
                raise WebError(409, "another upload is in progress; try again when it is done")
            final = self.models_dir / name
            if final.exists() or final.is_symlink():
                raise WebError(409, f"a model named {name} already exists; delete it first or "
                                    "rename the file")
            try:
                self.models_dir.mkdir(parents=True, exist_ok=True)
                tmp_dir = self.models_dir / f"{_UPLOAD_PREFIX}{secrets.token_hex(8)}"
                tmp_dir.mkdir(mode=0o700)
            except OSError as exc:
                raise WebError(500, f"cannot write to the models folder {self.models_dir}: "
                                    f"{exc.strerror}; make it writable by the car-runtime user") from None
            self.uploading = True
        return Upload(name, tmp_dir, tmp_dir / name, final)

    def finish_upload(self, upload: Upload) -> ModelEntry:
        """Validate the received file and move it into place (WebError 400 with the reason)."""
        try:
            check_expansion(upload.tmp_path, upload.name)
            with open_model(upload.tmp_path) as bundle:
                bundle.metadata.check_runnable()
        except CarRuntimeError as exc:
            raise WebError(400, str(exc)) from None
        with self._lock:
            if upload.final_path.exists():
                raise WebError(409, f"a model named {upload.name} already exists; delete it first")
            os.rename(upload.tmp_path, upload.final_path)
        _fsync_dir(self.models_dir)
        log.info("model uploaded: %s", upload.final_path)
        entry = self._entry("models", upload.final_path)
        assert entry is not None
        return entry

    def end_upload(self, upload: Upload) -> None:
        """Remove the temp folder (and a refused file); always call it."""
        shutil.rmtree(upload.tmp_dir, ignore_errors=True)
        with self._lock:
            self.uploading = False

    def clean_stale_uploads(self) -> None:
        """Remove temp folders of uploads cut short by a crash or power loss."""
        try:
            for p in self.models_dir.glob(f"{_UPLOAD_PREFIX}*"):
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass

    # -- delete ------------------------------------------------------------------------------
    def delete(self, entry: ModelEntry) -> None:
        if not entry.deletable:
            raise WebError(403, f"{entry.id} is in the stock folder, which the cockpit does not "
                                "change; delete it there")
        p = Path(entry.path)
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError as exc:
            raise WebError(500, f"cannot delete {entry.name}: {exc.strerror}; check the "
                                "permissions of the models folder") from None
        log.info("model deleted: %s", p)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
