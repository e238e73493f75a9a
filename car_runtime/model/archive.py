"""Open a model from every form a DeepRacer owner has, safely.

Accepted: a console / DeepRacer-for-Cloud ``model.tar.gz`` (``agent/model.pb`` or ``model.pb``
plus ``model_metadata.json`` at the root); a folder with ``model.pb`` + ``model_metadata.json``
(e.g. ``/opt/aws/deepracer/artifacts/<name>/``); an OpenVINO IR (``model.xml`` + ``.bin``) in a
folder or an archive, with its metadata; or a ``.pb``/``.xml`` file with the metadata beside it.

Stock rules kept: exactly one ``.pb`` in an archive, metadata at the archive root. Extraction
writes only regular files, only inside a private temp folder that :class:`ModelBundle` removes;
links, devices, absolute paths, ``..`` and oversized members are refused.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from car_runtime.errors import ModelError
from car_runtime.model.metadata import ModelMetadata, load_metadata

METADATA_NAME = "model_metadata.json"
#: A DeepRacer model.pb is 1-100 MB (the real-size SHALLOW net is 23 MB); anything that expands
#: beyond these is refused before it fills the disk (a 4.8 MB gzip of zeros expands to 1 GB).
MAX_MEMBER_BYTES = 256 * 1024 * 1024
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_MEMBERS = 10_000
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass
class ModelBundle:
    """A model ready to load: ``model_path`` is a ``.pb`` or ``.xml`` on disk.

    Use as a context manager (or call :meth:`close`) to remove the temp folder of an archive.
    """

    source: Path
    model_path: Path
    metadata_path: Path
    metadata: ModelMetadata
    kind: str  # "archive" | "folder" | "file"
    fmt: str  # "pb" | "ir"
    name: str
    _tmpdir: Path | None = None
    #: The model file as the owner sees it: the archive member, the path inside the folder,
    #: or the file's name.
    member: str = ""

    def close(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> "ModelBundle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def model_name(path: Path) -> str:
    """Stock naming: the file name up to its first ``.``, spaces replaced by ``_``."""
    return path.name.split(".", 1)[0].replace(" ", "_") or "model"


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _safe_member_path(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ModelError(f"archive member {name!r} has an absolute path; refusing to extract it")
    parts = [part for part in p.parts if part not in ("", ".")]
    if any(part == ".." for part in parts) or "\\" in name:
        raise ModelError(f"archive member {name!r} escapes the archive folder; refusing it")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _too_large(archive: Path, what: str) -> ModelError:
    return ModelError(
        f"{archive.name} {what} more than {MAX_TOTAL_BYTES // (1024 * 1024)} MB when unpacked "
        "(a DeepRacer model is well under that): not a model archive, or a damaged one; "
        "refusing it"
    )


def _read_to_end(tar: tarfile.TarFile, archive: Path, unpacked: int) -> None:
    """Read the compressed stream past the tar's end marker to its very end: gzip (bz2, xz)
    check the CRC and length there -- a flipped byte in a member's data is caught only then.
    The bytes read count against the size limit (a bomb can hide after the end marker)."""
    f = tar.fileobj
    while chunk := f.read(1 << 20):
        unpacked += len(chunk)
        if unpacked > MAX_TOTAL_BYTES:
            raise _too_large(archive, "expands to")


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract regular files of ``archive`` into ``dest`` (which must exist), refusing anything
    unsafe, then read the compressed stream to its end (CRC and length checked) before any file
    is used. Raise :class:`ModelError` naming the offending member, or the damage."""
    total = 0
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise ModelError(f"{archive.name} has more than {MAX_MEMBERS} members")
                rel = _safe_member_path(member.name)
                if member.issym() or member.islnk():
                    raise ModelError(
                        f"archive member {member.name!r} is a link; model archives hold only "
                        "regular files: re-export the model"
                    )
                if member.isdir():
                    continue
                if not member.isfile():
                    raise ModelError(
                        f"archive member {member.name!r} is a device/fifo/special file; refusing it"
                    )
                if member.size > MAX_MEMBER_BYTES or total + member.size > MAX_TOTAL_BYTES:
                    raise ModelError(
                        f"archive member {member.name!r} is too large ({member.size} bytes; "
                        f"limits {MAX_MEMBER_BYTES} per file, {MAX_TOTAL_BYTES} in all): "
                        "not a DeepRacer model archive"
                    )
                target = dest.joinpath(*rel.parts)
                if not str(target.resolve()).startswith(str(dest.resolve()) + os.sep):
                    raise ModelError(f"archive member {member.name!r} escapes the archive folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:  # pragma: no cover - isfile() members always have data
                    raise ModelError(f"cannot read archive member {member.name!r}")
                written = 0
                with src, open(target, "xb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > member.size:
                            raise ModelError(f"archive member {member.name!r} is larger than declared")
                        out.write(chunk)
                total += written
            _read_to_end(tar, archive, total)
    except ModelError:
        raise
    except FileExistsError as exc:
        raise ModelError(f"{archive.name} holds the same file twice ({exc.filename}); re-export it") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        # tarfile's "r:*" errors span several lines; the CLI prints one
        detail = (str(exc).strip().splitlines() or [""])[0].rstrip(":")
        raise ModelError(
            f"{archive.name} is not a readable tar.gz ({type(exc).__name__}: {detail}); "
            "download the model again"
        ) from None


def _find_model_file(root: Path, where: str) -> tuple[Path, str]:
    pbs = sorted(p for p in root.rglob("*.pb") if p.is_file())
    if len(pbs) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in pbs)
        raise ModelError(
            f"{where} holds more than one .pb ({names}); the car needs exactly one model.pb"
        )
    if pbs:
        return pbs[0], "pb"
    xmls = sorted(p for p in root.rglob("*.xml") if p.is_file() and p.with_suffix(".bin").is_file())
    if len(xmls) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in xmls)
        raise ModelError(f"{where} holds more than one OpenVINO IR ({names}); keep exactly one")
    if xmls:
        return xmls[0], "ir"
    raise ModelError(
        f"no model found in {where}: expected agent/model.pb (console export) or "
        "model.xml + model.bin (OpenVINO IR)"
    )


