"""The flight recorder in a live, in-process car (real loop, real OpenVINO models, a paced real
image folder, the actuator's watchdog): a model swap mid-run, a max speed that changes between
the decision and the recorder, and a writer that falls behind because its storage blocks.

Bags are read back with the ``mcap`` package / plain ``sqlite3`` (independent readers) and
verified with ``replay --verify``.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from recording_helpers import LiveRun, frames_folder, session_messages, verify_in_process

from car_runtime.recording.catalog import list_sessions


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def live(tmp_path):
    runs: list[LiveRun] = []

    def start(*args, **kwargs) -> LiveRun:
        run = LiveRun(tmp_path, *args, **kwargs)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.thread.is_alive():
            run.abort()


def test_a_model_change_mid_run_closes_the_session_and_both_verify(
        tmp_path, live, demo_model, deep_archive, footage_seq_dir):
    """DriveControls.load_model swaps the model while the car drives: two sessions, each named
    after and fingerprinted with its own model, each verified with that model."""
    frames = frames_folder(footage_seq_dir, tmp_path / "frames", 240)
    run = live(demo_model, frames)
    run.wait(lambda: run.loop.stats.driven >= 40, what="40 driven frames")
    info = run.controls.load_model(str(deep_archive))  # neutral while loading, then armed again
    assert info.name == "deep_ffc_discrete"
    run.wait(lambda: run.controls.status()["recording"]["sessions"] == 2, what="a 2nd session")
    run.finish()
    s = run.recorder.facts()
    assert s["error"] is None and s["dropped_total"] == 0

    sessions = sorted(list_sessions(run.root), key=lambda x: x.start_ns)
    assert [x.model for x in sessions] == ["demo-untrained-deep-ffc-discrete", "deep_ffc_discrete"]
    assert all(x.complete for x in sessions)
    decided = [w for w in run.writes if w.context.get("frame_seq") is not None]
    for info, model in zip(sessions, (demo_model, deep_archive)):
        assert info.name.startswith(info.model + "-")
        msgs = session_messages(info.path)
        (t_settings, settings), = msgs["/car_runtime/settings"]
        assert settings.model_name == info.model
        assert Path(settings.model_path) == model.resolve()
        assert settings.model_sha256 == _sha256(model)
        result, lines = verify_in_process(info.path)
        print(info.name, lines[-1])
        n = sum(1 for _t, a in msgs["/car_runtime/writes"] if a.decided)
        assert result.ok and result.checked == n == info.frames > 10, lines
        assert f"verified {n}/{n} frames: identical decisions" in lines[-1]
    # the frames are split between the sessions, none recorded twice; the ones not recorded are
    # the new model's first frames while the car was still disarmed (no session open yet)
    ids = [[int(m.images[0].header.frame_id) for _t, m in session_messages(x.path)
            ["/inference_pkg/rl_results"]] for x in sessions]
    assert ids[0][-1] < ids[1][0] and set(ids[0]).isdisjoint(ids[1])
    by_seq = {w.context["frame_seq"]: w for w in decided}
    gap = [by_seq[k] for k in range(ids[0][-1] + 1, ids[1][0]) if k in by_seq]
    assert all(w.context["state"] != "armed" or w.context.get("event") for w in gap)
    # while it loaded, the old model's frames (disarmed, neutral) stayed in the old session
    first_audit = [a for _t, a in session_messages(sessions[0].path)["/car_runtime/writes"]]
    assert any(a.state == "disarmed" and a.decided for a in first_audit)


def test_a_max_speed_change_between_decision_and_recorder_verifies_identical(
        tmp_path, live, demo_model, footage_seq_dir):
    """A step hook that runs before the recorder's changes the max speed every 3rd write: the
    recorder sees the new value right after a decision made with the old one. What is recorded
    is the value each decision used, so --verify finds every frame identical."""
    values = (30.0, 45.0, 60.0, 75.0)
    changes: list[int] = []
    run_ref: list[LiveRun] = []

    def changer(result, w, state):
        if result is not None and result.frame.seq % 3 == 0:
            run_ref[0].controls.set_max_speed_pct(values[len(changes) % len(values)])
            changes.append(result.frame.seq)

    frames = frames_folder(footage_seq_dir, tmp_path / "frames", 90)
    run = live(demo_model, frames, hooks_before=(changer,))
    run_ref.append(run)
    run.finish()
    (info,) = list_sessions(run.root)
    msgs = session_messages(info.path)
    settings = [m.max_speed_pct for _t, m in msgs["/car_runtime/settings"]]
    assert len(changes) >= 20 and len(settings) >= 20  # one per change of the value used
    assert set(settings) == {50.0, *values}
    # each decision's throttle over the max speed in force at its time (the settings message
    # at or before it) is one number per action: the recorded max speed is the one it used
    times = [t for t, _m in msgs["/car_runtime/settings"]]
    per_action: dict[int, set] = {}
    for t, a in msgs["/car_runtime/writes"]:
        if a.decided:
            pct = settings[int(np.searchsorted(times, t, side="right")) - 1]
            per_action.setdefault(a.action_index, set()).add(round(a.decision_throttle / pct, 12))
    assert all(len(v) == 1 for v in per_action.values()), per_action
    used = {round(a.decision_throttle, 9) for _t, a in msgs["/car_runtime/writes"] if a.decided}
    assert len(used) > len(per_action)  # the same actions drove at several max speeds
    result, lines = verify_in_process(info.path)
    print(lines[-1])
    assert result.ok and result.checked == info.frames, lines


def test_a_writer_that_falls_behind_drops_recording_entries_never_drive_frames(
        tmp_path, live, demo_model, footage_seq_dir):
    """The sqlite3 bag's database is locked by another connection (BEGIN EXCLUSIVE) for ~3 s:
    the writer blocks inside sqlite (busy wait up to its 5 s timeout), the queue fills to its
    bound and then recording entries are dropped -- counted in the status, in every later audit
    message and in metadata.yaml -- while the loop drives every frame. The writer then catches
    up and the session closes complete."""
    frames = frames_folder(footage_seq_dir, tmp_path / "frames", 240)
    limit = 30
    run = live(demo_model, frames, storage="sqlite3", queue_frames=limit)
    facts = lambda: run.controls.status()["recording"]  # noqa: E731
    run.wait(lambda: facts()["state"] == "recording" and facts()["frames"] >= 10,
             what="the session")
    db = run.root / facts()["session"] / f"{facts()['session']}.db3"
    lock = sqlite3.connect(db, timeout=0, isolation_level=None)
    deadline = time.monotonic() + 20
    while True:  # the writer holds the lock between its commits (once a second): grab it then
        try:
            lock.execute("BEGIN EXCLUSIVE")
            break
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc) and time.monotonic() < deadline, exc
            time.sleep(0.001)
    frame_at_lock = run.loop.stats.frames
    samples = []
    t_end = time.monotonic() + 3.0
    while time.monotonic() < t_end:
        samples.append(facts())
        time.sleep(0.05)
    frame_at_release = run.loop.stats.frames
    lock.execute("ROLLBACK")
    lock.close()
    code = run.finish()
    assert code == 0

    end = run.recorder.facts()
    assert end["error"] is None, end["error"]
    dropped = end["dropped_total"]
    print(f"stalled {frame_at_release - frame_at_lock} frames; queue peak "
          f"{end['queue_peak']}/{limit}; dropped {dropped}")
    assert dropped > 10
    assert max(s["queued"] for s in samples) <= limit and end["queue_peak"] <= limit  # bounded
    assert max(s["dropped_total"] for s in samples) > 0  # visible in the status while it happens

    # every frame the loop took was driven, the stall did not touch the loop
    stats = run.loop.stats
    writes = run.writes
    decided = [w for w in writes if w.context.get("frame_seq") is not None]
    assert stats.driven == stats.frames == len(decided) and stats.stale == 0
    assert all(w.context["state"] == "armed" and "event" not in w.context for w in decided)
    ages = np.array([w.context["frame_age_ms"] for w in decided])
    seqs = np.array([w.context["frame_seq"] for w in decided])
    inside = (seqs > frame_at_lock) & (seqs <= frame_at_release)
    print("frame age p50/p99 ms: during the stall %.2f/%.2f, otherwise %.2f/%.2f" % (
        *np.percentile(ages[inside], (50, 99)), *np.percentile(ages[~inside], (50, 99))))

    # the bag, read with plain sqlite3: what is missing is exactly what was counted
    (info,) = list_sessions(run.root)
    assert info.complete and info.storage == "sqlite3" and info.dropped == dropped
    meta = yaml.safe_load((info.path / "metadata.yaml").read_text())
    custom = meta["rosbag2_bagfile_information"]["custom_data"]
    assert int(custom["car_runtime.dropped"]) == dropped
    from rosbags.highlevel import AnyReader

    with AnyReader([info.path]) as reader:
        conn = [c for c in reader.connections if c.topic == "/car_runtime/writes"]
        audit = [reader.deserialize(raw, c.msgtype) for c, _t, raw in reader.messages(conn)]
    counts = [a.recording_dropped for a in audit]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == dropped
    first = next(i for i, w in enumerate(writes) if w.t_s == audit[0].t)
    assert len(audit) + dropped == len(writes) - first  # recorded + dropped = every write
    recorded_t = {a.t for a in audit}
    missing = [w for w in writes[first:] if w.t_s not in recorded_t]
    assert len(missing) == dropped
    assert all(frame_at_lock < w.context.get("frame_seq", -1) <= frame_at_release + limit
               for w in missing)  # all from the stall
    con = sqlite3.connect(info.path / f"{info.name}.db3")
    (n_frames,) = con.execute("SELECT COUNT(*) FROM messages m JOIN topics t ON "
                              "m.topic_id = t.id WHERE t.name = '/inference_pkg/rl_results'").fetchone()
    con.close()
    assert n_frames == info.frames == sum(1 for a in audit if a.decided)


def test_sessions_follow_the_community_rules_in_a_live_run(tmp_path, live, demo_model,
                                                           footage_seq_dir):
    """A short stop (armed again well within the idle time) stays in the session, disarmed
    writes included; a longer one closes it (here after 1.5 s instead of 15 s) and driving
    again opens a new one."""
    frames = frames_folder(footage_seq_dir, tmp_path / "frames", 300)
    run = live(demo_model, frames, idle_close_s=1.5)
    facts = lambda: run.controls.status()["recording"]  # noqa: E731
    driven = lambda n: lambda: run.loop.stats.driven >= n  # noqa: E731
    run.wait(driven(20), what="20 driven frames")
    assert run.controls.disarm(wait_s=2)[0]
    time.sleep(0.2)
    assert run.controls.arm(wait_s=2)[0]
    run.wait(driven(run.loop.stats.driven + 20), what="20 more")
    assert facts()["sessions"] == 1
    assert run.controls.disarm(wait_s=2)[0]
    run.wait(lambda: facts()["state"] == "waiting", what="the idle close")
    assert run.controls.arm(wait_s=2)[0]
    run.wait(driven(run.loop.stats.driven + 20), what="driving again")
    run.finish()

    first, second = sorted(list_sessions(run.root), key=lambda x: x.start_ns)
    assert first.complete and second.complete
    states = [a.state for _t, a in session_messages(first.path)["/car_runtime/writes"]]
    pause = "".join("a" if s == "armed" else "d" for s in states).strip("d")
    assert pause.count("ad") == 1 and "d" in pause  # one stop, inside the session
    audit2 = [a for _t, a in session_messages(second.path)["/car_runtime/writes"]]
    assert audit2[0].state == "armed" and audit2[0].decided  # opened by driving
    last_first = session_messages(first.path)["/car_runtime/writes"][-1][1]
    assert last_first.state == "disarmed"  # closed while it waited, not by the arm


def test_another_threads_write_between_a_loop_write_and_its_hook_keeps_its_place(
        tmp_path, live, demo_model, footage_seq_dir):
    """On the first driving frame and every 5th one a step hook that runs before the
    recorder's makes another thread write neutral (like the watchdog firing right after a
    command): that write reaches the recorder before the loop write it follows is complete.
    The bag still has every write, also the one right after the session's first, stored in
    the order the output got them (read in file order, not sorted by time)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    run_ref: list[LiveRun] = []
    driving: list[int] = []

    def interleave(result, w, state):
        if result is None or state.value != "armed":
            return
        driving.append(result.frame.seq)
        if len(driving) == 1 or result.frame.seq % 5 == 0:
            t = threading.Thread(target=run_ref[0].actuator.neutral,
                                 kwargs={"state": "fault", "event": "interleaved"})
            t.start()
            t.join()

    frames = frames_folder(footage_seq_dir, tmp_path / "frames", 60)
    run = live(demo_model, frames, hooks_before=(interleave,))
    run_ref.append(run)
    run.finish()
    (info,) = list_sessions(run.root)
    with open(info.path / f"{info.name}.mcap", "rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        audit = [m for _s, c, _m, m in reader.iter_decoded_messages(log_time_order=False)
                 if c.topic == "/car_runtime/writes"]
    writes = run.writes
    first = next(i for i, w in enumerate(writes) if w.t_s == audit[0].t)
    assert audit[0].frame_seq == driving[0] and audit[1].event == "interleaved"
    assert [(a.t, a.event, a.servo_ns, a.motor_ns) for a in audit] == [
        (w.t_s, w.context.get("event") or "", w.servo_ns, w.motor_ns) for w in writes[first:]]
    others = [i for i, a in enumerate(audit) if a.event == "interleaved"]
    assert len(others) >= 8
    assert all(audit[i - 1].decided for i in others)
    result, lines = verify_in_process(info.path)
    assert result.ok, lines


