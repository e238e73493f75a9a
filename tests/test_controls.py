"""The loop's adapter surface with real parts: step hooks, the deadman, and DriveControls
(arm/stop/max speed, model loads at neutral that keep the old model on failure).

A paced real image-folder source feeds a real OpenVINO model; a real recorder output captures
every write. No adapter is faked: the hook and the heartbeats are plain callables and calls.
"""

from __future__ import annotations

import threading
import time

import pytest

from car_runtime.actuation.calibration import Calibration
from car_runtime.actuation.output import Actuator, open_output
from car_runtime.config import RunConfig
from car_runtime.control.safety import ExitCode, State
from car_runtime.controls import DriveControls, ModelInfo, ModelLoader
from car_runtime.errors import BusyError, ConfigError, ModelError
from car_runtime.runtime import DriveLoop
from car_runtime.vision.sources import ImageFolderSource
from helpers import wait_until

CAL = Calibration.defaults()
NEUTRAL = CAL.neutral_ns()


class Running:
    """A DriveLoop over the real footage, running in a thread, with its DriveControls."""

    def __init__(self, model_path, footage, *, fps: float = 30.0, loop_frames: int = 100_000,
                 **loop_kwargs) -> None:
        self.cfg = RunConfig(model=str(model_path), output="record:")
        self.loader = ModelLoader(self.cfg)
        loaded, pipeline = self.loader.load(str(model_path))
        self.actuator = Actuator(open_output("record:", CAL), CAL, deadline_s=0.5)
        self.source = _Looping(footage, fps=fps, frames=loop_frames)
        self.loop = DriveLoop(self.source, pipeline, self.actuator, max_frame_age_s=1.0,
                              **loop_kwargs)
        self.controls = DriveControls(self.loop, self.loader, ModelInfo.of(loaded, model_path))
        self.code: list[int] = []
        self.thread = threading.Thread(target=lambda: self.code.append(self.loop.run()))
        self.thread.start()

    @property
    def writes(self):
        return list(self.actuator.output.writes)

    def close(self) -> int:
        self.loop.request_stop(ExitCode.OK, "test over")
        self.thread.join(10)
        self.actuator.close()
        self.source.close()
        self.loader.close()
        return self.code[0]