def _metadata_in(root: Path, model_path: Path, where: str) -> Path:
    for candidate in (root / METADATA_NAME, model_path.parent / METADATA_NAME):
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"{where} has no {METADATA_NAME} at its root; the car reads the action space from it "
        "(re-export the model, or copy model_metadata.json next to the model)"
    )


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # local file header, empty archive
_VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mjpeg", ".mjpg", ".h264")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def refuse_zip(path: Path) -> None:
    """A ``.zip``, or a zip renamed ``.tar.gz``, gets its own message (tarfile's would be
    "not a gzip file"): say what it is and how to use it."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return
    if head in _ZIP_MAGIC:
        raise ModelError(
            f"{path.name} is a zip, not a tar.gz; unzip it (`unzip {path.name} -d "
            f"{model_name(path)}`) and pass the folder, or download the model again as a "
            "model.tar.gz"
        )


def looks_like_frames(path: Path) -> str | None:
    """What ``path`` is if it is camera input rather than a model (a video, an image or a
    folder of them, a rosbag2), else None: the hint for swapped --model and input arguments."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in _VIDEO_SUFFIXES:
            return "a video"
        if suffix in _IMAGE_SUFFIXES:
            return "an image"
        return None
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return "a rosbag2 recording"
        if any(p.suffix.lower() in (".pb", ".xml") for p in path.rglob("*")):
            return None
        if any(p.suffix.lower() in _IMAGE_SUFFIXES for p in path.iterdir()):
            return "a folder of images"
    return None


def open_model(path: str | Path) -> ModelBundle:
    """Resolve ``path`` (archive, folder, ``.pb`` or ``.xml``) to a :class:`ModelBundle`."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(
            f"model {path} not found; give the path of a model.tar.gz, a model folder, "
            "a model.pb or a model.xml"
        )
    frames = looks_like_frames(path)
    if frames:
        raise ModelError(
            f"{path} is {frames}, not a model; were the model and the input swapped? "
            "The model goes after --model (a model.tar.gz, model folder or model.xml), the "
            "frames after --camera (run) or as INPUT (replay)"
        )
    if path.is_file():
        refuse_zip(path)

    if _is_archive(path):
        tmp = Path(tempfile.mkdtemp(prefix="car-runtime-model-"))
        try:
            extract_archive(path, tmp)
            model_path, fmt = _find_model_file(tmp, path.name)
            meta_path = tmp / METADATA_NAME
            if not meta_path.is_file():
                raise ModelError(
                    f"{path.name} has no {METADATA_NAME} at its root (the car reads it only "
                    "there); re-export the model"
                )
            metadata = load_metadata(meta_path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return ModelBundle(path, model_path, meta_path, metadata, "archive", fmt, model_name(path),
                           tmp, member=model_path.relative_to(tmp).as_posix())

    if path.is_dir():
        model_path, fmt = _find_model_file(path, str(path))
        meta_path = _metadata_in(path, model_path, str(path))
        return ModelBundle(
            path, model_path, meta_path, load_metadata(meta_path), "folder", fmt, path.name,
            member=model_path.relative_to(path).as_posix(),
        )

    suffix = path.suffix.lower()
    if suffix in (".pb", ".xml"):
        if suffix == ".xml" and not path.with_suffix(".bin").is_file():
            raise ModelError(f"{path} has no {path.with_suffix('.bin').name} beside it")
        meta_path = _metadata_in(path.parent, path, str(path.parent))
        fmt = "pb" if suffix == ".pb" else "ir"
        return ModelBundle(
            path, path, meta_path, load_metadata(meta_path), "file", fmt, model_name(path),
            member=path.name,
        )
    raise ModelError(
        f"{path} is not a model: pass a model.tar.gz, a folder with model.pb and "
        "model_metadata.json, or an OpenVINO model.xml"
    )
