"""The ``car_runtime`` node end to end over real DDS on loopback.

``car-runtime ros`` runs in a subprocess on the bundled demo model, the real car footage (paced
at 15 fps) and a ``record:`` output; a probe node in this process finds its services and topics
by name, drives it through services and the parameter service, and the recorded PWM writes are
checked against the stock throttle formula, restated here as an independent oracle.
"""

from __future__ import annotations

import json
import signal
import tarfile
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from car_runtime.actuation.recorder import read_records  # noqa: E402

pytestmark = pytest.mark.ros

NODE = "car_runtime"
WAIT_S = 30.0


def stock_curve(x: float) -> float:
    """navigation_pkg's throttle curve for speed fraction ``x``."""
    return min(1.0, max(-1.0, -1.2 * x * x + 2.2 * x))


def demo_throttles(demo_model: Path, pct: float) -> set[float]:
    """Every throttle the demo model's actions can give at ``pct`` % max speed (rounded)."""
    with tarfile.open(demo_model) as tar:
        meta = json.load(tar.extractfile("model_metadata.json"))  # type: ignore[arg-type]
    speeds = [a["speed"] for a in meta["action_space"]]
    top = max(abs(s) for s in speeds)
    return {round(pct / 100 * stock_curve(s / top), 6) for s in speeds}


def decision(msg: Float64MultiArray) -> dict[str, float]:
    labels = msg.layout.dim[0].label.split(",")
    assert len(labels) == len(msg.data)
    return dict(zip(labels, msg.data))


def status_values(msg: DiagnosticArray) -> dict[str, str]:
    assert msg.status, "empty DiagnosticArray"
    values = {kv.key: kv.value for kv in msg.status[0].values}
    values["_message"] = msg.status[0].message
    return values


def driven(rows: list[dict]) -> list[dict]:
    """Records of decisions written while armed (non-zero throttle: every demo action moves)."""
    return [r for r in rows
            if r.get("state") == "armed" and r.get("event") is None and r["throttle"] != 0]


