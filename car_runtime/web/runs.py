"""The cockpit's recorded runs: list the flight recorder's sessions, stream one as a .tar, delete.

The sessions are the rosbag2 folders directly in ``record_dir``, described by the same catalog
code as ``car-runtime runs`` (:func:`car_runtime.recording.catalog.session_info`, cached per
folder until one of its files changes). A request names a session; the name is checked
(no path, no control characters) and then only ever looked up in that listing, never joined
onto a path. Symbolic links are not followed: a linked session folder is not listed, a session
holding a linked file is not sent, and files are opened with ``O_NOFOLLOW`` relative to the
folder.

Downloads are built as they are sent (never in memory, never a temp file): for each file a tar
header (:meth:`tarfile.TarInfo.tobuf`, PAX for long names) and its bytes read in
:data:`CHUNK_BYTES` pieces, then the end-of-archive blocks, padded like :mod:`tarfile` does.
The size is known up front (``Content-Length``), so a download cut short is visible as such.
Every call here blocks: run it in a low-priority worker thread, never on the event loop.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from car_runtime.recording.catalog import SessionInfo, session_info
from car_runtime.web.models import WebError

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024  # per read and per write to the client: bounded memory per download
MAX_DOWNLOADS = 2  # at a time, all sessions together
MAX_NAME_CHARS = 200
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
_TAR_FORMAT = tarfile.PAX_FORMAT

OFF_MESSAGE = ("recording is off: set record_dir: in the config (e.g. /opt/aws/deepracer/logs) or "
               "run with --record DIR, then restart car-runtime")


def check_run_name(name: Any) -> str:
    """``name`` if it can name a session folder, else WebError(400) naming the problem."""
    if not isinstance(name, str) or not name:
        raise WebError(400, 'name the run: {"name": "..."} or ?name=... (names from GET /api/runs)')
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise WebError(400, "the run name has control characters; use a name from GET /api/runs")
    if "/" in name or "\\" in name or ".." in name:
        raise WebError(400, f"the run name {name!r} holds a path (/, \\ or ..); use a name from "
                            "GET /api/runs")
    if len(name) > MAX_NAME_CHARS or not _NAME_RE.fullmatch(name):
        raise WebError(400, f"{name!r} is not a run name (letters, digits, . _ - +); use a name "
                            "from GET /api/runs")
    return name


@dataclass(frozen=True)
class _File:
    header: bytes
    name: str  # inside the session folder
    size: int
    is_dir: bool = False


@dataclass
class TarPlan:
    """What a download sends: the session, its members' headers and sizes, the total."""

    info: SessionInfo
    files: list[_File]
    size_bytes: int

    @property
    def filename(self) -> str:
        return f"{self.info.name}.tar"


