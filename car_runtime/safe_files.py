"""Reading small settings files (config, calibration, model metadata) so that no file can hang
or exhaust the runtime, and its stop path (``car-runtime neutral``) least of all.

:func:`read_small_file` reads only regular files (a FIFO, a device such as a symlink to
``/dev/zero``, a socket or a directory is refused before it is opened: opening some devices has
effects), never waits (``O_NONBLOCK``), and reads at most ``max_bytes``. :func:`load_json`
decodes strict UTF-8 JSON with bounded nesting, bounded integers and no NaN/Infinity;
:func:`load_yaml_text` decodes YAML with the safe loader, bounded nesting and no aliases to
lists or mappings (the "billion laughs" bomb). Every failure is :class:`ValueError` with one
line saying what is wrong; callers wrap it in their own error naming the fix.
"""

from __future__ import annotations

import json
import os
import reprlib
import stat
from pathlib import Path
from typing import Any

MAX_DEPTH = 32  # settings files are flat; a model_metadata.json is 3 levels deep
MAX_INT_DIGITS = 30  # far beyond any pulse, count or speed
_KIND = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
         stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a link"}

_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 2, 40, 40, 4, 4


def show(value: Any) -> str:
    """A short, bounded repr for error messages (safe on huge or self-similar values)."""
    return _short.repr(value)


def read_small_file(path: str | Path, max_bytes: int, *, head: bool = False) -> bytes:
    """The content of regular file ``path`` (symlinks followed), at most ``max_bytes``; with
    ``head``, the first ``max_bytes`` of a larger file instead of an error.

    FileNotFoundError / PermissionError pass through (callers treat them specially); anything
    else unusable is a ValueError naming it."""
    path = Path(path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is {_KIND.get(stat.S_IFMT(st.st_mode), 'not a regular file')}, "
                         "not a regular file")
    if st.st_size > max_bytes and not head:
        raise ValueError(f"{path} is {st.st_size} bytes, more than the {max_bytes} a settings "
                         "file can be")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat and open
            raise ValueError(f"{path} is not a regular file")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(65536, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                if head:
                    return b"".join(chunks)[:max_bytes]
                raise ValueError(f"{path} is more than the {max_bytes} bytes a settings file can be")
    finally:
        os.close(fd)
    return b"".join(chunks)


def decode_utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start})") from None


def _bounded_int(text: str) -> int:
    digits = text.lstrip("+-")
    if len(digits) > MAX_INT_DIGITS:
        raise ValueError(f"a {len(digits)}-digit number")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def check_depth(value: Any, what: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise ValueError if ``value`` nests lists/dicts deeper than ``max_depth`` (iterative)."""
    stack = [(value, 1)]
    seen = 0
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, dict)):
            if depth > max_depth:
                raise ValueError(f"{what} nests more than {max_depth} levels deep")
            seen += 1
            if seen > 100_000:
                raise ValueError(f"{what} holds too many values")
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))


def load_json(data: bytes, what: str) -> Any:
    """Strict UTF-8 JSON: integers of at most ``MAX_INT_DIGITS`` digits, no NaN/Infinity,
    nesting at most ``MAX_DEPTH``; ValueError (one line) otherwise."""
    text = decode_utf8(data, what)
    try:
        value = json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON ({exc})") from None
    except ValueError as exc:  # _bounded_int / _no_constant
        raise ValueError(f"{what} holds {exc}") from None
    except RecursionError:
        raise ValueError(f"{what} nests too deeply") from None
    check_depth(value, what)
    return value


def _flow_depth(text: str, limit: int) -> int:
    """The deepest ``[``/``{`` nesting outside quotes and comments, counting stops past
    ``limit`` (a fast pre-check: the YAML scanner reads a whole deep flow before it fails)."""
    depth = deepest = 0
    quote = ""
    prev = "\n"
    comment = False
    for ch in text:
        if comment:
            if ch == "\n":
                comment = False
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'" and prev in " \t\n[{,:":
            quote = ch
        elif ch == "#" and prev in " \t\n":
            comment = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth = max(0, depth - 1)
        prev = ch
    return deepest


def load_yaml_text(text: str, what: str) -> Any:
    """YAML through a safe loader that refuses aliases to lists/mappings, nesting deeper than
    ``MAX_DEPTH`` and integers longer than ``MAX_INT_DIGITS`` digits."""
    import yaml

    if _flow_depth(text, MAX_DEPTH) > MAX_DEPTH:
        raise ValueError(f"{what} nests more than {MAX_DEPTH} levels deep")

    class _Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):  # type: ignore[override]
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                node = self.anchors.get(event.anchor)
                if node is not None and not isinstance(node, yaml.ScalarNode):
                    raise ValueError(f"{what} uses an alias (*{event.anchor}) to a list or "
                                     "mapping; write the values out (aliases are refused: they "
                                     "can expand without bound)")
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ValueError(f"{what} nests more than {MAX_DEPTH} levels deep")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_yaml_int(self, node):  # type: ignore[override]
            digits = str(node.value).replace("_", "").lstrip("+-")
            if len(digits) > MAX_INT_DIGITS:
                raise ValueError(f"{what} holds a {len(digits)}-digit number")
            return super().construct_yaml_int(node)

    _Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(":")
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"{what} is not valid YAML: {first}{where}") from None
    except RecursionError:
        raise ValueError(f"{what} nests too deeply") from None
    finally:
        loader.dispose()
