"""`car-runtime run --record` on real footage: the bag, read back by independent readers."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from recording_helpers import (COMMUNITY_MSGS, SESSION_RE, frames_folder, mcap_messages, read_jsonl,
                      run_recorded)

from helpers import car_runtime_cmd

SHARED = ("t", "angle", "throttle", "servo_ns", "motor_ns", "frame_seq", "frame_age_ms", "state",
          "event")


def _as_record(a) -> dict:
    """An audit message as the record: output writes it (the shared keys)."""
    return {"t": a.t, "angle": a.angle, "throttle": a.throttle, "servo_ns": a.servo_ns,
            "motor_ns": a.motor_ns, "frame_seq": None if a.frame_seq < 0 else a.frame_seq,
            "frame_age_ms": None if math.isnan(a.frame_age_ms) else a.frame_age_ms,
            "state": a.state or None, "event": a.event or None}


def _session(recorded) -> Path:
    sessions = recorded.sessions
    assert len(sessions) == 1, sessions
    return sessions[0]


def test_session_folder_is_named_and_complete(recorded):
    s = _session(recorded)
    m = re.match(SESSION_RE, s.name)
    assert m and m["model"] == "demo-untrained-deep-ffc-discrete", s.name
    assert (s / "metadata.yaml").is_file()
    assert (s / f"{s.name}.mcap").is_file()


def test_topics_and_types_with_the_mcap_package(recorded):
    msgs = mcap_messages(_session(recorded) / f"{_session(recorded).name}.mcap")
    types = {t: schema for t, schema, _, _ in msgs}
    assert types == {
        "/inference_pkg/rl_results": "deepracer_interfaces_pkg/msg/InferResultsArray",
        "/deepracer_navigation_pkg/auto_drive": "deepracer_interfaces_pkg/msg/ServoCtrlMsg",
        "/car_runtime/writes": "car_runtime_msgs/msg/DriveWrite",
        "/car_runtime/settings": "car_runtime_msgs/msg/RunSettings",
    }
    settings = [m for t, _, _, m in msgs if t == "/car_runtime/settings"]
    assert len(settings) == 1
    st = settings[0]
    assert st.model_name == "demo-untrained-deep-ffc-discrete"
    assert st.max_speed_pct == 50.0 and st.preprocess == "stock" and st.precision == "f32"
    import hashlib

    assert st.model_sha256 == hashlib.sha256(Path(st.model_path).read_bytes()).hexdigest()
    assert '"openvino"' in st.versions_json and st.cpu


def test_frames_are_the_cameras_bytes_with_counters_and_one_result_per_action(recorded):
    msgs = mcap_messages(_session(recorded) / f"{_session(recorded).name}.mcap")
    results = [m for t, _, _, m in msgs if t == "/inference_pkg/rl_results"]
    files = sorted(recorded.frames_dir.glob("*.jpg"))
    driven = [ln for ln in read_jsonl(recorded.jsonl) if ln.get("frame_seq") is not None]
    assert len(results) == len(driven) > 50  # (a loaded machine may skip frames in the slot)
    ids = [int(r.images[0].header.frame_id) for r in results]
    assert ids == [ln["frame_seq"] for ln in driven]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # counters increase
    for r in results:
        f = files[int(r.images[0].header.frame_id) - 1]  # frame counter k = the k-th file
        assert len(r.images) == 1 and r.images[0].format == "jpeg"
        assert bytes(r.images[0].data) == f.read_bytes()  # as captured, no re-encode
        assert [x.class_label for x in r.results] == list(range(10))  # one per action
        probs = np.array([x.class_prob for x in r.results])
        assert abs(probs.sum() - 1.0) < 1e-4
    stamps = [r.images[0].header.stamp.sec + r.images[0].header.stamp.nanosec / 1e9
              for r in results]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert stamps[0] > 1.6e9  # wall-clock epoch, not monotonic
    drive = [m for t, _, _, m in msgs if t == "/deepracer_navigation_pkg/auto_drive"]
    assert len(drive) == len(results)
    assert [(d.source_stamp.sec, d.source_stamp.nanosec) for d in drive] == [
        (r.images[0].header.stamp.sec, r.images[0].header.stamp.nanosec) for r in results]


def test_audit_matches_the_record_output_write_for_write(recorded):
    msgs = mcap_messages(_session(recorded) / f"{_session(recorded).name}.mcap")
    audit = [m for t, _, _, m in msgs if t == "/car_runtime/writes"]
    lines = read_jsonl(recorded.jsonl)
    first = next(i for i, ln in enumerate(lines) if ln["t"] == audit[0].t)
    span = lines[first:]  # from the session's first write to the actuator's final neutral
    # (a deadline miss on a loaded machine adds a watchdog write to both: still write for write)
    assert len(span) == len(audit)

    for a, ln in zip(audit, span):
        assert _as_record(a) == {k: ln.get(k) for k in SHARED}
    decided = [a for a in audit if a.decided]
    assert len(decided) == sum(ln.get("frame_seq") is not None for ln in lines)
    assert [a.event for a in audit[-2:]] == ["exit", "close"]  # the loop's, then the actuator's
    rl = [m for t, _, _, m in msgs if t == "/inference_pkg/rl_results"]
    for a, r in zip(decided, rl):
        assert a.frame_seq == int(r.images[0].header.frame_id)
        assert a.action_index == int(np.argmax([x.class_prob for x in r.results]))
        assert np.array_equal(np.asarray(a.output, np.float32),
                              np.array([x.class_prob for x in r.results], np.float32))


def test_audit_has_every_write_also_the_watchdogs(tmp_path, demo_model, footage_seq_dir):
    """A slow camera (5 fps): 100 ms after each command the actuator's watchdog writes neutral
    from its own thread (a deadline miss). The audit topic has every write of the record: output
    from the session's first on, in order and with the same values: the loop's, the watchdog's
    and the actuator's final neutral."""
    frames = frames_folder(footage_seq_dir, tmp_path / "frames", 20)
    run = run_recorded(tmp_path, demo_model, frames, fps=5)
    assert run.proc.returncode == 0, run.proc.stderr
    (session,) = run.sessions
    audit = [m for t, _, _, m in mcap_messages(session / f"{session.name}.mcap")
             if t == "/car_runtime/writes"]
    lines = read_jsonl(run.jsonl)
    first = next(i for i, ln in enumerate(lines) if ln["t"] == audit[0].t)
    assert [_as_record(a) for a in audit] == [{k: ln.get(k) for k in SHARED}
                                              for ln in lines[first:]]
    misses = [a for a in audit if a.event == "deadline"]
    print(f"{len(audit)} writes recorded, {len(misses)} of them the watchdog's")
    assert len(misses) >= 10 and all(a.state == "fault" and not a.decided for a in misses)
    assert audit[-1].deadline_misses == sum(ln["event"] == "deadline" for ln in lines)
    assert [a.event for a in audit[-2:]] == ["exit", "close"]


