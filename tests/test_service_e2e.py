"""End to end: after `install-service`, the service's sandbox lets the cockpit upload and
delete models, save the calibration, and the recorder record a session, and nothing else.

No systemd runs here, so the test builds what the unit asks systemd for, from the installed
unit itself: a private mount namespace where the whole file system is read-only
(ProtectSystem=strict) except StateDirectory and the unit's ReadWritePaths (a missing '-' path
skipped), with UMask=0027, and `car-runtime run --config` (the unit's ExecStart) running as an
unprivileged user (``nobody`` standing in for ``car-runtime``, whose account does not exist
here). The staged tree is mounted over /opt and /var/lib, so the config holds the car's real
paths. A real process, real HTTP, real permission bits and mount flags; needs root."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from car_runtime.actuation.calibration import Calibration, dumps_stock, list_history
from car_runtime.cli import install_service as inst
from car_runtime.control.safety import ExitCode
from car_runtime.recording import list_sessions
from car_runtime.service_access import unit_writable_paths
from helpers import UNPRIVILEGED, as_unprivileged, can_switch_user, open_tmp_dir

sys.path.insert(0, str(Path(__file__).resolve().parent / "web"))
from webclient import Client  # noqa: E402  (the cockpit tests' HTTP client)

EXE = str(Path(sys.executable).parent / "car-runtime")
NOBODY = (65534, 65534)


def _namespaces_work() -> bool:
    if not can_switch_user() or shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        "mount -o remount,bind,ro / && ! touch /proc/self/nonexistent-probe"],
                       capture_output=True, timeout=30)
    return r.returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces_work(),
                                reason="needs root, setpriv and mount namespaces")

SANDBOX = r"""
set -e
P="$1"; shift
mount --bind "$P/opt" /opt
mount --bind "$P/var/lib" /var/lib
# ProtectSystem=strict: everything read-only (here: / and the two staged trees)
for m in / /opt /var/lib; do mount -o remount,bind,ro "$m"; done
# StateDirectory= and ReadWritePaths= ('-': skipped when missing)
while [ "$1" != "--" ]; do
    if [ -e "$1" ]; then mount --bind "$1" "$1"; mount -o remount,bind,rw "$1"; fi
    shift
done
shift
umask 0027
cd /var/lib/car-runtime
exec "$@"
"""


def sandboxed(prefix: Path, unit_text: str, argv: list[str]) -> list[str]:
    """``argv`` inside the sandbox the unit describes (argv decides the user)."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", SANDBOX, "sandbox",
            str(prefix), *unit_writable_paths(unit_text), "--", *argv]