def test_a_loop_write_handed_over_by_another_thread_keeps_its_frame(
        tmp_path, live, demo_model, footage_seq_dir):
    """The actuator hands every completed write to the listeners from whichever writing thread
    is delivering at the time. Here another thread's write is delivered slowly (a listener
    holds that thread until the loop has written its next frame, as a preempted watchdog thread
    does on a loaded car), so that thread hands the loop's write to the recorder. The recorder
    still joins it with its frame and decision: every driving frame is in the bag, and it
    verifies."""
    run_ref: list[LiveRun] = []
    handed: list[int] = []  # loop writes that another thread delivered

    def hold(w):
        if w.context.get("event") != "held":
            if w.thread_id != threading.get_ident() and w.context.get("frame_seq") is not None:
                handed.append(w.context["frame_seq"])
            return
        out = run_ref[0].actuator.output
        n = len(out.writes)
        end = time.monotonic() + 2.0
        while len(out.writes) <= n and time.monotonic() < end:
            time.sleep(0.001)
        time.sleep(0.05)  # the loop's write is now waiting to be delivered

    def other_thread_writes(result, w, state):
        if result is not None and state.value == "armed" and result.frame.seq % 5 == 0:
            threading.Thread(target=run_ref[0].actuator.neutral,
                             kwargs={"state": "armed", "event": "held"}).start()

    frames = frames_folder(footage_seq_dir, tmp_path / "frames", 60)
    run = live(demo_model, frames, hooks_before=(other_thread_writes,))
    run_ref.append(run)
    run.actuator.add_write_listener(hold)
    run.finish()
    assert len(handed) >= 5, handed  # the hand-over happened, again and again
    (info,) = list_sessions(run.root)
    msgs = session_messages(info.path)
    recorded = [int(m.images[0].header.frame_id) for _t, m in msgs["/inference_pkg/rl_results"]]
    decided = [w.context["frame_seq"] for w in run.writes
               if w.context.get("frame_seq") is not None]
    assert recorded == decided and set(handed) <= set(recorded)
    result, lines = verify_in_process(info.path)
    assert result.ok, lines


def test_an_emergency_neutral_is_in_the_audit(tmp_path, live, demo_model, footage_seq_dir):
    """An emergency neutral (the shutdown paths' write around the device lock) from another
    thread mid-run is recorded with its event, in its place among the loop's writes."""
    frames = frames_folder(footage_seq_dir, tmp_path / "frames", 60)
    run = live(demo_model, frames)
    run.wait(lambda: run.loop.stats.driven >= 15, what="15 driven frames")
    assert run.actuator.emergency_neutral() == {"record": "ok"}
    run.finish()
    (info,) = list_sessions(run.root)
    audit = [a for _t, a in session_messages(info.path)["/car_runtime/writes"]]
    writes = run.writes
    first = next(i for i, w in enumerate(writes) if w.t_s == audit[0].t)
    assert len(audit) == len(writes) - first
    (k,) = [i for i, a in enumerate(audit) if a.event == "emergency"]
    assert writes[first + k].context == {"event": "emergency"}  # the record: output's line
    assert (audit[k].servo_ns, audit[k].motor_ns) == (writes[first + k].servo_ns,
                                                       writes[first + k].motor_ns)
    others = [i for i in range(len(audit)) if i != k]
    assert all(audit[i].t == writes[first + i].t_s for i in others)
