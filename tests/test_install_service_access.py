"""install-service gives the service what its config makes it write: folders created or given
to the service user, the calibration file group-writable with its history folder, the cockpit's
password file (printed once), the unit's ReadWritePaths rendered from the config; checks first,
undone on failure. Staged under a prefix in a temp dir, as root with a real unprivileged user
(``nobody``) standing in for ``car-runtime``; the live system is never touched."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from car_runtime import data
from car_runtime.actuation.calibration import Calibration, dumps_stock, load_calibration
from car_runtime.cli import install_service as inst
from car_runtime.config import from_mapping, load_yaml
from car_runtime.errors import ConfigError
from car_runtime.service_access import render_read_write_paths, unit_writable_paths, write_paths
from car_runtime.web.auth import PasswordFile
from helpers import UNPRIVILEGED

EXE = str(Path(sys.executable).parent / "car-runtime")
USER = UNPRIVILEGED[0]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed")


def install(prefix: Path, user: str = USER) -> int:
    """`car-runtime install-service --prefix PREFIX --exe EXE` with ``user`` as the service user
    (the CLI always uses car-runtime, which does not exist on this machine)."""
    args = argparse.Namespace(prefix=str(prefix), dry_run=False, exe=EXE, user=user)
    return inst.run(args)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: kind, owner, group, mode, content or link target."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            body: object = os.readlink(p)
        elif p.is_file():
            body = p.read_bytes()
        else:
            body = None
        out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid,
                                         stat.S_IMODE(st.st_mode), body)
    return out


def car_like(prefix: Path) -> dict[str, Path]:
    """What a car looks like before install-service, after the README's first steps: the
    model copied in with sudo (models folder root's), the stock calibration (root's, 0644) with
    a history from an earlier `sudo car-runtime calibrate`, a stock script next to it."""
    models = prefix / "opt/car-runtime/models"
    models.mkdir(parents=True)
    (models / "my-model.tar.gz").write_bytes(b"model bytes")
    deepracer = prefix / "opt/aws/deepracer"
    deepracer.mkdir(parents=True)
    cal = deepracer / "calibration.json"
    cal.write_text(dumps_stock(Calibration.defaults().with_values({"servo.mid": 1_440_000})))
    cal.chmod(0o644)
    hist = deepracer / ".calibration.json.history"
    hist.mkdir()
    (hist / "20260101T000000.000000Z.json").write_text(dumps_stock(Calibration.defaults()))
    (deepracer / "start_ros.sh").write_text("#!/bin/sh\n")
    return {"models": models, "deepracer": deepracer, "cal": cal, "hist": hist}


def owner(p: Path) -> tuple[int, int, int]:
    st = p.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def printed_password(out: str) -> str:
    found = re.findall(r"The cockpit password is:\n\n    (\S+)\n", out)
    assert len(found) == 1, out
    return found[0]


# -- what it creates and grants ---------------------------------------------------------------------
@needs_root
def test_install_gives_the_service_exactly_what_the_config_writes(tmp_path, capsys):
    paths = car_like(tmp_path)
    model_before = owner(paths["models"] / "my-model.tar.gz")
    cal_text = paths["cal"].read_text()
    assert install(tmp_path) == 0
    out = capsys.readouterr().out
    nobody = (65534, 65534)
    # Folders: an existing root one given to the service (its content untouched), new ones made.
    assert owner(paths["models"]) == (*nobody, 0o755)
    assert owner(paths["models"] / "my-model.tar.gz") == model_before
    assert owner(tmp_path / "opt/aws/deepracer/logs") == (*nobody, 0o755)
    assert owner(tmp_path / "var/lib/car-runtime") == (*nobody, 0o755)
    assert owner(paths["hist"]) == (*nobody, 0o755)
    # The calibration: same file, same owner, group nogroup and group-writable; the stock
    # folder and everything else in it stay root's.
    assert owner(paths["cal"]) == (0, 65534, 0o664) and paths["cal"].read_text() == cal_text
    assert owner(paths["deepracer"]) == (0, 0, 0o755)
    assert owner(paths["deepracer"] / "start_ros.sh")[:2] == (0, 0)
    assert owner(tmp_path / "opt/car-runtime")[:2] == (0, 0)
    # The password file: the service's, 0600, a salted scrypt hash of the password printed once.
    pw_file = tmp_path / "var/lib/car-runtime/web-password"
    assert owner(pw_file) == (*nobody, 0o600)
    password = printed_password(out)
    assert out.count(password) == 1 and password not in pw_file.read_text()
    assert pw_file.read_text().startswith("scrypt$")
    record = PasswordFile(pw_file).current()
    assert record.verify(password) and not record.verify(password + "x")
    assert out.rstrip().endswith("Change it with `sudo car-runtime web-password`.")
    # The unit may write exactly those paths (besides its state folder).
    unit = (tmp_path / "etc/systemd/system/car-runtime.service").read_text()
    assert unit_writable_paths(unit) == [
        "/var/lib/car-runtime", "/opt/car-runtime/models", "/opt/aws/deepracer/calibration.json",
        "/opt/aws/deepracer/.calibration.json.history", "/opt/aws/deepracer/logs"]
    if shutil.which("systemd-analyze"):
        r = subprocess.run(["systemd-analyze", "verify",
                            str(tmp_path / "etc/systemd/system/car-runtime.service")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    # Run again: nothing to grant, the password is kept and not shown.
    before = snapshot(tmp_path)
    assert install(tmp_path) == 0
    again = capsys.readouterr().out
    assert "password is" not in again and f"kept {pw_file}" in again
    assert "kept models folder" in again and "kept calibration file" in again
    assert snapshot(tmp_path) == before


@needs_root
def test_a_missing_calibration_is_created_with_the_stock_defaults(tmp_path, capsys):
    assert install(tmp_path) == 0
    cal = tmp_path / "opt/aws/deepracer/calibration.json"
    assert load_calibration(cal) == Calibration.defaults()
    assert owner(cal) == (0, 65534, 0o664) and owner(cal.parent) == (0, 0, 0o755)


@needs_root
def test_the_unit_follows_the_config(tmp_path, capsys):
    config = tmp_path / "etc/car-runtime/config.yaml"
    config.parent.mkdir(parents=True)
    # No cockpit: only the recordings folder, no models folder, no calibration grant, no password.
    config.write_text("model: /m.tar.gz\nrecord_dir: /srv/runs\n")
    assert install(tmp_path) == 0
    out = capsys.readouterr().out
    unit = (tmp_path / "etc/systemd/system/car-runtime.service").read_text()
    assert unit_writable_paths(unit) == ["/var/lib/car-runtime", "/srv/runs"]
    assert "ReadWritePaths=-/srv/runs\n" in unit
    assert owner(tmp_path / "srv/runs")[:2] == (65534, 65534)
    assert not (tmp_path / "opt").exists() and "password" not in out
    # Neither: no line at all, only a comment.
    config.write_text("model: /m.tar.gz\n")
    assert install(tmp_path) == 0
    unit = (tmp_path / "etc/systemd/system/car-runtime.service").read_text()
    assert unit_writable_paths(unit) == ["/var/lib/car-runtime"]
    assert "# ReadWritePaths: none needed by this config" in unit


def test_the_shipped_unit_lists_what_the_example_config_writes():
    unit = (data.SYSTEMD / "car-runtime.service").read_text()
    cfg = from_mapping(load_yaml(data.SYSTEMD / "config.example.yaml"))
    line = next(x for x in unit.splitlines() if x.startswith("ReadWritePaths="))
    assert line == render_read_write_paths(wp.path for wp in write_paths(cfg))


@needs_analyze
def test_rendered_units_verify(tmp_path):
    template = (data.SYSTEMD / "car-runtime.service").read_text()
    for i, paths in enumerate((["/opt/car-runtime/models", "/data/100%/runs", "/x/cal.json"], [])):
        text = inst.render_unit(template, EXE, paths)
        unit = tmp_path / f"u{i}.service"
        unit.write_text(text)
        r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
        assert unit_writable_paths(text)[1:] == paths  # '%' doubled in the file, read back as one


# -- checks before anything is written -----------------------------------------------------------
def plan_problems(tmp_path: Path, config: str) -> list[str]:
    path = tmp_path / "etc/car-runtime/config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config)
    return list(inst.make_plan(tmp_path, EXE, user=USER).problems)


def test_folders_that_must_not_become_the_services_stop_the_install(tmp_path):
    (tmp_path / "etc/udev").mkdir(parents=True)
    (tmp_path / "opt/car-runtime/venv/bin").mkdir(parents=True)
    (tmp_path / "home/deepracer").mkdir(parents=True)
    web = "web: 8080\n"
    cases = {
        "models_dir: /etc/udev\n": "models_dir /etc/udev is a system folder",
        "models_dir: /opt/aws\n": "models_dir /opt/aws is a system folder",
        "record_dir: /opt/car-runtime\n": "record_dir /opt/car-runtime is a system folder",
        "models_dir: models\n": "models_dir 'models' is relative",
        "record_dir: /tmp/runs\n": "record_dir /tmp/runs is under /tmp",
        "record_dir: /srv/my runs\n": "has spaces, quotes or backslashes",
    }
    for line, expected in cases.items():
        problems = plan_problems(tmp_path, web + line)
        assert any(expected in p for p in problems), (line, problems)


def test_the_venv_and_home_folders_are_refused(tmp_path):
    (tmp_path / "opt/venv/bin").mkdir(parents=True)
    path = tmp_path / "etc/car-runtime/config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("record_dir: /opt/venv\n")
    plan = inst.make_plan(tmp_path, "/opt/venv/bin/car-runtime", user=USER)
    assert any("holds car-runtime itself" in p for p in plan.problems), plan.problems
    # Some account's home folder (www-data's /var/www, news's /var/spool/news...).
    homes = sorted(h for h in inst._home_dirs(USER) if h.count("/") >= 2
                   and not any(p for p in ("/usr", "/bin", "/dev", "/run", "/root") if h.startswith(p)))
    if not homes:
        pytest.skip("no account with an ordinary home folder here")
    (tmp_path / homes[0].lstrip("/")).mkdir(parents=True)
    path.write_text(f"record_dir: {homes[0]}\n")
    plan = inst.make_plan(tmp_path, EXE, user=USER)
    assert any(f"record_dir {homes[0]} is a home folder" in p for p in plan.problems), plan.problems


def test_a_calibration_that_is_not_one_stops_the_install(tmp_path):
    target = tmp_path / "etc/passwd"
    target.parent.mkdir(parents=True)
    target.write_text("root:x:0:0:root:/root:/bin/bash\n")
    problems = plan_problems(tmp_path, "web: 8080\ncalibration: /etc/passwd\n")
    assert any("install-service lets the service rewrite only a valid calibration file" in p
               for p in problems), problems
    link = tmp_path / "opt/aws/deepracer/calibration.json"
    link.parent.mkdir(parents=True)
    link.symlink_to("/var/lib/elsewhere.json")
    problems = plan_problems(tmp_path, "web: 8080\n")
    assert any("is a symbolic link" in p for p in problems), problems


def test_a_broken_config_stops_the_install_with_nothing_changed(tmp_path, capsys):
    path = tmp_path / "etc/car-runtime/config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("web: 8080\nmodels_dir: [oops\n")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as info:
        install(tmp_path)
    message = str(info.value)
    assert message.startswith("cannot install, nothing was changed: ")
    assert "the service's writable folders come from" in message
    assert snapshot(tmp_path) == before


# -- undone when a later step fails ---------------------------------------------------------------
@needs_root
def test_a_failure_after_the_grants_restores_every_owner_and_mode(tmp_path):
    car_like(tmp_path)
    before = snapshot(tmp_path)
    plan = inst.make_plan(tmp_path, EXE, user=USER)
    assert not plan.problems
    granted = [s for s in plan.steps if not isinstance(s, inst.Run)]
    kinds = {type(s).__name__ for s in granted}
    assert {"ServiceDir", "ServiceFile", "CreateIfMissing", "WriteFile", "Link"} <= kinds
    failing = inst.Plan((), (*granted, inst.Run(("sh", "-c", "exit 7"))), ())
    lines: list[str] = []
    with pytest.raises(ConfigError) as info:
        inst.execute(failing, run_commands=True, echo=lines.append)
    assert "were undone, nothing is left behind" in str(info.value)
    assert any(line.startswith("gave models folder") for line in lines)
    assert any(line.startswith("let nobody rewrite calibration file") for line in lines)
    assert snapshot(tmp_path) == before  # owners, groups, modes, contents, no new entries


@needs_root
def test_a_failing_grant_undoes_the_steps_before_it(tmp_path, monkeypatch):
    paths = car_like(tmp_path)
    before = snapshot(tmp_path)
    real_chown = os.chown

    def chown(path, uid, gid, **kw):  # the file system refuses the last grant (e.g. read-only)
        if Path(path) == tmp_path / "opt/aws/deepracer/logs":
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_chown(path, uid, gid, **kw)

    monkeypatch.setattr(os, "chown", chown)
    with pytest.raises(ConfigError) as info:
        install(tmp_path)
    message = str(info.value)
    assert message.startswith(f"make recordings folder {tmp_path}/opt/aws/deepracer/logs the "
                              "nobody user's failed (Operation not permitted)")
    assert "nothing is left behind" in message
    assert snapshot(tmp_path) == before
    assert owner(paths["cal"]) == (0, 0, 0o644)
