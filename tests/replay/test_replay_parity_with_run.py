"""Replay's pulses are the car's pulses: ``car-runtime run --arm`` (the real drive loop, paced,
newest-frame slot, watchdog) on the same frames writes the same servo/ESC pulses that
``car-runtime replay`` logs, frame by frame."""

from __future__ import annotations

import json

from replay_expect import read_log, run_cli


def test_run_and_replay_write_the_same_pulses(tmp_path, capsys, demo_model, footage_seq_dir):
    record, log, cal = tmp_path / "drive.jsonl", tmp_path / "replay.jsonl", tmp_path / "cal.json"
    cal.write_text(json.dumps({"Calibration": {
        "Servo": {"min": 1_250_000, "mid": 1_460_000, "max": 1_690_000, "polarity": -1},
        "Motor": {"min": 1_300_000, "mid": 1_440_000, "max": 1_600_000, "polarity": -1},
        "version": 1,
    }}))
    code, _, _ = run_cli(
        ["run", "--model", str(demo_model), "--camera", str(footage_seq_dir), "--fps", "60",
         "--output", f"record:{record}", "--arm", "--max-speed-pct", "70",
         "--status-interval", "0", "--calibration", str(cal),
         "--max-frame-age-ms", "1000", "--deadline-ms", "1000"], capsys
    )
    assert code == 0
    code, _, _ = run_cli(
        ["replay", "--model", str(demo_model), str(footage_seq_dir), "--max-speed-pct", "70",
         "--calibration", str(cal), "--log", str(log)], capsys
    )
    assert code == 0
    replayed = {r["frame"] + 1: r for r in read_log(log)}  # run logs frame_seq = frame + 1
    driven = [
        r for r in map(json.loads, record.read_text().splitlines())
        if r.get("frame_seq") is not None and r.get("event") is None and r.get("state") == "armed"
    ]
    # the paced run takes the newest frame: a loaded machine may skip some; many must drive
    assert len(driven) >= 20, f"only {len(driven)} of 100 frames driven"
    for r in driven:
        want = replayed[r["frame_seq"]]
        assert (r["servo_ns"], r["motor_ns"]) == (want["servo_ns"], want["motor_ns"])
        assert (r["angle"], r["throttle"]) == (want["angle"], want["throttle"])
