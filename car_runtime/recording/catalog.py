"""The recorded sessions in a folder: ``list_sessions(root) -> list[SessionInfo]``.

Used by ``car-runtime runs`` and the web cockpit's download page. Cheap: a complete session is
read from its ``metadata.yaml``; a torn one (the process died: no ``metadata.yaml``, MCAP
without footer) from a scan of its record headers (:mod:`.mcapscan`), never its images.

:func:`readable_bag` opens any session folder for reading: a complete bag as it is, a torn
MCAP bag through a temporary copy of its readable part, with :class:`Damage` saying how much
was lost.
"""

from __future__ import annotations

import re
import sqlite3
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from car_runtime.errors import SourceError
from car_runtime.recording import mcapscan, messages

_STAMP = re.compile(r"-(\d{8})-(\d{6})(?:-\d+)?$")


@dataclass(frozen=True)
class SessionInfo:
    """One recorded session (a rosbag2 folder).

    ``start_ns``: wall-clock epoch ns of the first message (None if nothing is readable);
    ``frames``: camera frames readable (``/inference_pkg/rl_results``); ``dropped``: frames the
    recorder dropped (None if unknown); ``complete``: closed properly; a torn session lost
    ``torn_bytes`` at its end (kill -9, power cut) but the rest is readable.
    """

    name: str
    path: Path
    model: str
    start_ns: int | None
    duration_s: float
    frames: int
    dropped: int | None
    size_bytes: int
    complete: bool
    storage: str  # mcap | sqlite3
    torn_bytes: int = 0

    @property
    def status(self) -> str:
        return "complete" if self.complete else "torn"


def _model_from_name(name: str) -> str:
    return _STAMP.sub("", name) or name


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _storage_files(folder: Path) -> tuple[str, list[Path]]:
    mcaps = sorted(folder.glob("*.mcap"))
    if mcaps:
        return "mcap", mcaps
    return "sqlite3", sorted(folder.glob("*.db3"))


def session_info(folder: str | Path) -> SessionInfo | None:
    """The :class:`SessionInfo` of one bag folder, or None if it is not a rosbag2 folder."""
    folder = Path(folder)
    storage, files = _storage_files(folder)
    meta = folder / "metadata.yaml"
    if not files and not meta.is_file():
        return None
    if meta.is_file():
        info = _from_metadata(folder, meta, storage)
        if info is not None:
            return info
    if storage == "mcap" and files:
        return _from_scan(folder, files[0])
    return _from_sqlite(folder, files[0]) if files else None


def _from_metadata(folder: Path, meta: Path, storage: str) -> SessionInfo | None:
    import yaml

    try:
        info = yaml.safe_load(meta.read_text(encoding="utf-8"))["rosbag2_bagfile_information"]
        counts = {t["topic_metadata"]["name"]: int(t["message_count"])
                  for t in info.get("topics_with_message_count") or []}
        custom = info.get("custom_data") or {}
        start = int(info["starting_time"]["nanoseconds_since_epoch"])
        duration_s = int(info["duration"]["nanoseconds"]) / 1e9
        storage = str(info.get("storage_identifier") or storage)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None  # unreadable metadata: judge by the storage file instead
    dropped = custom.get("car_runtime.dropped")
    frames = counts.get(messages.RL_RESULTS)
    if frames is None:  # not one of ours: count the first image-ish topic
        frames = max(counts.values(), default=0)
    return SessionInfo(
        name=folder.name, path=folder,
        model=str(custom.get("car_runtime.model") or _model_from_name(folder.name)),
        start_ns=start if sum(counts.values()) else None, duration_s=duration_s,
        frames=frames, dropped=int(dropped) if dropped is not None else None,
        size_bytes=_folder_size(folder), complete=True, storage=storage,
    )


def _from_scan(folder: Path, mcap: Path) -> SessionInfo:
    scan = mcapscan.scan(mcap)
    start, end = scan.start_ns, scan.end_ns
    model, dropped = _model_and_dropped(scan)
    return SessionInfo(
        name=folder.name, path=folder, model=model or _model_from_name(folder.name),
        start_ns=start, duration_s=(end - start) / 1e9 if start is not None and end else 0.0,
        frames=scan.count(messages.RL_RESULTS), dropped=dropped,
        size_bytes=_folder_size(folder), complete=False, storage="mcap",
        torn_bytes=scan.torn_bytes if not scan.error else scan.size,
    )


def _model_and_dropped(scan: mcapscan.McapScan) -> tuple[str | None, int | None]:
    """The model name from the first settings message; ``recording_dropped`` of the last
    audit message (reads the first and the last complete chunk only)."""
    if not scan.chunks or scan.error:
        return None, None
    ids = {topic: cid for cid, topic in scan.channels.items()}
    store = messages.typestore()
    model = dropped = None
    with open(scan.path, "rb") as fh:
        for _s, _e, offset, length in (scan.chunks[0], scan.chunks[-1]):
            for op, content in mcapscan.iter_records(mcapscan.chunk_records(fh, offset, length)):
                if op != mcapscan.OP_MESSAGE:
                    continue
                (cid,) = struct.unpack_from("<H", content, 0)
                data = content[22:]
                try:
                    if model is None and cid == ids.get(messages.SETTINGS):
                        model = store.deserialize_cdr(data, messages.RUN_SETTINGS).model_name
                    elif cid == ids.get(messages.WRITES):
                        dropped = int(store.deserialize_cdr(
                            data, messages.DRIVE_WRITE).recording_dropped)
                except Exception:  # a damaged message: leave the fact unknown
                    continue
    return model, dropped