class _Looping(ImageFolderSource):
    """The footage folder played over and over (a camera that never ends)."""

    def __init__(self, path, *, fps: float, frames: int) -> None:
        super().__init__(path, fps=fps)
        self._files = [self._files[0] * (frames // len(self._files[0]) + 1)]
        self.frame_count = len(self._files[0])


wait_for = wait_until


@pytest.fixture
def running(demo_model, footage_seq_dir):
    runs = []

    def start(**kwargs) -> Running:
        r = Running(demo_model, footage_seq_dir, **kwargs)
        runs.append(r)
        return r

    yield start
    for r in runs:
        if r.thread.is_alive() or r.code == []:
            r.close()


def driving(w) -> bool:
    return (w.servo_ns, w.motor_ns) != NEUTRAL


# -- step hooks --------------------------------------------------------------------------------

def test_every_hook_sees_every_write_and_a_failing_hook_is_dropped(running):
    seen_a, seen_b = [], []
    boom = {"n": 0}

    def failing(result, w, state):
        boom["n"] += 1
        raise RuntimeError("adapter bug")

    r = running()
    r.loop.add_step_hook(lambda res, w, s: seen_a.append(w))
    r.loop.add_step_hook(failing)
    r.loop.add_step_hook(lambda res, w, s: seen_b.append((res, w, s)))
    r.controls.arm()
    wait_for(lambda: r.loop.stats.driven >= 10, what="10 driven frames")
    assert r.close() == ExitCode.OK
    assert boom["n"] == 1 and r.loop.hook_errors == 1  # called once, then removed
    assert r.loop.state is State.DISARMED
    # Both healthy hooks saw the same writes, in order; decisions carry their step result.
    assert [id(w) for w in seen_a][-len(seen_b):] == [id(w) for _, w, _ in seen_b]
    decided = [(res, w) for res, w, _ in seen_b if res is not None]
    assert decided and all(w.context["frame_seq"] == res.frame.seq for res, w in decided)
    assert any(driving(w) for _, w in decided)


def test_a_new_state_is_published_only_after_its_neutral_is_written(running):
    """Whoever reads ``loop.state`` (a page, a ROS client, a test) and sees ``disarmed`` sees a car
    whose outputs are already at neutral: the write lands first, then the state changes."""
    r = running()
    published_at_write = {}

    def on_write(w):  # runs in the writing thread, right after the write
        event = w.context.get("event")
        if event in ("arm", "stop", "exit") and event not in published_at_write:
            published_at_write[event] = r.loop.state

    r.actuator.add_write_listener(on_write)
    r.controls.arm()
    wait_for(lambda: r.loop.stats.driven >= 5, what="driving")
    r.loop.stop_driving()
    wait_for(lambda: r.loop.state is State.DISARMED, what="stopped")
    # The STOP write is already on the outputs the moment the state reads DISARMED.
    stop = [w for w in r.writes if w.context.get("event") == "stop"]
    assert len(stop) == 1 and not driving(stop[0]) and stop[0].context["state"] == "disarmed"
    assert r.close() == ExitCode.OK
    assert published_at_write == {"arm": State.DISARMED, "stop": State.ARMED,
                                  "exit": State.DISARMED}


# -- the deadman -------------------------------------------------------------------------------

def test_deadman_refuses_to_arm_without_heartbeat_and_disarms_when_they_stop(running):
    r = running()
    r.loop.set_deadman(0.2)
    ok, msg = r.controls.arm(wait_s=0.5)
    assert not ok and "heartbeat" in msg
    assert not any(driving(w) for w in r.writes)

    stop_beating = threading.Event()

    def beat():
        while not stop_beating.is_set():
            r.loop.heartbeat()
            time.sleep(0.05)

    beater = threading.Thread(target=beat)
    beater.start()
    try:
        ok, msg = r.controls.arm(wait_s=2.0)
        assert ok, msg
        wait_for(lambda: r.loop.stats.driven >= 10, what="driving under heartbeats")
        assert r.loop.state is State.ARMED
    finally:
        stop_beating.set()
        beater.join()
    last_beat = time.monotonic()
    wait_for(lambda: r.loop.state is State.DISARMED, timeout_s=3.0, what="deadman disarm")
    disarmed_after_s = time.monotonic() - last_beat
    writes = r.writes
    link_lost = [w for w in writes if w.context.get("event") == "link_lost"]
    assert len(link_lost) == 1 and not driving(link_lost[0])
    after = writes[writes.index(link_lost[0]):]
    assert not any(driving(w) for w in after)
    assert r.loop.deadman_trips == 1
    print(f"deadman 200 ms: disarmed {disarmed_after_s * 1e3:.0f} ms after the last heartbeat")
    assert r.close() == ExitCode.OK


def test_deadman_off_keeps_driving_without_heartbeats(running):
    r = running(armed=True)
    wait_for(lambda: r.loop.stats.driven >= 20, what="driving")
    assert r.loop.state is State.ARMED and r.loop.deadman_trips == 0
    r.close()


# -- DriveControls -----------------------------------------------------------------------------

def test_max_speed_is_validated_and_live(running):
    r = running(armed=True)
    for bad in (-1, 101, float("nan"), "50", True, None):
        with pytest.raises(ConfigError, match="0 to 100"):
            r.controls.set_max_speed_pct(bad)
    r.controls.set_max_speed_pct(0)
    n = r.loop.stats.driven
    wait_for(lambda: r.loop.stats.driven >= n + 10, what="driving at 0 %")
    recent = [w for w in r.writes[-5:] if w.context.get("frame_seq") is not None]
    assert recent and all(w.throttle == 0.0 for w in recent)
    assert r.controls.status()["max_speed_pct"] == 0.0
    r.close()


def test_model_load_swaps_at_neutral_and_restores_arming(running, tiny_model):
    r = running()
    r.controls.arm(wait_s=2.0)
    wait_for(lambda: r.loop.stats.driven >= 5, what="driving")
    new = tiny_model(fmt="pb", n_outputs=3)
    info = r.controls.load_model(new.dir)
    assert info.name == new.dir.name and r.controls.model is info
    assert r.controls.status()["model"] == new.dir.name
    wait_for(lambda: r.loop.pipeline.policy.metadata.action_space.size == 3, what="swap")

    def disarmed_then_rearmed():
        # The swap and the queued disarm/arm are applied in one loop iteration, in that order:
        # wait for the writes rather than for a state the loop may not have left yet.
        writes = r.writes
        disarm = next((i for i, w in enumerate(writes) if w.context.get("event") == "disarm"), None)
        rearm = next((i for i, w in enumerate(writes)
                      if disarm is not None and i > disarm and w.context.get("event") == "arm"), None)
        return (writes, disarm, rearm) if rearm is not None else None

    writes, disarm, rearm = wait_for(disarmed_then_rearmed, what="neutral during the load, then re-armed")
    assert r.loop.state is State.ARMED
    assert not any(driving(w) for w in writes[disarm:rearm])  # neutral during the load
    n = r.loop.stats.driven
    wait_for(lambda: r.loop.stats.driven >= n + 5, what="driving with the new model")
    r.close()


def test_failed_model_load_keeps_the_old_model(running, tmp_path):
    r = running()
    old = r.loop.pipeline
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"not a tar at all")
    with pytest.raises(ModelError, match="broken.tar.gz"):
        r.controls.load_model(bad)
    assert r.controls.loading is None and r.controls.model.name == "demo-untrained-deep-ffc-discrete"
    time.sleep(0.1)
    assert r.loop.pipeline is old
    r.close()


def test_second_load_while_loading_is_busy(running, tiny_model):
    r = running()
    started = threading.Event()
    release = threading.Event()
    # Occupy the model thread so the first load is still "loading" when the second arrives.
    r.loader._thread.submit(lambda: (started.set(), release.wait(10)))
    started.wait(5)
    first = threading.Thread(target=r.controls.load_model, args=(tiny_model(fmt="pb").dir,))
    first.start()
    wait_for(lambda: r.controls.loading is not None, what="the first load to start")
    status = r.controls.status()
    assert status["loading"]["name"] == tiny_model(fmt="pb").dir.name
    with pytest.raises(BusyError, match="is loading"):
        r.controls.load_model(tiny_model(fmt="pb").dir)
    release.set()
    first.join(30)
    assert r.controls.loading is None
    r.close()


def test_status_includes_registered_facts_and_survives_a_broken_one(running):
    r = running()
    r.controls.add_facts("recording", lambda: {"session": "x", "dropped": 0})
    r.controls.add_facts("broken", lambda: 1 / 0)
    s = r.controls.status()
    assert s["recording"] == {"session": "x", "dropped": 0}
    assert "ZeroDivisionError" in s["broken"]["error"]
    assert s["model"] == "demo-untrained-deep-ffc-discrete" and s["loading"] is None
    assert r.controls.fact("recording") == {"session": "x", "dropped": 0}  # one fact alone
    assert r.controls.fact("broken") is None and r.controls.fact("absent") is None
    r.close()
