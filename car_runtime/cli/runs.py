"""``car-runtime runs [DIR]``: the driving sessions the flight recorder wrote.

Example::

    car-runtime runs /opt/aws/deepracer/logs
"""

from __future__ import annotations

import argparse

DEFAULT_DIR = "/opt/aws/deepracer/logs"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="list recorded driving sessions (car-runtime run --record DIR)",
        description="List the sessions in a recording folder, newest first: model, start, "
                    "duration, frames, frames the recorder dropped, size; torn sessions (the "
                    "recording was cut by a power loss or kill) are marked and still replay.",
    )
    p.add_argument("dir", nargs="?", metavar="DIR",
                   help=f"recording folder (default: record_dir of --config, else {DEFAULT_DIR})")
    p.add_argument("--config", metavar="FILE", help="YAML settings: take record_dir from it")
    p.set_defaults(func=run)


def _size(n: int) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def format_table(sessions) -> str:
    import time

    rows = [("SESSION", "MODEL", "START", "DURATION", "FRAMES", "DROPPED", "SIZE", "")]
    for s in sessions:
        start = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.start_ns / 1e9))
                 if s.start_ns else "-")
        dropped = "?" if s.dropped is None else str(s.dropped)
        note = "" if s.complete else "TORN (cut off; replayable)"
        rows.append((s.name, s.model, start, f"{s.duration_s:.1f} s", str(s.frames), dropped,
                     _size(s.size_bytes), note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run(args: argparse.Namespace) -> int:
    from car_runtime.config import resolve
    from car_runtime.recording.catalog import list_sessions

    folder = args.dir
    if folder is None and args.config:
        folder = resolve(args.config, {}).record_dir
    folder = folder or DEFAULT_DIR
    sessions = list_sessions(folder)
    if not sessions:
        print(f"no recorded sessions in {folder}")
        return 0
    print(format_table(sessions))
    torn = sum(not s.complete for s in sessions)
    total = sum(s.size_bytes for s in sessions)
    print(f"{len(sessions)} session(s), {_size(total)}"
          + (f"; {torn} torn" if torn else "")
          + f". Replay one: car-runtime replay {folder.rstrip('/')}/SESSION [--verify] [-o out.mp4]")
    return 0
