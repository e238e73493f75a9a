"""``car-runtime install-service``: checks before any write, the /usr/local/bin link, and a
failed step undoing what was done (real files, real symlinks, real failing processes; the live
system is never touched: staging prefixes in a temp dir)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from car_runtime.cli import install_service as inst
from car_runtime.cli.main import main
from car_runtime.errors import ConfigError

EXE = str(Path(sys.executable).parent / "car-runtime")


def tree(root: Path) -> dict[str, str]:
    """Every file and link under ``root`` (relative path -> content or link target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_text()
        else:
            out[rel + "/"] = ""
    return out


# -- checks first -----------------------------------------------------------------------------------
def test_live_checks_name_every_problem_and_its_fix(tmp_path):
    plan = inst.make_plan(Path("/"), EXE, live=True, root=False, systemd_running=False)
    text = " | ".join(plan.problems)
    assert "systemd is not running" in text and "--prefix" in text
    assert "needs root" in text and "sudo" in text
    plan = inst.make_plan(Path("/"), EXE, live=True, root=True, systemd_running=True)
    assert not any("systemd" in p or "root" in p for p in plan.problems)
    # The live plan creates the accounts first and reloads last.
    kinds = [type(s).__name__ for s in plan.steps]
    assert kinds[-3:] == ["Run", "Run", "Run"] and "WriteFile" in kinds and "Link" in kinds
    assert plan.steps[-3].argv == ("systemctl", "daemon-reload")


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(),
                    reason="systemd runs here: a live install-service would really install")
def test_live_install_without_systemd_changes_nothing(capsys):
    before = {p: p.exists() for p in (Path("/etc/systemd/system/car-runtime.service"),
                                      Path("/usr/local/bin/car-runtime"))}
    assert main(["install-service", "--exe", EXE]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("error: cannot install") and "nothing was changed" in err
    assert "systemd is not running" in err
    assert {p: p.exists() for p in before} == before


def test_an_enabled_stock_stack_stops_the_install(tmp_path, capsys):
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "deepracer-core.service").symlink_to("/lib/systemd/system/deepracer-core.service")
    before = tree(tmp_path)
    assert main(["install-service", "--prefix", str(tmp_path), "--exe", EXE]) == 2
    err = capsys.readouterr().err
    assert "deepracer-core.service) is enabled" in err
    assert "sudo systemctl disable --now deepracer-core" in err and err.count("\n") == 1
    assert tree(tmp_path) == before
    # --dry-run shows the problem and the steps, and still changes nothing.
    assert main(["install-service", "--prefix", str(tmp_path), "--exe", EXE, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("problem: the stock stack") and "would link" in out
    assert "the real run would stop before changing anything" in out
    assert tree(tmp_path) == before


def test_an_unwritable_destination_stops_the_install(tmp_path, capsys):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "udev").write_text("a file where a folder should be")
    before = tree(tmp_path)
    assert main(["install-service", "--prefix", str(tmp_path), "--exe", EXE]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/etc/udev is not a folder" in err
    assert tree(tmp_path) == before


# -- the link --------------------------------------------------------------------------------------
def test_link_replaces_an_old_link_and_leaves_a_real_file_alone(tmp_path, capsys):
    link = tmp_path / "usr/local/bin/car-runtime"
    link.parent.mkdir(parents=True)
    link.symlink_to("/old/venv/bin/car-runtime")
    assert main(["install-service", "--prefix", str(tmp_path), "--exe", EXE]) == 0
    assert os.readlink(link) == EXE
    assert f"linked {link} -> {EXE}" in capsys.readouterr().out
    assert main(["install-service", "--prefix", str(tmp_path), "--exe", EXE]) == 0
    assert f"skipped: {link} already runs {EXE}" in capsys.readouterr().out
    link.unlink()
    link.write_text("#!/bin/sh\n")  # e.g. a system-wide pip install put a script there
    assert main(["install-service", "--prefix", str(tmp_path), "--exe", EXE]) == 0
    assert "exists and is not a link: left alone" in capsys.readouterr().out
    assert link.read_text() == "#!/bin/sh\n"


def test_the_link_runs_car_runtime(tmp_path):
    assert main(["install-service", "--prefix", str(tmp_path), "--exe", EXE]) == 0
    proc = subprocess.run([str(tmp_path / "usr/local/bin/car-runtime"), "--version"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("car-runtime ")


# -- a failed step undoes the earlier ones ----------------------------------------------------------
def test_a_failed_write_rolls_back_new_and_changed_files(tmp_path):
    kept = tmp_path / "etc" / "kept.conf"
    kept.parent.mkdir()
    kept.write_text("the owner's settings\n")
    kept.chmod(0o600)
    before = tree(tmp_path)
    plan = inst.Plan((), (
        inst.WriteFile(tmp_path / "etc" / "new" / "deep" / "a.conf", "a\n"),
        inst.WriteFile(kept, "overwritten\n"),
        inst.Link(tmp_path / "bin" / "car-runtime", EXE),
        inst.WriteFile(tmp_path / "etc" / "blocker", "a file\n"),
        inst.WriteFile(tmp_path / "etc" / "blocker" / "b.conf", "b\n"),  # parent is a file: fails
    ), ())
    lines: list[str] = []
    with pytest.raises(ConfigError) as info:
        inst.execute(plan, run_commands=False, echo=lines.append)
    message = str(info.value)
    assert message.startswith(f"write {tmp_path}/etc/blocker/b.conf (2 bytes) failed")
    assert "the 4 earlier step(s) were undone, nothing is left behind" in message
    assert len(lines) == 4  # what was done before the failure was reported as it happened
    assert tree(tmp_path) == before  # folders created on the way are gone too
    assert kept.stat().st_mode & 0o777 == 0o600


def test_a_failed_command_undoes_earlier_commands_and_says_what_is_left(tmp_path):
    marker = tmp_path / "created-by-command"
    plan = inst.Plan((), (
        inst.WriteFile(tmp_path / "unit.service", "[Service]\n"),
        inst.Run(("touch", str(marker)), ("rm", str(marker))),  # undone fine
        inst.Run(("true",), ("false",)),  # its undo fails: must be reported
        inst.Run(("sh", "-c", "exit 3")),
    ), ())
    with pytest.raises(ConfigError) as info:
        inst.execute(plan, run_commands=True, echo=lambda _: None)
    message = str(info.value)
    assert message.startswith("sh -c 'exit 3' failed (status 3; run it by hand to see why)")
    assert "could not undo: the effect of `true`: `false` failed; remove those by hand" in message
    assert not marker.exists() and not (tmp_path / "unit.service").exists()


def test_create_if_missing_creates_keeps_and_rolls_back(tmp_path):
    made = []

    def create(path: Path) -> None:
        path.write_text("secret\n")
        made.append(path)

    target = tmp_path / "var" / "lib" / "car-runtime" / "web-password"
    plan = inst.Plan((), (inst.CreateIfMissing(target, create, "web cockpit password file"),
                          inst.Run(("false",))), ())
    with pytest.raises(ConfigError, match="1 earlier step"):
        inst.execute(plan, run_commands=True, echo=lambda _: None)
    assert made == [target] and not target.exists() and not (tmp_path / "var").exists()
    target.parent.mkdir(parents=True)
    target.write_text("existing\n")
    lines: list[str] = []
    inst.execute(inst.Plan((), plan.steps[:1], ()), run_commands=False, echo=lines.append)
    assert target.read_text() == "existing\n" and lines == [
        f"kept {target} (web cockpit password file exists)"]
