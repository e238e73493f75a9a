"""Find what is readable in an MCAP file, also one cut off mid-write (kill -9, power cut).

A recording that never closed has no summary, no footer, and usually half a chunk at the end.
:func:`scan` walks the top-level records (seeking over chunk data) up to the last complete one
and reports the complete chunks' time spans, message counts per topic (from the message index
records), and how many bytes at the end are unreadable. :func:`write_readable_copy` writes
that readable prefix plus a valid end (DataEnd + footer) so any MCAP reader (rosbags included)
reads it. Records are as in the MCAP spec: opcode u8, length u64 little-endian, content.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE = 0x01, 0x02, 0x03, 0x04, 0x05
OP_CHUNK, OP_MESSAGE_INDEX, OP_DATA_END = 0x06, 0x07, 0x0F
_MAX_OP = 0x10


@dataclass
class McapScan:
    """What :func:`scan` found. Offsets are byte positions in the file."""

    path: Path
    size: int
    complete: bool = False  # footer present: the writer closed the file
    readable_end: int = 0  # end of the last complete record of the data section
    chunks: list[tuple[int, int, int, int]] = field(default_factory=list)  # start_ns, end_ns, offset, length
    torn_chunk_ns: tuple[int, int] | None = None  # time span of a cut-off chunk, if its header survived
    channels: dict[int, str] = field(default_factory=dict)  # channel id -> topic
    counts: dict[int, int] = field(default_factory=dict)  # channel id -> messages in complete chunks
    error: str = ""  # why the file is not an MCAP at all

    @property
    def torn_bytes(self) -> int:
        return 0 if self.complete else max(0, self.size - self.readable_end)

    @property
    def start_ns(self) -> int | None:
        return min((c[0] for c in self.chunks), default=None)

    @property
    def end_ns(self) -> int | None:
        return max((c[1] for c in self.chunks), default=None)

    def count(self, topic: str) -> int:
        return sum(n for cid, n in self.counts.items() if self.channels.get(cid) == topic)


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    return buf[pos + 4 : pos + 4 + n].decode("utf-8", "replace"), pos + 4 + n


def _channel(content: bytes) -> tuple[int, str]:
    cid, _schema = struct.unpack_from("<HH", content, 0)
    topic, _ = _string(content, 4)
    return cid, topic


def iter_records(buf: bytes, pos: int = 0):
    """``(op, content)`` for each complete record in ``buf`` (e.g. a chunk's records)."""
    while pos + 9 <= len(buf):
        op, n = struct.unpack_from("<BQ", buf, pos)
        if pos + 9 + n > len(buf):
            return
        yield op, buf[pos + 9 : pos + 9 + n]
        pos += 9 + n


def chunk_records(fh, offset: int, length: int) -> bytes:
    """The uncompressed records of the chunk record at ``offset`` (only uncompressed chunks:
    what rosbags writes; others return b"")."""
    fh.seek(offset + 9)
    content = fh.read(length)
    _start, _end, _usize, _crc = struct.unpack_from("<QQQI", content, 0)
    compression, pos = _string(content, 28)
    (csize,) = struct.unpack_from("<Q", content, pos)
    if compression:
        return b""
    return content[pos + 8 : pos + 8 + csize]


def scan(path: str | Path) -> McapScan:
    """Walk ``path``'s records; never raises for a damaged file (see :attr:`McapScan.error`)."""
    path = Path(path)
    size = path.stat().st_size
    out = McapScan(path, size)
    with open(path, "rb") as fh:
        if fh.read(8) != MAGIC:
            out.error = "not an MCAP file (bad magic)"
            return out
        pos = 8
        out.readable_end = pos
        first_chunk_parsed = False
        while True:
            fh.seek(pos)
            head = fh.read(9)
            if len(head) < 9:
                break
            op, n = struct.unpack("<BQ", head)
            if op == 0 or op > _MAX_OP and op < 0x80:
                break  # zeros or garbage: the write was cut here
            if pos + 9 + n > size:
                if op == OP_CHUNK and size - pos - 9 >= 16:
                    out.torn_chunk_ns = struct.unpack("<QQ", fh.read(16))
                break
            if op == OP_CHUNK:
                start_ns, end_ns = struct.unpack("<QQ", fh.read(16))
                out.chunks.append((start_ns, end_ns, pos, n))
                if not first_chunk_parsed:  # rosbags puts schemas and channels in chunk 1
                    first_chunk_parsed = True
                    for rop, content in iter_records(chunk_records(fh, pos, n)):
                        if rop == OP_CHANNEL:
                            cid, topic = _channel(content)
                            out.channels[cid] = topic
            elif op == OP_MESSAGE_INDEX:
                cid, nbytes = struct.unpack("<HI", fh.read(6))
                out.counts[cid] = out.counts.get(cid, 0) + nbytes // 16
            elif op == OP_CHANNEL:
                cid, topic = _channel(fh.read(n))
                out.channels[cid] = topic
            elif op in (OP_DATA_END, OP_FOOTER):
                out.readable_end = pos
                fh.seek(size - 8)
                out.complete = fh.read(8) == MAGIC
                return out
            pos += 9 + n
            out.readable_end = pos
    return out


def write_readable_copy(result: McapScan, dest: str | Path) -> Path:
    """Copy the readable records of ``result.path`` to ``dest`` and end them properly
    (DataEnd + an empty-summary footer + magic)."""
    dest = Path(dest)
    with open(result.path, "rb") as src, open(dest, "wb") as out:
        remaining = result.readable_end
        while remaining > 0:
            block = src.read(min(remaining, 1 << 20))
            if not block:
                break
            out.write(block)
            remaining -= len(block)
        out.write(struct.pack("<BQI", OP_DATA_END, 4, 0))
        out.write(struct.pack("<BQQQI", OP_FOOTER, 20, 0, 0, 0))
        out.write(MAGIC)
    return dest
