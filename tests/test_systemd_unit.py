"""The systemd unit passes `systemd-analyze verify`; its commands are ones our CLI accepts;
`car-runtime install-service` writes the right files (into a staging prefix, never /)."""

from __future__ import annotations

import json

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from car_runtime import data
from car_runtime.cli import install_service
from car_runtime.cli.main import build_parser, main
from car_runtime.config import RunConfig, from_mapping, load_yaml
from car_runtime.control.safety import ExitCode

SYSTEMD = data.SYSTEMD
UNIT = SYSTEMD / "car-runtime.service"
EXE = str(Path(sys.executable).parent / "car-runtime")  # the installed console script

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (Debian/Ubuntu: apt-get install systemd)",
)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values...]}}`` (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def verify(tmp_path: Path, text: str, name: str = "car-runtime.service"):
    path = tmp_path / name
    path.write_text(text)
    return subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )


def runnable(text: str) -> str:
    """The unit with its executable pointing at the car-runtime of this test environment
    (verify checks that ExecStart/ExecStopPost binaries exist)."""
    assert install_service.DEFAULT_EXE in text
    return text.replace(install_service.DEFAULT_EXE, EXE)


# -- systemd-analyze verify ------------------------------------------------------------------------
@needs_analyze
def test_shipped_unit_verifies_cleanly(tmp_path):
    result = verify(tmp_path, runnable(UNIT.read_text()))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""  # not even a warning


@needs_analyze
def test_verify_would_catch_mistakes(tmp_path):
    """The check above can fail: a missing binary and a misspelt key are both reported."""
    text = runnable(UNIT.read_text())
    missing = verify(tmp_path, text.replace(EXE + " run", "/nonexistent/car-runtime run"),
                     "a.service")
    assert missing.returncode != 0 and "/nonexistent/car-runtime" in missing.stderr
    typo = verify(tmp_path, text.replace("WatchdogSec=2", "WatchdogSecs=2"), "b.service")
    assert "Unknown key" in typo.stderr


@needs_analyze
def test_unit_rendered_by_install_service_verifies(tmp_path):
    text = install_service.render_unit(UNIT.read_text(), EXE)
    result = verify(tmp_path, text)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


# -- what the unit says ----------------------------------------------------------------------------
def test_unit_settings():
    unit = parse_unit(UNIT.read_text())
    service = {k: v[-1] for k, v in unit["Service"].items()}
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] == "2"
    assert service["Restart"] == "on-failure" and service["RestartSec"] == "2"
    assert service["KillSignal"] == "SIGTERM"
    assert service["User"] == "car-runtime" and service["Group"] == "car-runtime"
    assert service["SupplementaryGroups"] == "video"
    assert service["ProtectSystem"] == "strict"
    # A requested stop (SIGINT/SIGTERM -> exit 130/143) is a success, not a restart trigger.
    assert set(service["SuccessExitStatus"].split()) == {
        str(int(ExitCode.SIGINT)), str(int(ExitCode.SIGTERM))
    }
    # Settings that would hide /sys/class/pwm, the camera, or break OpenVINO's JIT.
    for forbidden in ("ProtectKernelTunables", "PrivateDevices", "DevicePolicy", "DeviceAllow",
                      "ProtectClock", "MemoryDenyWriteExecute"):
        assert forbidden not in service
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert unit["Unit"]["Conflicts"] == ["deepracer-core.service"]


def test_unit_commands_are_accepted_by_our_cli():
    service = parse_unit(UNIT.read_text())["Service"]
    parser = build_parser()
    start = service["ExecStart"][0].split()
    assert start[0] == install_service.DEFAULT_EXE
    args = parser.parse_args(start[1:])
    assert args.command == "run" and args.config == "/etc/car-runtime/config.yaml"
    stop = service["ExecStopPost"][0].split()
    args = parser.parse_args(stop[1:])
    assert args.command == "neutral"
    assert str(args.config) == "/etc/car-runtime/config.yaml"  # the same config as ExecStart


def test_example_config_is_valid_and_shows_the_defaults():
    data = load_yaml(SYSTEMD / "config.example.yaml")
    assert set(data) >= {"model", "camera", "output", "calibration", "max_speed_pct", "arm",
                         "deadline_ms", "max_frame_age_ms", "device", "precision", "preprocess"}
    cfg = from_mapping(data)
    defaults = RunConfig()
    for key in data:
        if key not in ("model", "record_dir", "web"):  # the service records and serves the cockpit
            assert getattr(cfg, key) == getattr(defaults, key), key


