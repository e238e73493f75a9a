"""Calibration over real HTTP: the loop hands the outputs over (writes nothing, refuses to arm),
pulses go through the same actuator and are held only while heartbeats arrive (then the
watchdog writes neutral), saving is atomic with history and applies at once."""

from __future__ import annotations

import json
import threading
import time

from car_runtime.actuation.calibration import Calibration, list_history
from helpers import wait_until as wait_for

NEW = {"servo": {"min": 1_250_000, "mid": 1_460_000, "max": 1_690_000, "polarity": -1},
       "motor": {"min": 1_300_000, "mid": 1_450_000, "max": 1_600_000, "polarity": 1}}


class Beats:
    """POST /api/heartbeat every 100 ms from a thread while in the ``with`` block."""

    def __init__(self, client) -> None:
        self.client = client
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.client.post("/api/heartbeat")
            time.sleep(0.1)

    def __enter__(self):
        self.thread.start()
        time.sleep(0.15)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def loop_writes(writes):
    return [w for w in writes if w.context.get("frame_seq") is not None]


def test_calibration_session_pulses_hold_and_neutral(car):
    c = car.client(control=True)
    with Beats(c):
        assert c.post("/api/arm").status == 200
        wait_for(lambda: car.loop.stats.driven > 3, what="driving")
        r = c.post("/api/calibration/begin")
        assert r.status == 200 and r.json["calibrating"] is True
        assert car.loop.state.value == "disarmed" and car.loop.calibrating
        n_before = len(car.writes)
        frames = car.loop.stats.frames
        r = c.post("/api/arm")
        assert r.status == 409 and "calibrating" in r.error
        r = c.post("/api/calibration/pulse", {"channel": "servo", "ns": 1_600_000})
        assert r.status == 200 and r.json["servo"] == 1_600_000
        r = c.post("/api/calibration/pulse", {"channel": "motor", "ns": 1_400_000})
        assert r.json == {"ok": True, "servo": 1_600_000, "motor": 1_400_000}
        time.sleep(0.5)  # heartbeats arrive: the pulse is held
        during = car.writes[n_before:]
        assert car.loop.stats.frames > frames  # the loop still takes frames...
        assert loop_writes(during) == []  # ...but writes nothing
        holds = [w for w in during if w.context.get("event") == "calibrate_hold"]
        assert len(holds) >= 5 and all((w.servo_ns, w.motor_ns) == (1_600_000, 1_400_000) for w in holds)
        assert car.loop.actuator.deadline_misses == 0
    # heartbeats stopped: no more holds, the actuator watchdog writes neutral by itself
    wait_for(lambda: car.writes[-1].context.get("event") == "deadline", timeout_s=3.0,
             what="watchdog neutral")
    last = car.writes[-1]
    assert (last.servo_ns, last.motor_ns) == Calibration.defaults().neutral_ns()
    r = c.post("/api/calibration/end")
    assert r.status == 200 and r.json["calibrating"] is False
    wait_for(lambda: any(w.context.get("event") == "calibration_end" for w in car.writes),
             what="neutral on leaving")
    n = len(loop_writes(car.writes))
    wait_for(lambda: len(loop_writes(car.writes)) > n + 3, what="the loop writing again")


def test_pulses_are_validated(car):
    c = car.client(control=True)
    r = c.post("/api/calibration/pulse", {"channel": "servo", "ns": 1_500_000})
    assert r.status == 400 and "begin the calibration" in r.error
    assert c.post("/api/calibration/begin").status == 200
    for body, words in (({"channel": "servo", "ns": 3_000_000}, "500000 to 2500000"),
                        ({"channel": "servo", "ns": 1.5e6}, "integer"),
                        ({"channel": "servo", "ns": "1500000"}, "integer"),
                        ({"channel": "wheel", "ns": 1_500_000}, "servo"),
                        ({"ns": 1_500_000}, "servo")):
        r = c.post("/api/calibration/pulse", body)
        assert r.status == 400 and words in r.error, (body, r.body)
    assert not any(w.context.get("event") == "calibrate" for w in car.writes)
    c.post("/api/calibration/end")


def test_save_is_atomic_with_history_and_applied_live(car, tmp_path):
    path = tmp_path / "calibration.json"
    c = car.client(control=True)
    assert c.post("/api/calibration/begin").status == 200
    r = c.post("/api/calibration", NEW)
    assert r.status == 200, r.body
    saved = json.loads(path.read_text())["Calibration"]
    assert saved["Servo"] == NEW["servo"] and saved["Motor"] == NEW["motor"]
    assert car.loop.actuator.calibration.servo.mid_ns == 1_460_000  # applied at once
    assert r.json["servo"] == NEW["servo"]
    # a second save keeps the first in the history
    second = {**NEW, "servo": {**NEW["servo"], "mid": 1_470_000}}
    assert c.post("/api/calibration", second).status == 200
    assert len(list_history(path)) == 1
    # invalid values: 400 naming the problem, file and actuator unchanged
    text = path.read_text()
    for bad in ({**NEW, "servo": {**NEW["servo"], "min": 1_500_000}},
                {**NEW, "motor": {**NEW["motor"], "polarity": 0}},
                {"servo": NEW["servo"]},
                {**NEW, "motor": {**NEW["motor"], "extra": 1}}):
        r = c.post("/api/calibration", bad)
        assert r.status == 400, r.body
    assert path.read_text() == text and car.loop.actuator.calibration.servo.mid_ns == 1_470_000
    assert c.post("/api/calibration/end").status == 200
    # neutral on leaving uses the new calibration
    end = next(w for w in car.writes if w.context.get("event") == "calibration_end")
    assert (end.servo_ns, end.motor_ns) == (1_470_000, 1_450_000)
    assert c.get("/api/calibration").json["servo"]["mid"] == 1_470_000


def test_saving_while_armed_is_refused(car, tmp_path):
    c = car.client(control=True)
    with Beats(c):
        assert c.post("/api/arm").status == 200
        r = c.post("/api/calibration", NEW)
        assert r.status == 409 and "STOP" in r.error
    assert not (tmp_path / "calibration.json").exists()
