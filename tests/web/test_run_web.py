"""`car-runtime run --web` as a real process: refusals before driving (address taken, no
password) exit 2 with one line and outputs at neutral; `arm: true` with the deadman never
drives without the page. In-process: a dead web thread leaves the car to its deadman."""

from __future__ import annotations

import signal
import threading
import socket
import subprocess
import time

from car_runtime.actuation.calibration import Calibration
from car_runtime.actuation.recorder import read_records
from car_runtime.control.safety import State
from helpers import wait_until as wait_for
from helpers import car_runtime_cmd

NEUTRAL = Calibration.defaults().neutral_ns()


def run_cmd(tmp_path, demo_model, footage_seq_dir, *extra):
    return [*car_runtime_cmd(), "run", "--model", str(demo_model), "--camera", str(footage_seq_dir),
            "--fps", "30", "--output", f"record:{tmp_path / 'rec.jsonl'}",
            "--calibration", str(tmp_path / "cal.json"), "--status-interval", "0", *extra]


def driving(records):
    return [r for r in records if (r["servo_ns"], r["motor_ns"]) != NEUTRAL]


def test_address_in_use_exits_2_before_driving(tmp_path, demo_model, footage_seq_dir, password_file):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(run_cmd(tmp_path, demo_model, footage_seq_dir, "--arm", "--web",
                                   f"127.0.0.1:{port}", "--web-password-file", str(password_file)),
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot serve the web cockpit on 127.0.0.1:{port}: Address already in "
                      "use; pick another port (--web PORT, e.g. 8081) or stop the program using it"]
    assert "Traceback" not in r.stderr
    records = read_records(tmp_path / "rec.jsonl")
    assert records and not driving(records)


def test_no_password_file_exits_2(tmp_path, demo_model, footage_seq_dir):
    r = subprocess.run(run_cmd(tmp_path, demo_model, footage_seq_dir, "--web", "127.0.0.1:8089",
                               "--web-password-file", str(tmp_path / "none")),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert f"error: the web cockpit needs a password: no password file {tmp_path / 'none'}" in r.stderr
    assert "car-runtime web-password --file" in r.stderr and "Traceback" not in r.stderr
    assert not driving(read_records(tmp_path / "rec.jsonl"))


def test_arm_true_with_the_deadman_waits_for_the_page(tmp_path, demo_model, footage_seq_dir,
                                                      password_file):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"arm: true\nweb: 127.0.0.1:{port}\nweb_password_file: {password_file}\n"
                   f"models_dir: {tmp_path / 'models'}\n")
    p = subprocess.Popen([*run_cmd(tmp_path, demo_model, footage_seq_dir), "--config", str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3.5)  # the whole 100-frame clip at 30 fps
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    assert "arm: true ignored" in err, err
    assert "disarmed: START on the cockpit arms; arm: true is ignored" in out, out
    assert "ARMED" not in out
    records = read_records(tmp_path / "rec.jsonl")
    assert len(records) > 20 and not driving(records)


def test_no_web_drives_by_hand_with_the_service_config(tmp_path, demo_model, footage_seq_dir):
    """Over SSH with the service's config (cockpit on, deadman on): `--no-web --arm` drives, and
    no password file is needed because nothing is served."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"web: 127.0.0.1:{port}\nweb_password_file: {tmp_path / 'none'}\n")
    r = subprocess.run([*run_cmd(tmp_path, demo_model, footage_seq_dir), "--config", str(cfg),
                        "--no-web", "--arm"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "arm: true ignored" not in r.stderr
    assert driving(read_records(tmp_path / "rec.jsonl"))


def test_a_dead_web_thread_leaves_the_car_to_its_deadman(car):
    c = car.client(control=True)
    stop = []

    def beats():  # a page that keeps trying: the server no longer answers
        while not stop:
            try:
                c.post("/api/heartbeat", timeout_s=0.5)
            except OSError:
                pass
            time.sleep(0.1)

    t = threading.Thread(target=beats, daemon=True)
    t.start()
    time.sleep(0.2)
    assert c.post("/api/arm").status == 200
    wait_for(lambda: car.loop.stats.driven > 5, what="driving")
    aio = car.cockpit._aio
    aio.call_soon_threadsafe(aio.stop)  # the web thread's event loop dies
    wait_for(lambda: car.loop.state is State.DISARMED, timeout_s=3, what="deadman neutral")
    stop.append(True)
    frames = car.loop.stats.frames
    wait_for(lambda: car.loop.stats.frames > frames + 10, what="the loop keeps running")
    assert car.loop.deadman_trips == 1
    assert (car.writes[-1].servo_ns, car.writes[-1].motor_ns) == NEUTRAL
