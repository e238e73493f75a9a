"""doctor's `access` (may the service user write what its config makes it write, and read its
password file) and `sandbox` (does the unit's ReadWritePaths cover those paths) checks: over a
real folder tree with real owners and modes (root: chown to a made-up service uid), and over
units rendered by install-service."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from car_runtime import data, doctor
from car_runtime.actuation.calibration import Calibration, save_calibration
from car_runtime.cli import install_service
from car_runtime.config import RunConfig
from car_runtime.doctor import Identity, Level
from car_runtime.service_access import write_paths
from car_runtime.web.auth import write_password_file
from helpers import open_tmp_dir

SERVICE = Identity("car-runtime", 54321, frozenset({54321}))
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@pytest.fixture
def tree():
    base = open_tmp_dir()  # every folder above is enterable by others, like /opt on the car
    yield base
    shutil.rmtree(base)


def config_in(base: Path, **extra) -> RunConfig:
    return RunConfig(web="8080", models_dir=str(base / "models"),
                     calibration=str(base / "deepracer" / "calibration.json"),
                     record_dir=str(base / "logs"),
                     web_password_file=str(base / "state" / "web-password")).replace(**extra)


def check(cfg: RunConfig, who: Identity | None = SERVICE) -> doctor.Check:
    return doctor.check_access(doctor.access_facts(cfg, who) if who else [],
                               who.name if who else None)


@needs_root
def test_access_names_each_problem_with_its_exact_fix_until_install_fixed_it(tree):
    cfg = config_in(tree)
    (tree / "deepracer").mkdir()
    save_calibration(Calibration.defaults(), cfg.calibration)  # root's, 0644, like the stock's
    c = check(cfg)
    assert c.level is Level.FAIL, c  # no recordings folder, no password: the service cannot start
    assert f"models {tree}/models: does not exist" in c.summary
    assert f"sudo install -d -o car-runtime -g car-runtime {tree}/logs" in c.fix
    assert "may not rewrite it (the cockpit cannot save)" in c.summary
    assert f"sudo chgrp car-runtime {cfg.calibration} && sudo chmod g+rw {cfg.calibration}" in c.fix
    assert "web password file" in c.summary and "web-password --owner car-runtime" in c.fix
    # What install-service does, by hand: folders given to the user, the file group-writable.
    for name in ("models", "logs", "state", "deepracer/.calibration.json.history"):
        (tree / name).mkdir(exist_ok=True)
        os.chown(tree / name, SERVICE.uid, SERVICE.uid)
    write_password_file(cfg.web_password_file, "a long password", owner=None)
    c = check(cfg)
    assert c.level is Level.FAIL and "may not read it: the service cannot start" in c.summary
    os.chown(cfg.web_password_file, SERVICE.uid, SERVICE.uid)
    c = check(cfg)
    assert c.level is Level.WARN and "calibration" in c.summary and "models" not in c.summary
    os.chown(cfg.calibration, 0, SERVICE.uid)
    os.chmod(cfg.calibration, 0o664)
    c = check(cfg)
    assert c.level is Level.OK, c
    assert c.summary.startswith("car-runtime may write/read what it needs: models ")
    # A folder above that the user may not enter spoils everything below it.
    os.chmod(tree / "deepracer", 0o750)
    c = check(cfg)
    assert c.level is Level.WARN and f"may not enter {tree}/deepracer" in c.summary
    assert f"sudo chmod o+x {tree}/deepracer" in c.fix


@needs_root
def test_only_what_the_config_uses_is_checked(tree):
    cfg = config_in(tree, web=None, record_dir=None)
    assert check(cfg).level is Level.OK and "nothing but its state folder" in check(cfg).summary
    (tree / "logs").mkdir()
    os.chown(tree / "logs", SERVICE.uid, SERVICE.uid)
    c = check(config_in(tree, web=None))
    assert c.level is Level.OK and f"recordings {tree}/logs" in c.summary
    (tree / "logs").rmdir()
    (tree / "logs").write_text("not a folder")
    c = check(config_in(tree, web=None))
    assert c.level is Level.FAIL and "is not a folder" in c.summary
    c = check(cfg, who=None)
    assert c.level is Level.OK and "not checked" in c.summary


def test_sandbox_compares_the_units_paths_with_the_configs():
    template = (data.SYSTEMD / "car-runtime.service").read_text()
    cfg = RunConfig(web="8080", record_dir="/opt/aws/deepracer/logs")
    unit = install_service.render_unit(template, "/x/bin/car-runtime",
                                       [wp.path for wp in write_paths(cfg)])
    c = doctor.check_sandbox(unit, write_paths(cfg))
    assert c.level is Level.OK and "/opt/aws/deepracer/logs" in c.summary
    # The owner changed record_dir and models_dir after installing: re-run install-service.
    moved = cfg.replace(record_dir="/data/runs", models_dir="/data/models")
    c = doctor.check_sandbox(unit, write_paths(moved))
    assert c.level is Level.WARN
    assert "may not write models_dir /data/models, record_dir /data/runs" in c.summary
    assert c.fix.startswith("re-run: sudo car-runtime install-service")
    # Paths under the state folder need no line of their own.
    inside = cfg.replace(record_dir="/var/lib/car-runtime/runs")
    assert doctor.check_sandbox(unit, write_paths(inside)).level is Level.OK
    # A unit from before this feature (no ReadWritePaths at all).
    old = "\n".join(x for x in unit.splitlines() if not x.startswith("ReadWritePaths="))
    c = doctor.check_sandbox(old, write_paths(cfg))
    assert c.level is Level.WARN and "it may write /var/lib/car-runtime)" in c.summary
    # /tmp is private to the service: no unit line can help, the config must change.
    c = doctor.check_sandbox(unit, write_paths(cfg.replace(record_dir="/tmp/runs")))
    assert c.level is Level.WARN and "PrivateTmp" in c.summary and "fix the config" in c.fix
    assert doctor.check_sandbox(None, write_paths(cfg)).level is Level.OK


def test_doctor_reports_both_from_a_car_tree(car):
    """The whole doctor over a car-shaped tree: the installed unit predates a config change."""
    template = (data.SYSTEMD / "car-runtime.service").read_text()
    car.unit("car-runtime.service", install_service.render_unit(
        template, "/nonexistent/car-runtime", ["/opt/car-runtime/models"]))
    car.config(web="8080", record_dir=str(car.root / "logs"))
    checks = {c.name: c for c in doctor.run_doctor(doctor.DoctorOptions(
        roots=doctor.Roots.under(car.root), bench_frames=0, service=None))}
    assert checks["sandbox"].level is Level.WARN
    assert f"record_dir {car.root}/logs" in checks["sandbox"].summary
    assert checks["access"].level is Level.OK and "not checked" in checks["access"].summary
