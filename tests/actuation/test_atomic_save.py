"""A calibration save killed at any moment never leaves an unreadable or invalid file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from car_runtime.actuation import calibration as c

REPO = Path(__file__).resolve().parents[2]

SAVER = textwrap.dedent("""
    import sys
    from car_runtime.actuation.calibration import Calibration, save_calibration
    path = sys.argv[1]
    base = Calibration.defaults()
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        save_calibration(base.with_values({"servo.mid": 1_400_000 + (i % 1000) * 10}), path, keep=5)
""")


def test_sigkill_mid_save_never_corrupts(tmp_path):
    path = tmp_path / "calibration.json"
    c.save_calibration(c.Calibration.defaults(), path)
    rng = random.Random(1234)
    interrupted = 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(30):
        p = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, env=env)
        assert p.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.04))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        p.stdout.close()
        assert p.returncode == -signal.SIGKILL
        cal = c.load_calibration(path)  # raises if unreadable or invalid
        assert 1_400_000 <= cal.servo.mid_ns <= 1_450_000 and cal.motor == c.Calibration.defaults().motor
        hist = c.list_history(path)
        assert all(e.calibration is not None for e in hist), [e.error for e in hist]
        interrupted += bool(list(tmp_path.glob(".calibration.json.*.tmp")) or
                            list(tmp_path.glob(".calibration.json.history/.*.tmp")))
    # The kills did land inside saves (temp files left behind) at least sometimes...
    assert interrupted > 0
    # ...and the next save cleans up after the dead savers.
    c.save_calibration(c.Calibration.defaults(), path)
    assert not list(tmp_path.glob(".calibration.json.*.tmp"))
    assert not list(tmp_path.glob(".calibration.json.history/.*.tmp"))
    assert c.load_calibration(path) == c.Calibration.defaults()
    assert 0 < len(c.list_history(path)) <= 10
    assert all(e.calibration is not None for e in c.list_history(path))
    print(f"{interrupted}/30 kills left a temp file behind")