_SQLITE_ONE = ("SELECT m.data FROM messages m JOIN topics t ON m.topic_id = t.id "
               "WHERE t.name = ? ORDER BY m.id {} LIMIT 1")


def _from_sqlite(folder: Path, db: Path) -> SessionInfo:
    """A torn sqlite3 session: what its last commit holds (counts, times; the model from the
    first settings message and ``recording_dropped`` of the last audit message)."""
    frames, start, end, model, dropped = 0, None, None, None, None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = con.execute(
                "SELECT COUNT(*) FROM messages m JOIN topics t ON m.topic_id = t.id "
                "WHERE t.name = ?", (messages.RL_RESULTS,)).fetchone()
            frames = int(row[0])
            start, end = con.execute("SELECT MIN(timestamp), MAX(timestamp) FROM messages").fetchone()
            first_settings = con.execute(_SQLITE_ONE.format("ASC"), (messages.SETTINGS,)).fetchone()
            last_write = con.execute(_SQLITE_ONE.format("DESC"), (messages.WRITES,)).fetchone()
        finally:
            con.close()
        store = messages.typestore()
        if first_settings:
            model = store.deserialize_cdr(first_settings[0], messages.RUN_SETTINGS).model_name
        if last_write:
            dropped = int(store.deserialize_cdr(last_write[0],
                                                messages.DRIVE_WRITE).recording_dropped)
    except Exception:  # an unreadable database, a damaged or foreign message: facts unknown
        pass
    return SessionInfo(
        name=folder.name, path=folder, model=model or _model_from_name(folder.name),
        start_ns=start,
        duration_s=(end - start) / 1e9 if start is not None and end is not None else 0.0,
        frames=frames, dropped=dropped, size_bytes=_folder_size(folder), complete=False,
        storage="sqlite3",
    )


def list_sessions(root: str | Path) -> list[SessionInfo]:
    """Every rosbag2 folder directly in ``root`` (and ``root`` itself if it is one), newest
    first. Raises :class:`SourceError` if ``root`` is not a folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SourceError(f"{root} is not a folder; give the recording folder (record_dir)")
    folders = [root] if (root / "metadata.yaml").is_file() else sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = [info for p in folders if (info := session_info(p)) is not None]
    return sorted(found, key=lambda s: (s.start_ns or 0, s.name), reverse=True)


# -- reading a session -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Damage:
    """What a torn bag lost: ``lost_bytes`` unreadable at the end; ``lost_span_s`` the time the
    cut-off chunk covered, if its header survived; ``readable_messages`` kept."""

    lost_bytes: int
    lost_span_s: float | None
    readable_end_s: float | None  # time of the last readable message from the bag's start

    def describe(self) -> str:
        until = (f"readable up to {self.readable_end_s:.2f} s; " if self.readable_end_s is not None
                 else "")
        cut = ""
        if self.lost_bytes:
            span = (f" covering {self.lost_span_s:.2f} s" if self.lost_span_s is not None else "")
            cut = f", and a cut-off chunk of {self.lost_bytes / 1e3:.1f} kB{span}"
        return (f"torn bag (the recording did not close: power cut or kill): {until}lost what the "
                f"recorder had not flushed yet (up to ~1 s before the cut){cut}")


@contextmanager
def readable_bag(folder: str | Path) -> Iterator[tuple[Path, Damage | None]]:
    """Yield ``(path for rosbags' AnyReader, damage or None)`` for a session folder.

    A complete bag is yielded as it is. A torn MCAP bag (no ``metadata.yaml``, or no footer) is
    yielded as a temporary copy of its readable part; a torn sqlite3 bag as its ``.db3`` file.
    Raises :class:`SourceError` if nothing is readable.
    """
    folder = Path(folder)
    storage, files = _storage_files(folder)
    if (folder / "metadata.yaml").is_file():
        if storage != "mcap" or not files or mcapscan.scan(files[0]).complete:
            yield folder, None
            return
    if not files:
        raise SourceError(f"{folder} has no metadata.yaml and no .mcap/.db3 file; it is not a "
                          "rosbag2 folder")
    if storage == "sqlite3":
        yield files[0], Damage(0, None, None)
        return
    scan = mcapscan.scan(files[0])
    if scan.error or not scan.chunks:
        why = scan.error or "cut off before its first second was written"
        raise SourceError(f"{files[0]} has no readable messages ({why}); nothing to replay")
    start = scan.start_ns or 0
    span = None
    if scan.torn_chunk_ns is not None:
        s, e = scan.torn_chunk_ns
        span = max(0, e - s) / 1e9 if e >= s else None
    damage = Damage(scan.torn_bytes, span,
                    (scan.end_ns - start) / 1e9 if scan.end_ns is not None else None)
    with tempfile.TemporaryDirectory(prefix="car-runtime-torn-") as tmp:
        yield mcapscan.write_readable_copy(scan, Path(tmp) / files[0].name), damage