@pytest.fixture
def car(demo_model, footage_seq_dir):
    """A staged car: the README's first steps done (model copied in with sudo, so the models
    folder is root's), the stock calibration (root's 0644) next to a root-run stock script,
    ~50 s of camera frames; a config with the car's own paths."""
    base = open_tmp_dir()
    models = base / "opt/car-runtime/models"
    models.mkdir(parents=True)
    shutil.copy(demo_model, models / "demo.tar.gz")
    shutil.copy(demo_model, models / "old.tar.gz")
    deepracer = base / "opt/aws/deepracer"
    deepracer.mkdir(parents=True)
    (deepracer / "calibration.json").write_text(dumps_stock(Calibration.defaults()))
    (deepracer / "start_ros.sh").write_text("#!/bin/sh\n")
    (base / "var/lib").mkdir(parents=True)
    frames = base / "frames"
    frames.mkdir()
    source = sorted(footage_seq_dir.glob("*.jpg"))
    for i in range(1500):
        (frames / f"{i:06d}.jpg").symlink_to(source[i % len(source)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = base / "etc/car-runtime/config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(
        "model: /opt/car-runtime/models/demo.tar.gz\n"
        f"camera: {frames}\nfps: 30\n"
        "output: record:/var/lib/car-runtime/drive.jsonl\n"
        "calibration: /opt/aws/deepracer/calibration.json\n"
        f"web: 127.0.0.1:{port}\n"
        "web_password_file: /var/lib/car-runtime/web-password\n"
        "web_deadman_ms: 0\nweb_video_fps: 0\n"
        "models_dir: /opt/car-runtime/models\n"
        "record_dir: /opt/aws/deepracer/logs\n"
        "status_interval_s: 0\n")
    yield base, config, port
    shutil.rmtree(base)


def install(prefix: Path, capsys) -> str:
    """install-service into ``prefix`` with nobody as the service user; the printed password."""
    code = inst.run(argparse.Namespace(prefix=str(prefix), dry_run=False, exe=EXE,
                                       user=UNPRIVILEGED[0]))
    assert code == 0
    (password,) = re.findall(r"The cockpit password is:\n\n    (\S+)\n", capsys.readouterr().out)
    return password


PROBE = r"""
import errno, json, os, sys
out = {}
for path in sys.argv[1:]:
    try:
        with open(path, "x") as f:
            f.write("x")
        os.unlink(path)
        out[path] = "written"
    except OSError as exc:
        out[path] = errno.errorcode[exc.errno]
print(json.dumps(out))
"""


def test_the_service_sandbox_allows_uploads_calibration_and_recordings_and_nothing_else(car, capsys):
    prefix, config, port = car
    password = install(prefix, capsys)
    unit = (prefix / "etc/systemd/system/car-runtime.service").read_text()
    env = {**{k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")},
           "HOME": "/var/lib/car-runtime", "PYTHONUNBUFFERED": "1"}

    # 1. What may be written in the sandbox, as the service user: only the unit's paths, even
    #    where the permission bits alone would allow it (/tmp is world-writable, the folder
    #    given to nobody but not listed in the unit).
    (prefix / "opt/car-runtime/not-listed").mkdir()
    os.chown(prefix / "opt/car-runtime/not-listed", *NOBODY)
    probes = ["/var/lib/car-runtime/p", "/opt/car-runtime/models/p", "/opt/aws/deepracer/logs/p",
              "/opt/aws/deepracer/.calibration.json.history/p", "/opt/aws/deepracer/p",
              "/opt/car-runtime/not-listed/p", "/tmp/p", f"{prefix}/p"]
    r = subprocess.run(sandboxed(prefix, unit, as_unprivileged([sys.executable, "-c", PROBE,
                                                                *probes])),
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "/var/lib/car-runtime/p": "written", "/opt/car-runtime/models/p": "written",
        "/opt/aws/deepracer/logs/p": "written",
        "/opt/aws/deepracer/.calibration.json.history/p": "written",
        "/opt/aws/deepracer/p": "EROFS", "/opt/car-runtime/not-listed/p": "EROFS",
        "/tmp/p": "EROFS", f"{prefix}/p": "EROFS"}

    # 2. doctor's checks agree, seen from inside (as root, for the service user nobody).
    doctor_probe = (
        "import json; from car_runtime import doctor; from car_runtime.config import resolve;"
        "from car_runtime.service_access import write_paths;"
        f"cfg = resolve({str(config)!r}, {{}}); who = doctor.Identity.service('nobody');"
        f"unit = open({str(prefix / 'etc/systemd/system/car-runtime.service')!r}).read();"
        "checks = [doctor.check_access(doctor.access_facts(cfg, who), who.name),"
        "          doctor.check_sandbox(unit, write_paths(cfg))];"
        "print(json.dumps([[c.name, c.level.value, c.summary] for c in checks]))")
    r = subprocess.run(sandboxed(prefix, unit, [sys.executable, "-c", doctor_probe]),
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert [(name, level) for name, level, _ in json.loads(r.stdout)] == [
        ("access", "ok"), ("sandbox", "ok")], r.stdout

    # 3. The service itself: ExecStart as the service user in the sandbox.
    cal_file = prefix / "opt/aws/deepracer/calibration.json"
    cal_inode = cal_file.stat().st_ino
    proc = subprocess.Popen(sandboxed(prefix, unit, as_unprivileged([EXE, "run", "--config",
                                                                     str(config)])),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        c = Client(port)
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                login = c.login(password)  # the password install-service printed
                break
            except OSError:
                assert time.monotonic() < deadline, "the cockpit never answered"
                time.sleep(0.2)
        assert login.status == 200, login.body
        c.take_control()
        # uploads and deletes in models_dir
        r = c.upload("uploaded.tar.gz", (prefix / "opt/car-runtime/models/demo.tar.gz").read_bytes())
        assert r.status == 200, r.body
        uploaded = prefix / "opt/car-runtime/models/uploaded.tar.gz"
        assert (uploaded.stat().st_uid, uploaded.stat().st_gid) == NOBODY
        r = c.post("/api/models/delete", {"id": "models/old.tar.gz"})  # root's file: deletable
        assert r.status == 200, r.body
        assert sorted(os.listdir(prefix / "opt/car-runtime/models")) == ["demo.tar.gz",
                                                                        "uploaded.tar.gz"]
        # a calibration save rewrites the stock file in place and keeps the old one
        new = {"servo": {"min": 1_210_000, "mid": 1_460_000, "max": 1_690_000, "polarity": 1},
               "motor": {"min": 1_320_000, "mid": 1_450_000, "max": 1_600_000, "polarity": -1}}
        assert c.post("/api/calibration/begin").status == 200
        r = c.post("/api/calibration", new)
        assert r.status == 200, r.body
        assert c.post("/api/calibration/end").status == 200
        saved = json.loads(cal_file.read_text())["Calibration"]
        assert saved["Servo"] == new["servo"] and saved["Motor"] == new["motor"]
        st = cal_file.stat()
        assert (st.st_ino, st.st_uid, st.st_gid, st.st_mode & 0o777) == (cal_inode, 0, 65534, 0o664)
        (entry,) = list_history(cal_file)
        assert entry.calibration == Calibration.defaults()
        # drive a little: the recorder writes a session
        assert c.post("/api/arm").status == 200
        deadline = time.monotonic() + 30
        while c.get("/api/status").json["status"].get("driven", 0) < 30:
            assert time.monotonic() < deadline, c.get("/api/status").json
            time.sleep(0.1)
        assert c.post("/api/stop").status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == int(ExitCode.SIGTERM), err
    assert "error:" not in err and "Traceback" not in err, err
    logs = prefix / "opt/aws/deepracer/logs"
    (session,) = list_sessions(logs)
    assert session.complete and session.frames >= 30, session
    assert (session.path.stat().st_uid, session.path.stat().st_mode & 0o777) == (65534, 0o750)
    # Nothing was written where the unit does not allow it.
    assert sorted(os.listdir(prefix / "opt/aws/deepracer")) == [
        ".calibration.json.history", "calibration.json", "logs", "start_ros.sh"]
    # Nor in the service's home (systemd's $HOME, /var/lib/car-runtime): no OpenVINO telemetry
    # files (intel/), even with no CI variable telling OpenVINO to keep quiet.
    assert sorted(os.listdir(prefix / "var/lib/car-runtime")) == ["drive.jsonl", "web-password"]