class RunStore:
    """The sessions of one recording folder (``root``; None = recording is off).

    Thread-safe; every method blocks (call them in a worker thread)."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = None if root is None else Path(root).expanduser()
        self._cache: dict[str, tuple[tuple, SessionInfo | None]] = {}
        self._lock = threading.Lock()
        self._downloading: set[str] = set()

    # -- listing ------------------------------------------------------------------------------------
    def list(self) -> list[SessionInfo]:
        """The sessions, newest first (as ``car-runtime runs`` lists them). WebError if the
        folder cannot be read."""
        if self.root is None:
            return []
        try:
            children = [p for p in self.root.iterdir()
                        if not p.name.startswith(".") and _is_real_dir(p)]
        except FileNotFoundError:
            return []  # the recorder makes it at the first session
        except OSError as exc:
            raise WebError(500, f"cannot read the recording folder: {exc.strerror}; check its "
                                "permissions") from None
        found: list[SessionInfo] = []
        for p in children:
            info = self._info(p)
            if info is not None:
                found.append(info)
        with self._lock:  # forget folders that are gone
            names = {p.name for p in children}
            for gone in set(self._cache) - names:
                del self._cache[gone]
        return sorted(found, key=lambda s: (s.start_ns or 0, s.name), reverse=True)

    def _info(self, folder: Path) -> SessionInfo | None:
        key = _folder_key(folder)
        with self._lock:
            hit = self._cache.get(folder.name)
        if hit is not None and hit[0] == key:
            return hit[1]
        try:
            info = session_info(folder)
        except Exception as exc:  # an unreadable folder is not a session; the others still list
            log.warning("cannot read the recorded session %s: %s", folder, exc)
            info = None
        with self._lock:
            self._cache[folder.name] = (key, info)
        return info

    def find(self, name: Any) -> SessionInfo:
        """The listed session called ``name``: WebError 400 (not a name) or 404."""
        name = check_run_name(name)
        if self.root is None:
            raise WebError(404, OFF_MESSAGE)
        for info in self.list():
            if info.name == name:
                return info
        raise WebError(404, f"no recorded run {name!r}; GET /api/runs lists them")

    # -- download -----------------------------------------------------------------------------------
    def plan(self, info: SessionInfo) -> TarPlan:
        """The members of ``info``'s tar and its exact size; WebError(403) if the folder holds
        anything but plain files."""
        folder = info.path
        try:
            st_dir = os.lstat(folder)
            names = sorted(os.listdir(folder))
        except OSError as exc:
            raise WebError(404, f"{info.name} is gone ({exc.strerror})") from None
        if not stat.S_ISDIR(st_dir.st_mode):
            raise WebError(404, f"{info.name} is gone")
        top = tarfile.TarInfo(info.name)
        top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, int(st_dir.st_mtime)
        files = [_File(_header(top), "", 0, is_dir=True)]
        for name in names:
            st = os.lstat(folder / name)
            if stat.S_ISLNK(st.st_mode):
                raise WebError(403, f"{info.name} holds a symbolic link ({name}); the cockpit sends "
                                    "only plain files: copy the run off the car another way")
            if not stat.S_ISREG(st.st_mode):
                raise WebError(403, f"{info.name} holds something that is not a file ({name}); "
                                    "the cockpit sends only plain files")
            ti = tarfile.TarInfo(f"{info.name}/{name}")
            ti.size, ti.mode, ti.mtime = st.st_size, 0o644, int(st.st_mtime)
            files.append(_File(_header(ti), name, st.st_size))
        size = sum(len(f.header) + _padded(f.size) for f in files) + 2 * tarfile.BLOCKSIZE
        size += -size % tarfile.RECORDSIZE
        return TarPlan(info, files, size)

    def begin_download(self, info: SessionInfo) -> None:
        """Reserve a download slot for ``info``: WebError 409 if it is being downloaded, 503
        if :data:`MAX_DOWNLOADS` are running. Always pair with :meth:`end_download`."""
        with self._lock:
            if info.name in self._downloading:
                raise WebError(409, f"{info.name} is being downloaded already; wait until that "
                                    "download ends")
            if len(self._downloading) >= MAX_DOWNLOADS:
                raise WebError(503, f"{MAX_DOWNLOADS} downloads are running; wait until one ends")
            self._downloading.add(info.name)

    def end_download(self, info: SessionInfo) -> None:
        with self._lock:
            self._downloading.discard(info.name)

    def downloading(self, name: str) -> bool:
        with self._lock:
            return name in self._downloading

    def chunks(self, plan: TarPlan) -> Iterator[bytes]:
        """The tar's bytes in pieces of about :data:`CHUNK_BYTES` (exactly ``plan.size_bytes``
        in all). Raises OSError if a file changed under it (the client then gets a short
        download, which its Content-Length shows)."""
        folder_fd = os.open(plan.info.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            buf = bytearray()
            sent = 0
            for f in plan.files:
                buf += f.header
                if f.is_dir:
                    continue
                fd = os.open(f.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder_fd)
                try:
                    left = f.size
                    while left:
                        data = os.read(fd, min(CHUNK_BYTES, left))
                        if not data:
                            raise OSError(f"{f.name} became shorter while it was sent")
                        buf += data
                        left -= len(data)
                        if len(buf) >= CHUNK_BYTES:
                            sent += len(buf)
                            yield bytes(buf)
                            buf.clear()
                finally:
                    os.close(fd)
                buf += bytes(-f.size % tarfile.BLOCKSIZE)
            buf += bytes(plan.size_bytes - sent - len(buf))  # end-of-archive blocks, record padding
            yield bytes(buf)
        finally:
            os.close(folder_fd)

    # -- delete -------------------------------------------------------------------------------------
    def delete(self, info: SessionInfo) -> None:
        """Remove the session folder (WebError 409 while it is being downloaded)."""
        if self.downloading(info.name):
            raise WebError(409, f"{info.name} is being downloaded; delete it when that ends")
        path = info.path
        if path.parent != self.root or not _is_real_dir(path):
            raise WebError(404, f"{info.name} is gone")
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise WebError(500, f"cannot delete {info.name}: {exc.strerror}; check the "
                                "permissions of the recording folder") from None
        with self._lock:
            self._cache.pop(info.name, None)
        log.info("recorded run deleted: %s", path)


def run_json(info: SessionInfo, *, recording: bool, downloading: bool,
             live: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run for ``GET /api/runs``; ``live``: the recorder's facts for the session it is
    recording (its frame counts are ahead of what is flushed to the file)."""
    frames, dropped = info.frames, info.dropped
    if live is not None:
        frames, dropped = live.get("frames", frames), live.get("dropped", dropped)
    return {
        "name": info.name, "model": info.model,
        "start_epoch_s": None if info.start_ns is None else info.start_ns / 1e9,
        "duration_s": round(info.duration_s, 2), "frames": frames, "dropped": dropped,
        "size_bytes": info.size_bytes, "storage": info.storage,
        "status": "recording" if recording else info.status, "torn_bytes": info.torn_bytes,
        "downloading": downloading,
    }


def _header(ti: tarfile.TarInfo) -> bytes:
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti.tobuf(_TAR_FORMAT, tarfile.ENCODING, "surrogateescape")


def _padded(n: int) -> int:
    return n + (-n % tarfile.BLOCKSIZE)


def _is_real_dir(p: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(p).st_mode)
    except OSError:
        return False


def _folder_key(folder: Path) -> tuple:
    """Changes whenever a file of the folder is added, removed, grows or is rewritten."""
    try:
        entries = []
        for e in os.scandir(folder):
            st = e.stat(follow_symlinks=False)
            entries.append((e.name, st.st_size, st.st_mtime_ns, st.st_ino))
        return tuple(sorted(entries))
    except OSError:
        return ()