def test_node_over_dds(
    start_node, probe, demo_model, long_footage, calibration_file, neutral_ns, broken_model,
    slim_models, realsize_shallow_dir, tmp_path,
):
    record = tmp_path / "drive.jsonl"
    node = start_node(
        model_path=str(demo_model),
        camera=str(long_footage),
        fps=15.0,
        output=f"record:{record}",
        calibration_path=str(calibration_file),
        max_speed_pct=50.0,
        status_interval_s=0.5,
        debug_image_hz=5.0,
    )

    def wait(predicate, what, timeout_s=WAIT_S):
        def alive_and():
            if node.proc.poll() is not None:
                pytest.fail(f"node exited with {node.proc.returncode}:\n{node.log_text()}")
            return predicate()

        return probe.wait_for(alive_and, timeout_s, what)

    statuses = probe.subscribe(DiagnosticArray, f"/{NODE}/status", 10)
    decisions = probe.subscribe(Float64MultiArray, f"/{NODE}/decision", 10)
    images = probe.subscribe(Image, f"/{NODE}/debug_image", qos_profile_sensor_data)

    # -- discovery by name and type ---------------------------------------------------------------
    expected_services = {f"/{NODE}/enable": ["std_srvs/srv/SetBool"],
                         f"/{NODE}/stop": ["std_srvs/srv/Trigger"]}
    expected_topics = {f"/{NODE}/status": ["diagnostic_msgs/msg/DiagnosticArray"],
                       f"/{NODE}/decision": ["std_msgs/msg/Float64MultiArray"],
                       f"/{NODE}/debug_image": ["sensor_msgs/msg/Image"]}

    def graph_ready():
        services = dict(probe.node.get_service_names_and_types())
        topics = dict(probe.node.get_topic_names_and_types())
        return all(services.get(k) == v for k, v in expected_services.items()) and all(
            topics.get(k) == v for k, v in expected_topics.items())

    wait(graph_ready, "the node's services and topics", timeout_s=60.0)

    # -- disarmed at start: status says so, decisions flow, the wheels get neutral ----------------
    s = status_values(wait(lambda: statuses and statuses[-1], "a status message"))
    assert s["state"] == "disarmed" and s["model"] == "demo-untrained-deep-ffc-discrete"
    for key in ("fps", "frame_age_ms", "deadline_misses", "infer_p50_ms", "infer_p99_ms",
                "total_p50_ms", "total_p99_ms", "max_speed_pct"):
        assert key in s, f"status lacks {key}: {sorted(s)}"
    d = decision(wait(lambda: decisions and decisions[-1], "a decision"))
    assert d["armed"] == 0.0 and d["throttle"] == 0.0 and d["angle"] == 0.0
    assert 0 <= d["action_index"] <= 9 and d["frame_seq"] >= 1 and d["frame_age_ms"] >= 0

    # -- arm via ~/enable: decisions drive, PWM follows the stock formula at 50 % ------------------
    response = probe.call(SetBool, f"/{NODE}/enable", SetBool.Request(data=True))
    assert response.success, response.message
    n0 = len(decisions)
    armed = wait(lambda: [decision(m) for m in decisions[n0:] if decision(m)["armed"] == 1.0],
                 "armed decisions")
    at_50 = demo_throttles(demo_model, 50.0)
    for d in armed:
        if d["throttle"] == 0.0:  # only a frame that went stale while it was processed
            assert d["frame_age_ms"] > 100.0 and d["angle"] == 0.0, d
            continue
        assert round(d["throttle"], 6) in at_50, d
        assert d["angle"] == pytest.approx(d["steering_angle_deg"] / 30.0)
        assert abs(d["frame_stamp_s"] - time.time()) < 10.0  # ROS (wall) time, not monotonic
    seqs = [d["frame_seq"] for d in armed]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    wait(lambda: len(driven(read_records(record))) >= 5, "driven records")

    img = wait(lambda: images and images[-1], "a debug image")
    assert (img.encoding, img.height, img.width, img.step) == ("mono8", 120, 160, 160)
    assert len(img.data) == 120 * 160 and len(set(bytes(img.data))) > 10  # a real picture

    # -- max_speed_pct applies live: throttle changes in the recorded writes ----------------------
    before = len(read_records(record))
    result = probe.set_parameter(NODE, "max_speed_pct", 20.0)
    assert result.successful, result.reason
    at_20 = demo_throttles(demo_model, 20.0)
    assert not at_20 & at_50
    wait(lambda: len(driven(read_records(record)[before:])) >= 6, "driven records at 20 %")
    rows = read_records(record)
    assert all(round(r["throttle"], 6) in at_50 for r in driven(rows[:before]))
    after = driven(rows[before:])[1:]  # one frame may have been decided before the change
    assert after and all(round(r["throttle"], 6) in at_20 for r in after), after
    n0 = len(statuses)
    wait(lambda: [m for m in statuses[n0:] if status_values(m)["max_speed_pct"] == "20.0"],
         "status showing max_speed_pct 20")

    # -- refused changes keep everything as it was ------------------------------------------------
    result = probe.set_parameter(NODE, "max_speed_pct", 150.0)
    assert not result.successful and "max_speed_pct" in result.reason
    result = probe.set_parameter(NODE, "camera", "0")
    assert not result.successful and "restart" in result.reason

    # -- a broken model is refused with the reason; the old one keeps driving ---------------------
    before = len(read_records(record))
    result = probe.set_parameter(NODE, "model_path", str(broken_model))
    assert not result.successful
    assert "model.pb" in result.reason, result.reason

    def events() -> list:
        return [r.get("event") for r in read_records(record)[before:]]

    # neutral while loading, then the armed state restored (applied by the loop's next pass)
    wait(lambda: "disarm" in events() and "arm" in events()[events().index("disarm"):],
         "a disarm (neutral) then an arm record around the load")
    n0 = len(decisions)
    d = decision(wait(lambda: [m for m in decisions[n0:] if decision(m)["armed"] == 1.0
                               and decision(m)["throttle"] != 0.0],
                      "armed, driving decisions after the refused model")[-1])
    assert round(d["throttle"], 6) in at_20 and d["action_index"] <= 9
    n0 = len(statuses)
    s = status_values(wait(lambda: statuses[n0:] and statuses[-1], "a status after the refusal"))
    assert s["model"] == "demo-untrained-deep-ffc-discrete" and s["model_loading"] == ""

    stereo = slim_models["shallow_stereo_discrete_slim"]
    result = probe.set_parameter(NODE, "model_path", str(stereo))
    assert not result.successful and "camera" in result.reason, result.reason

    # -- a good model swaps in without stopping the node ------------------------------------------
    result = probe.set_parameter(NODE, "model_path", str(realsize_shallow_dir))
    assert result.successful, result.reason
    n0 = len(statuses)
    wait(lambda: any(status_values(m)["model"] == "shallow_ffc_discrete_realsize"
                     and status_values(m)["state"] == "armed" for m in statuses[n0:]),
         "status naming the new model, armed")
    n0 = len(decisions)
    new = wait(lambda: [decision(m) for m in decisions[n0:]
                        if decision(m)["armed"] == 1.0 and decision(m)["throttle"] != 0.0][2:],
               "decisions from the new model")
    # 5 actions, all at the top speed: throttle = 20 % * curve(1) = 0.2
    assert all(d["action_index"] <= 4 and d["throttle"] == pytest.approx(0.2) for d in new)

    # -- ~/stop: neutral and disarmed --------------------------------------------------------------
    before = len(read_records(record))
    response = probe.call(Trigger, f"/{NODE}/stop", Trigger.Request())
    assert response.success, response.message
    wait(lambda: len(read_records(record)) >= before + 5, "records after stop")
    rows = read_records(record)[before:]
    stop_at = next(i for i, r in enumerate(rows) if r.get("event") == "stop")
    assert all((r["servo_ns"], r["motor_ns"]) == neutral_ns for r in rows[stop_at:])
    assert not driven(rows[stop_at:])
    n0 = len(decisions)
    d = decision(wait(lambda: decisions[n0 + 1:] and decisions[-1], "a decision after stop"))
    assert d["armed"] == 0.0 and d["throttle"] == 0.0

    # -- SIGINT while driving: the process exits and the last write is neutral --------------------
    response = probe.call(SetBool, f"/{NODE}/enable", SetBool.Request(data=True))
    assert response.success, response.message
    before = len(read_records(record))
    wait(lambda: driven(read_records(record)[before:]), "driving again")
    assert node.interrupt() == 128 + signal.SIGINT, node.log_text()
    last = read_records(record)[-1]
    assert (last["servo_ns"], last["motor_ns"]) == neutral_ns, last
    assert (last["angle"], last["throttle"]) == (0.0, 0.0)
    assert "Traceback" not in node.log_text()


