"""Saving a calibration the service may write but whose folder it may not (the stock
/opt/aws/deepracer is root's): rewritten in place, history kept, owner/group/mode kept; a
process killed inside the in-place write leaves valid JSON; root's atomic save keeps the
owner and group that give the service its access. Real users (setpriv), real kills (strace
fault injection)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from car_runtime.actuation import calibration as c
from helpers import UNPRIVILEGED, as_unprivileged, can_switch_user, open_tmp_dir

needs_root = pytest.mark.skipif(not can_switch_user(), reason="needs root and setpriv")

NEW = c.Calibration.defaults().with_values({"servo.mid": 1_460_000, "motor.max": 1_600_000})

SAVE = textwrap.dedent("""
    import sys
    from car_runtime.actuation.calibration import Calibration, save_calibration
    from car_runtime.errors import CalibrationError
    cal = Calibration.defaults().with_values({"servo.mid": 1_460_000, "motor.max": 1_600_000})
    try:
        save_calibration(cal, sys.argv[1])
    except CalibrationError as exc:
        print(exc)
        sys.exit(2)
""")


@pytest.fixture
def stock_folder():
    """``deepracer/`` shaped like the car after install-service: the folder root's (0755), the
    file root:nogroup 0664 (stock-written, longer than ours), the history folder nobody's."""
    base = open_tmp_dir()
    folder = base / "deepracer"
    folder.mkdir(mode=0o755)
    path = folder / "calibration.json"
    stock = c.Calibration.defaults().to_stock_dict()
    path.write_text(json.dumps(stock, indent=8) + "\n")  # longer than dumps_stock's 3 spaces
    os.chown(path, 0, 65534)
    path.chmod(0o664)
    hist = folder / ".calibration.json.history"
    hist.mkdir(mode=0o755)
    os.chown(hist, 65534, 65534)
    yield path
    shutil.rmtree(base)


def save_as_nobody(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(as_unprivileged([sys.executable, "-c", SAVE, str(path)]),
                          capture_output=True, text=True, timeout=60)


@needs_root
def test_the_service_user_saves_in_place_and_keeps_the_history(stock_folder):
    path = stock_folder
    before = path.stat()
    old = path.read_bytes()
    r = save_as_nobody(path)
    assert r.returncode == 0, r.stdout + r.stderr
    after = path.stat()
    assert after.st_ino == before.st_ino  # the same file: rewritten, not replaced
    assert (after.st_uid, after.st_gid, after.st_mode & 0o777) == (0, 65534, 0o664)
    assert c.load_calibration(path) == NEW
    assert path.read_bytes() == c.dumps_stock(NEW).encode()  # cut to length, no padding left
    (entry,) = c.list_history(path)
    assert entry.path.read_bytes() == old and entry.calibration == c.Calibration.defaults()
    assert entry.path.stat().st_uid == 65534
    assert sorted(os.listdir(path.parent)) == [".calibration.json.history", "calibration.json"]


@needs_root
def test_without_a_writable_history_the_service_user_changes_nothing(stock_folder):
    path = stock_folder
    os.chown(path.parent / ".calibration.json.history", 0, 0)
    old = path.read_bytes()
    r = save_as_nobody(path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout.startswith(f"cannot write calibration file {path}: permission denied")
    assert "sudo car-runtime install-service" in r.stdout and r.stdout.count("\n") == 1
    assert path.read_bytes() == old


@needs_root
def test_a_file_the_service_user_may_not_write_is_refused_with_the_fix(stock_folder):
    path = stock_folder
    os.chown(path, 0, 0)
    path.chmod(0o644)  # what the stock stack makes when it re-creates a missing file
    old = path.read_bytes()
    r = save_as_nobody(path)
    assert r.returncode == 2 and "permission denied" in r.stdout
    assert "sudo car-runtime install-service" in r.stdout
    assert path.read_bytes() == old


@needs_root
def test_roots_atomic_save_keeps_owner_group_and_mode(stock_folder):
    path = stock_folder
    os.chown(path, 65534, 65534)
    before = path.stat()
    c.save_calibration(NEW, path)  # as root: the folder is writable, so temp file + rename
    after = path.stat()
    assert after.st_ino != before.st_ino
    assert (after.st_uid, after.st_gid, after.st_mode & 0o777) == (65534, 65534, 0o664)
    assert c.load_calibration(path) == NEW


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_killed_between_the_write_and_the_cut_the_file_is_still_valid(tmp_path):
    """SIGKILL injected exactly at the ftruncate that ends an in-place save: the new JSON plus
    padding spaces, never the new text followed by the tail of the longer old one."""
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(c.Calibration.defaults().to_stock_dict(), indent=8) + "\n")
    old_size = path.stat().st_size
    saver = textwrap.dedent("""
        import sys
        from car_runtime.actuation.calibration import Calibration, save_calibration
        cal = Calibration.defaults().with_values({"servo.mid": 1_460_000, "motor.max": 1_600_000})
        save_calibration(cal, sys.argv[1], keep=0, in_place=True)
    """)
    r = subprocess.run(["strace", "-f", "-o", os.devnull, "-e", "trace=ftruncate",
                        "-e", "inject=ftruncate:signal=SIGKILL", sys.executable, "-c", saver,
                        str(path)], capture_output=True, text=True, timeout=60)
    if "ptrace" in r.stderr and "Operation not permitted" in r.stderr:
        pytest.skip("ptrace is not permitted here")
    assert r.returncode in (-9, 128 + 9), r.stderr  # strace dies of the tracee's SIGKILL
    data = path.read_bytes()
    assert len(data) == old_size > len(c.dumps_stock(NEW))  # killed before the cut
    assert data.startswith(c.dumps_stock(NEW).encode()) and data.rstrip(b" ") == c.dumps_stock(NEW).encode()
    assert c.load_calibration(path) == NEW