def test_pixels_from_a_video_are_jpeg_encoded_and_verify_says_so(tmp_path, demo_model,
                                                                 footage_seq_dir):
    """A video file delivers decoded pixels, not the camera's bytes: the recorder JPEG-encodes
    them (format ``bgr8; jpeg compressed bgr8``, image_transport's name) and --verify, which can
    only decide from that lossy copy, says so and keeps any difference there apart."""
    import cv2

    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    originals = [cv2.imread(str(p)) for p in sorted(footage_seq_dir.glob("*.jpg"))[:60]]
    for img in originals:
        writer.write(img)
    writer.release()
    run = run_recorded(tmp_path, demo_model, video)
    assert run.proc.returncode == 0, run.proc.stderr
    (session,) = run.sessions
    results = [m for t, _, _, m in mcap_messages(session / f"{session.name}.mcap")
               if t == "/inference_pkg/rl_results"]
    assert len(results) > 50
    for r in results:
        (img,) = r.images
        assert img.format == "bgr8; jpeg compressed bgr8"
        decoded = cv2.imdecode(np.frombuffer(bytes(img.data), np.uint8), cv2.IMREAD_COLOR)
        original = originals[int(img.header.frame_id) - 1]
        assert decoded.shape == original.shape  # (a lossy copy of the frame: close, not equal)
        assert cv2.PSNR(decoded, original) > 25
    out = subprocess.run([*car_runtime_cmd(), "replay", str(session), "--verify"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    n = len(results)
    assert f"{n} of the frames were JPEG-encoded by the recorder" in out.stdout
    m = re.search(rf"verified (\d+)/{n} frames: identical decisions", out.stdout)
    assert m and int(m[1]) >= n - 5, out.stdout  # (JPEG rarely flips a decision)
    print(out.stdout.strip().splitlines()[-1])


def test_plain_rosbags_with_msg_text_from_the_test(recorded):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = {}
    for name, text in COMMUNITY_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    with AnyReader([_session(recorded)], default_typestore=store) as reader:
        conns = [c for c in reader.connections if c.topic in (
            "/inference_pkg/rl_results", "/deepracer_navigation_pkg/auto_drive")]
        counts = {c.topic: c.msgcount for c in conns}
        n = sum(ln.get("frame_seq") is not None for ln in read_jsonl(recorded.jsonl))
        assert counts == {"/inference_pkg/rl_results": n, "/deepracer_navigation_pkg/auto_drive": n}
        for conn, _t, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)  # our test's definitions, not the bag's
            if conn.topic == "/deepracer_navigation_pkg/auto_drive":
                assert -1.0 <= msg.angle <= 1.0 and 0.0 <= msg.throttle <= 0.5


def test_runs_lists_the_session(recorded):
    out = subprocess.run([*car_runtime_cmd(), "runs", str(recorded.root)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    row = out.stdout.splitlines()[1].split()
    assert row[0] == _session(recorded).name and row[1] == "demo-untrained-deep-ffc-discrete"
    n = sum(ln.get("frame_seq") is not None for ln in read_jsonl(recorded.jsonl))
    assert row[6] == str(n) and row[7] == "0" and "TORN" not in out.stdout  # date, time, "3.3 s"


def test_replay_verify_identical(recorded):
    out = subprocess.run([*car_runtime_cmd(), "replay", str(_session(recorded)), "--verify"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    n = sum(ln.get("frame_seq") is not None for ln in read_jsonl(recorded.jsonl))
    assert f"verified {n}/{n} frames: identical decisions" in out.stdout


def test_replay_verify_names_a_tampered_frame(recorded, tmp_path):
    """Rewrite the bag with one recorded decision changed: verify must fail on that frame."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer

    src = _session(recorded)
    dst = tmp_path / src.name
    with AnyReader([src]) as reader:
        store = reader.typestore
        writes = [c for c in reader.connections if c.topic == "/car_runtime/writes"][0]
        target_seq = None
        with Writer(dst, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
            conns = {c.id: writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data,
                                                 rihs01=c.digest) for c in reader.connections}
            decided = 0
            for conn, t, raw in reader.messages():
                if conn.id == writes.id:
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                    if msg.decided:
                        decided += 1
                        if decided == 42:
                            target_seq = msg.frame_seq
                            msg.action_index = (msg.action_index + 1) % 10
                            raw = store.serialize_cdr(msg, conn.msgtype)
                writer.write(conns[conn.id], t, raw)
    out = subprocess.run([*car_runtime_cmd(), "replay", str(dst), "--verify"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "decisions differ on 1/" in out.stdout
    assert f"frame 41 (frame_id {target_seq})" in out.stdout
    assert "recomputed action" in out.stdout


def test_verify_refuses_a_bag_without_the_audit_topic(recorded, tmp_path):
    """A community-shaped bag (rl_results only): replay works, --verify says why it cannot."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer

    dst = tmp_path / "community-bag"
    with AnyReader([_session(recorded)]) as reader:
        with Writer(dst, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
            keep = [c for c in reader.connections if c.topic == "/inference_pkg/rl_results"]
            out_conn = writer.add_connection(keep[0].topic, keep[0].msgtype,
                                             msgdef=keep[0].msgdef.data, rihs01=keep[0].digest)
            for _c, t, raw in reader.messages(connections=keep):
                writer.write(out_conn, t, raw)
    cmd = [*car_runtime_cmd(), "replay", str(dst)]
    out = subprocess.run([*cmd, "--verify"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot verify") and "Traceback" not in out.stderr
    assert "/car_runtime/writes" in err[0]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--model is required" in out.stderr
    model = _settings_model(recorded)
    out = subprocess.run([*cmd, "--model", model], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "replayed " in out.stdout, out.stderr


def _settings_model(recorded) -> str:
    msgs = mcap_messages(_session(recorded) / f"{_session(recorded).name}.mcap")
    return next(m.model_path for t, _, _, m in msgs if t == "/car_runtime/settings")