def test_sigterm_while_armed_exits_143_at_neutral(
    start_node, demo_model, long_footage, calibration_file, neutral_ns, tmp_path
):
    """``systemctl stop`` sends SIGTERM: same supervision as ``car-runtime run``."""
    record = tmp_path / "drive.jsonl"
    node = start_node(model_path=str(demo_model), camera=str(long_footage), fps=15.0,
                      output=f"record:{record}", calibration_path=str(calibration_file), arm=True)
    deadline = time.monotonic() + WAIT_S
    while not (record.exists() and driven(read_records(record))):
        assert node.proc.poll() is None, node.log_text()
        assert time.monotonic() < deadline, "the node never drove"
        time.sleep(0.1)
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(30) == 128 + signal.SIGTERM, node.log_text()
    last = read_records(record)[-1]
    assert (last["servo_ns"], last["motor_ns"]) == neutral_ns and last["throttle"] == 0.0


def test_end_of_input_exits_0_at_neutral(
    start_node, demo_model, footage_seq_dir, calibration_file, neutral_ns, tmp_path
):
    record = tmp_path / "drive.jsonl"
    node = start_node(model_path=str(demo_model), camera=str(footage_seq_dir), fps=50.0,
                      output=f"record:{record}", calibration_path=str(calibration_file), arm=True)
    assert node.proc.wait(60) == 0, node.log_text()
    rows = read_records(record)
    assert driven(rows), "nothing was driven"
    assert (rows[-1]["servo_ns"], rows[-1]["motor_ns"]) == neutral_ns
    assert "end of input" in node.log_text()


def test_record_dir_parameter_leaves_a_bag(
    start_node, demo_model, footage_seq_dir, calibration_file, tmp_path
):
    """Every run on the car leaves a bag: the node records like ``run --record``."""
    from car_runtime.recording.catalog import list_sessions

    record, bags = tmp_path / "drive.jsonl", tmp_path / "bags"
    node = start_node(model_path=str(demo_model), camera=str(footage_seq_dir), fps=50.0,
                      output=f"record:{record}", calibration_path=str(calibration_file), arm=True,
                      record_dir=str(bags))
    assert node.proc.wait(60) == 0, node.log_text()
    (session,) = list_sessions(bags)
    assert session.complete and session.frames == len(
        [r for r in read_records(record) if r.get("frame_seq") is not None])
    assert session.model == "demo-untrained-deep-ffc-discrete"
    from rosbags.highlevel import AnyReader

    with AnyReader([session.path]) as reader:  # the bag's own definitions
        conns = [c for c in reader.connections if c.topic == "/car_runtime/writes"]
        events = [reader.deserialize(raw, c.msgtype).event for c, _t, raw in reader.messages(conns)]
    assert events[-2:] == ["exit", "close"]  # the actuator's final neutral is in the bag too
