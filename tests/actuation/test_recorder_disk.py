"""The record: output on a full disk (/dev/full, a real 64 kB tmpfs) and over a long run: a write
that does not fit is cut back to the last whole line and ends the run (exit 3, one line); memory
stays flat however many writes are recorded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from helpers import car_runtime_cmd

from car_runtime.actuation.base import DutyWrite
from car_runtime.actuation.calibration import Calibration
from car_runtime.actuation.output import Actuator
from car_runtime.actuation.recorder import RECORD_KEYS, Recorder, read_records
from car_runtime.errors import HardwareError

CAL = Calibration.defaults()


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 64 kB tmpfs (root only; skipped elsewhere -- /dev/full covers the same path)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def assert_whole_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), data[-80:]
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert all(list(r)[: len(RECORD_KEYS)] == list(RECORD_KEYS) for r in rows)
    return rows


def test_dev_full_is_one_clear_error():
    rec = Recorder(CAL, "/dev/full")
    with pytest.raises(HardwareError, match=r"no space left on the device \(ENOSPC"):
        Actuator(rec, CAL)  # the start neutral cannot be recorded


def test_full_tmpfs_never_leaves_a_torn_line(tiny_fs):
    path = tiny_fs / "drive.jsonl"
    rec = Recorder(CAL, path)
    w = DutyWrite(0.0, 0.25, 0.5, 1_512_500, 1_367_250,
                  {"frame_seq": 1, "frame_age_ms": 3.25, "state": "armed", "event": None,
                   "note": "x" * 150})
    n = 0
    with pytest.raises(HardwareError, match="no space left on the device"):
        while True:
            w.context["frame_seq"] = n
            rec.write(w)
            n += 1
    rows = assert_whole_lines(path)
    assert len(rows) == n == rec.lines and n > 100
    with pytest.raises(HardwareError):  # still full: still refused, still whole lines
        rec.write(w)
    assert len(assert_whole_lines(path)) == n
    rec.close()
    print(f"64 kB tmpfs: {n} whole lines, then ENOSPC; file ends on a newline")


def test_run_on_a_full_disk_exits_3_with_one_line(tiny_fs, demo_model, footage_seq_dir):
    """`car-runtime run --output record:` on a disk that fills up while it drives."""
    filler = tiny_fs / "filler"
    filler.write_bytes(b"\0" * (56 * 1024))  # leave 8 kB: about forty lines
    path = tiny_fs / "drive.jsonl"
    proc = subprocess.run(
        [*car_runtime_cmd(), "run", "--model", str(demo_model), "--camera", str(footage_seq_dir),
         "--fps", "60", "--arm", "--output", f"record:{path}", "--status-interval", "0",
         "--calibration", str(tiny_fs / "none.json"), "--max-frame-age-ms", "1000"],
        capture_output=True, text=True, timeout=120)
    err = proc.stderr
    assert proc.returncode == 3, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device (ENOSPC" in errors[0], err
    assert "Traceback" not in err and "Exception in thread" not in err
    rows = assert_whole_lines(path)
    assert rows and any(r["frame_seq"] is not None for r in rows)
    print(f"full disk while driving: exit 3 after {len(rows)} whole lines; {errors[0]}")


def test_memory_stays_flat_over_100000_writes(tmp_path):
    path = tmp_path / "long.jsonl"
    rec = Recorder(CAL, path)
    act = Actuator(rec, CAL)
    ctx = {"frame_seq": 0, "frame_age_ms": 2.5, "state": "armed"}
    for i in range(1000):  # warm up (interned strings, JSON encoder caches)
        act.command(0.1, 0.2, **ctx)
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for i in range(100_000):
        ctx["frame_seq"] = i
        act.command((i % 200 - 100) / 100, 0.3, **ctx)
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    act.close()
    grew = after - before
    assert grew < 256 * 1024, grew  # a list of 100 000 writes would be ~25 MB
    assert len(read_records(path)) == 100_000 + 1000 + 2
    print(f"100 000 recorded writes: Python heap grew {grew / 1024:.1f} kB "
          f"(peak +{(peak - before) / 1024:.1f} kB); file {path.stat().st_size / 1e6:.1f} MB")
