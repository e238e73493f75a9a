"""One rosbag2 folder being written: rosbags' writer plus the durability it lacks on its own.

rosbags' MCAP storage keeps messages in memory until a chunk reaches 1 MiB, and its sqlite3
storage keeps one transaction open until the bag is closed (a power cut then loses everything:
0 of 600 messages in our measurement). :meth:`BagWriter.flush` therefore ends the current MCAP
chunk and hands it to the OS (or commits the sqlite3 transaction); the recorder calls it about
once a second, and ``fsync`` less often. A killed process then loses at most the last flush
interval; the MCAP file lacks its summary and footer and ``metadata.yaml`` is missing -- a
*torn* bag, which :mod:`car_runtime.recording.catalog` and ``car-runtime replay`` still read.

Only the writer thread touches a :class:`BagWriter`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from car_runtime.recording import messages

log = logging.getLogger(__name__)

STORAGES = ("mcap", "sqlite3")
#: rosbag2 metadata version: 8 is what Humble's reader was written for (newer also reads it).
BAG_VERSION = 8


class BagWriter:
    """A new rosbag2 folder at ``path`` with our four topics (see :mod:`.messages`)."""

    def __init__(self, path: Path, storage: str = "mcap") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        self.storage = storage
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=plugin)
        self._writer.open()
        store = messages.typestore()
        self.connections = {
            topic: self._writer.add_connection(topic, msgtype, typestore=store)
            for topic, msgtype in messages.TOPICS.items()
        }
        self._serialize = store.serialize_cdr
        self.messages = 0

    def write(self, topic: str, t_ns: int, msg: Any) -> int:
        """Serialize ``msg`` and append it with log time ``t_ns``; return its size in bytes."""
        data = self._serialize(msg, messages.TOPICS[topic])
        self._writer.write(self.connections[topic], t_ns, data)
        self.messages += 1
        return len(data)

    def set_custom_data(self, key: str, value: str) -> None:
        """A ``custom_data`` entry of ``metadata.yaml`` (written at :meth:`close`)."""
        self._writer.set_custom_data(key, value)

    def flush(self, fsync: bool = False) -> None:
        """Hand everything written so far to the OS (``fsync``: to the disk)."""
        storage = getattr(self._writer, "storage", None)
        if storage is None:
            return
        if self.storage == "mcap":
            chunk = getattr(storage, "chunk", None)
            if chunk is not None and chunk.bio.tell():
                storage.close_chunk()
            bio = storage.bio
            bio.flush()
            if fsync:
                os.fsync(bio.fileno())
        else:
            storage.conn.commit()  # sqlite3 syncs on commit (synchronous=FULL by default)

    def close(self) -> None:
        """Finish the storage file and write ``metadata.yaml`` (a complete bag)."""
        self._writer.close()
        _fsync_path(self.path)

    def abort(self) -> None:
        """Give up after a write error: release the files, leave what reached the disk."""
        storage = getattr(self._writer, "storage", None)
        try:
            if storage is not None and self.storage == "mcap":
                storage.bio.close()
            elif storage is not None:
                storage.conn.close()
        except Exception:  # the disk is failing; nothing more to save
            log.debug("closing %s after an error failed", self.path, exc_info=True)
        self._writer.storage = None


def _fsync_path(folder: Path) -> None:
    for p in (*folder.iterdir(), folder):
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