def test_neutral_follows_the_config(tmp_path, capsys):
    """ExecStopPost's `neutral --config` writes neutral on the config's output."""
    record = tmp_path / "stop.jsonl"
    cal = tmp_path / "cal.json"
    cal.write_text('{"Calibration": {"Servo": {"min": 1100000, "mid": 1400000, "max": 1800000, '
                   '"polarity": 1}, "Motor": {"min": 1300000, "mid": 1500000, "max": 1700000, '
                   '"polarity": -1}, "version": 1}}')
    config = tmp_path / "config.yaml"
    config.write_text(f"model: /m.tar.gz\noutput: record:{record}\ncalibration: {cal}\n")
    assert main(["neutral", "--config", str(config)]) == 0
    last = [json.loads(line) for line in record.read_text().splitlines()][-1]
    assert (last["servo_ns"], last["motor_ns"]) == (1400000, 1500000)
    # A broken config never blocks the stop path: defaults, a warning, exit 0.
    config.write_text("max_speed_pct: [oops\n")
    assert main(["neutral", "--config", str(config), "--output", f"record:{record}"]) == 0
    last = [json.loads(line) for line in record.read_text().splitlines()][-1]
    assert (last["servo_ns"], last["motor_ns"]) == (1450000, 1446000)


# -- install-service -------------------------------------------------------------------------------
def test_install_service_into_a_prefix(tmp_path, capsys):
    assert main(["install-service", "--prefix", str(tmp_path), "--exe", EXE]) == 0
    out = capsys.readouterr().out
    unit = tmp_path / "etc/systemd/system/car-runtime.service"
    rules = tmp_path / "etc/udev/rules.d/99-car-runtime.rules"
    config = tmp_path / "etc/car-runtime/config.yaml"
    example = tmp_path / "etc/car-runtime/config.example.yaml"
    assert rules.read_bytes() == (SYSTEMD / "99-car-runtime.rules").read_bytes()
    shipped = (SYSTEMD / "config.example.yaml").read_text()
    assert config.read_text() == example.read_text() == shipped
    service = parse_unit(unit.read_text())["Service"]
    assert service["ExecStart"] == [f"{EXE} run --config /etc/car-runtime/config.yaml"]
    assert service["ExecStopPost"] == [f"{EXE} neutral --config /etc/car-runtime/config.yaml"]
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    # Staging: accounts, reloads and (no car-runtime user here) ownership are printed, not run.
    assert "run yourself: sudo systemctl daemon-reload" in out
    assert "on the car: sudo chown car-runtime:car-runtime /opt/car-runtime/models" in out
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [  # no temp files left behind by the atomic writes
        "etc/car-runtime/config.example.yaml",
        "etc/car-runtime/config.yaml",
        "etc/systemd/system/car-runtime.service",
        "etc/udev/rules.d/99-car-runtime.rules",
        "opt/aws/deepracer/calibration.json",  # none yet: the stock defaults, as the stock does
        "usr/local/bin/car-runtime",  # a link to EXE: `sudo car-runtime` works
        "var/lib/car-runtime/web-password",  # the example config turns the cockpit on
    ]
    folders = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                     if p.is_dir() and not any(p.iterdir()))
    assert folders == ["opt/aws/deepracer/.calibration.json.history", "opt/aws/deepracer/logs",
                       "opt/car-runtime/models"]
    assert (tmp_path / "usr/local/bin/car-runtime").resolve() == Path(EXE).resolve()


def test_install_service_keeps_an_existing_config(tmp_path, capsys):
    config = tmp_path / "etc/car-runtime/config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("model: /m.tar.gz\noutput: serial:/dev/ttyACM0\ncalibration: /etc/c.json\n")
    assert main(["install-service", "--prefix", str(tmp_path), "--exe", EXE]) == 0
    assert config.read_text().startswith("model: /m.tar.gz")  # untouched
    assert "skipped:" in capsys.readouterr().out
    unit = (tmp_path / "etc/systemd/system/car-runtime.service").read_text()
    assert f"ExecStopPost={EXE} neutral --config /etc/car-runtime/config.yaml" in unit


def test_install_service_dry_run_changes_nothing(tmp_path, capsys):
    assert main(["install-service", "--prefix", str(tmp_path), "--exe", EXE, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would write {tmp_path}/etc/systemd/system/car-runtime.service" in out
    assert "would run: sudo systemctl daemon-reload" in out
    assert list(tmp_path.iterdir()) == []


def test_install_service_errors_are_one_line(tmp_path, capsys):
    assert main(["install-service", "--prefix", str(tmp_path), "--exe",
                 str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot find the car-runtime executable") and err.count("\n") == 1


def test_account_commands_only_for_missing_accounts():
    def exists(database: str) -> bool:
        found = subprocess.run(["getent", database, "car-runtime"], capture_output=True)
        return found.returncode == 0

    commands = install_service.account_commands()
    names = [c[0] for c in commands]
    assert ("groupadd" in names) is not exists("group")
    assert ("useradd" in names) is not exists("passwd")
    for cmd in commands:
        assert cmd[-1] == "car-runtime" and "--system" in cmd
    if "useradd" in names:
        useradd = commands[names.index("useradd")]
        assert useradd[useradd.index("--gid") + 1] == "car-runtime"
        assert names.index("useradd") > names.index("groupadd") if "groupadd" in names else True
