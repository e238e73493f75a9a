"""Sysfs PWM against a real directory tree shaped like /sys/class/pwm (and /sys/class/gpio)."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import pytest
from actuation_fakes import FakeSysfs, WriteLog

from car_runtime.actuation.calibration import Calibration
from car_runtime.actuation.output import Actuator, DutyWrite
from car_runtime.actuation.sysfs_pwm import SysfsPwm, find_chip
from car_runtime.errors import HardwareError



def attrs(d: Path) -> dict[str, str]:
    return {f: (d / f).read_text() for f in ("period", "duty_cycle", "enable")}


def test_start_exports_and_writes_stock_values_in_order(fake_sys, cal):
    with WriteLog(fake_sys.root) as log:
        out = SysfsPwm(cal, root=fake_sys.pwm, gpio=436, gpio_root=fake_sys.gpio)
    chip = fake_sys.chip()
    assert out.chip == chip
    assert attrs(chip / "pwm0") == {"period": "20000000", "duty_cycle": "1446000", "enable": "1"}  # ESC
    assert attrs(chip / "pwm1") == {"period": "20000000", "duty_cycle": "1450000", "enable": "1"}  # servo
    assert [v for _, v in fake_sys.exports] == ["0", "1", "436"]
    assert (fake_sys.gpio / "gpio436" / "direction").read_text() == "out"
    assert (fake_sys.gpio / "gpio436" / "value").read_text() == "0"  # 0 = power on
    c = "sys/class/pwm/pwmchip0"
    g = "sys/class/gpio"
    assert log.paths == [
        f"{c}/export", f"{c}/pwm0/period", f"{c}/pwm0/duty_cycle", f"{c}/pwm0/enable",
        f"{c}/export", f"{c}/pwm1/period", f"{c}/pwm1/duty_cycle", f"{c}/pwm1/enable",
        f"{g}/export", f"{g}/gpio436/direction", f"{g}/gpio436/value",
    ]
    out.close()


def test_actuator_on_sysfs_motor_first_then_servo_and_neutral_on_close(fake_sys, cal):
    chip = fake_sys.chip()
    act = Actuator(SysfsPwm(cal, root=fake_sys.pwm, gpio=514, gpio_root=fake_sys.gpio), cal)
    with WriteLog(fake_sys.root) as log:
        act.command(1.0, 0.32)
    assert log.paths == ["sys/class/pwm/pwmchip0/pwm0/duty_cycle", "sys/class/pwm/pwmchip0/pwm1/duty_cycle"]
    assert (chip / "pwm0/duty_cycle").read_text() == "1402800"
    assert (chip / "pwm1/duty_cycle").read_text() == "1700000"
    act.command(-1.0, 0.0)
    assert (chip / "pwm1/duty_cycle").read_text() == "1200000"  # shorter than before: no stale digits
    act.raw(999999, None)
    assert (chip / "pwm1/duty_cycle").read_text() == "999999"
    act.close()
    assert attrs(chip / "pwm0") == {"period": "20000000", "duty_cycle": "1446000", "enable": "1"}
    assert attrs(chip / "pwm1") == {"period": "20000000", "duty_cycle": "1450000", "enable": "1"}
    assert (fake_sys.gpio / "gpio514/value").read_text() == "0"  # power left on, like stock


def test_standalone_output_close_returns_to_neutral(tmp_path, cal):
    fs = FakeSysfs(tmp_path, exported=(0, 1))
    out = SysfsPwm(cal, root=fs.pwm)
    out.write(DutyWrite(0.0, 1.0, 1.0, 1700000, 1311000, {}))
    assert (fs.chip() / "pwm1/duty_cycle").read_text() == "1700000"
    with WriteLog(fs.root) as log:
        out.close()
        out.close()
    assert log.paths == ["sys/class/pwm/pwmchip0/pwm0/duty_cycle", "sys/class/pwm/pwmchip0/pwm1/duty_cycle"]
    assert attrs(fs.chip() / "pwm0")["duty_cycle"] == "1446000"
    assert attrs(fs.chip() / "pwm1")["duty_cycle"] == "1450000"
    with pytest.raises(RuntimeError, match="closed"):
        out.write(DutyWrite(0.0, 0.0, 0.0, 1450000, 1446000, {}))


def test_already_exported_channels_are_not_exported_again(tmp_path, cal):
    fs = FakeSysfs(tmp_path, exported=(0, 1, 2))  # no kernel thread: an export write would hang
    with WriteLog(fs.root) as log:
        SysfsPwm(cal, root=fs.pwm, export_timeout_s=0.2).close()
    assert not [p for p in log.paths if p.endswith("export")]
    assert (fs.chip() / "pwm1/duty_cycle").read_text() == "1450000"


def test_configurable_channels(tmp_path, cal):
    fs = FakeSysfs(tmp_path, exported=(2, 3))
    act = Actuator(SysfsPwm(cal, root=fs.pwm, motor_channel=3, servo_channel=2), cal)
    act.command(1, 1)
    assert (fs.chip() / "pwm3/duty_cycle").read_text() == "1311000"
    assert (fs.chip() / "pwm2/duty_cycle").read_text() == "1700000"
    act.close()
    with pytest.raises(HardwareError, match="different PWM channels"):
        SysfsPwm(cal, root=fs.pwm, motor_channel=2, servo_channel=2)


def test_chip_selection(tmp_path):
    fs = FakeSysfs(tmp_path / "a", {"pwmchip0": "0000:00:1a.0", "pwmchip1": "0000:00:17.0", "pwmchip2": "0000:00:02.0"},
                   gpio=False)
    assert find_chip(fs.pwm) == fs.pwm / "pwmchip1"  # the stock PCI device wins over pwmchip0
    assert find_chip(fs.pwm, "pwmchip2") == fs.pwm / "pwmchip2"  # an explicit chip wins
    with pytest.raises(HardwareError, match=r"pwmchip9 not found .*found: pwmchip0, pwmchip1, pwmchip2"):
        find_chip(fs.pwm, "pwmchip9")
    fs = FakeSysfs(tmp_path / "b", {"pwmchip0": "0000:00:1a.0", "pwmchip3": "0000:00:1b.0"}, gpio=False)
    assert find_chip(fs.pwm) == fs.pwm / "pwmchip0"  # no stock device: pwmchip0, like stock
    fs = FakeSysfs(tmp_path / "c", {"pwmchip4": "0000:00:1b.0"}, gpio=False)
    with pytest.raises(HardwareError, match=r"no PWM chip under .*found: pwmchip4.*chip=pwmchipN"):
        find_chip(fs.pwm)
    with pytest.raises(HardwareError, match=r"no PWM class directory .*record:"):
        find_chip(tmp_path / "nope")


def test_export_that_never_appears(tmp_path, cal):
    fs = FakeSysfs(tmp_path)  # kernel thread not started: nothing reacts to export
    with pytest.raises(HardwareError, match=r"did not appear within 0.2 s"):
        SysfsPwm(cal, root=fs.pwm, export_timeout_s=0.2)


def test_gpio_dir_missing(tmp_path, cal):
    fs = FakeSysfs(tmp_path, exported=(0, 1), gpio=False)
    with pytest.raises(HardwareError, match="no GPIO class directory"):
        SysfsPwm(cal, root=fs.pwm, gpio=436, gpio_root=fs.gpio)


def test_write_errors_are_hardware_errors(tmp_path, cal):
    fs = FakeSysfs(tmp_path, exported=(0, 1))
    out = SysfsPwm(cal, root=fs.pwm)
    d = fs.chip_dirs["pwmchip0"] / "pwm1"
    (d / "duty_cycle").unlink()
    (d / "duty_cycle").mkdir()  # a directory where the attribute should be: EISDIR, not EACCES
    with pytest.raises(HardwareError, match=r"cannot write '1450000' to .*duty_cycle: EISDIR"):
        Actuator(out, cal)


# ---------------------------------------------------------------- permission denied
#
# chmod does not stop root, so as root the writer runs in a forked child that drops to
# `nobody`: the kernel then really refuses the write (EACCES) on a root-owned 0644 file.


def _run_unprivileged(pwm_dir: Path, timeout_s: float) -> tuple[int, str]:
    """Open a SysfsPwm on ``pwm_dir`` in a child process (as nobody when we are root).
    Returns (status, message): 0 "ok", 3 "HardwareError: ...", 4 anything else."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code, msg = 4, "?"
        try:
            os.close(r)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            try:
                SysfsPwm(Calibration.defaults(), root=pwm_dir, export_timeout_s=timeout_s).close()
                code, msg = 0, "ok"
            except HardwareError as e:
                code, msg = 3, f"HardwareError: {e}"
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            msg = repr(e)
        finally:
            os.write(w, msg.encode())
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        msg = fh.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), msg


@pytest.fixture
def world_readable_tree():
    """The fake tree in a directory anyone can traverse (pytest's tmp_path is private to us)."""
    d = Path(tempfile.mkdtemp(prefix="car-runtime-perm-"))
    os.chmod(d, 0o755)
    fs = FakeSysfs(d, exported=(0, 1), gpio=False)
    for p in d.rglob("*"):
        if not p.is_symlink():
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    yield fs
    import shutil

    shutil.rmtree(d)


def _lock(path: Path) -> None:
    os.chmod(path, 0o444)  # enough for an ordinary user; for root the child runs as nobody


def test_permission_denied_names_the_udev_rule(world_readable_tree):
    fs = world_readable_tree
    _lock(fs.chip_dirs["pwmchip0"] / "pwm0" / "period")
    code, msg = _run_unprivileged(fs.pwm, 0.05)
    assert code == 3, msg
    assert "permission denied writing" in msg and "pwm0/period" in msg
    assert "99-car-runtime.rules" in msg and "install-service" in msg and "car-runtime" in msg
    assert "\n" not in msg


def test_permission_fixed_by_udev_a_moment_later_is_waited_for(world_readable_tree):
    fs = world_readable_tree
    files = [fs.chip_dirs["pwmchip0"] / f"pwm{c}" / a for c in (0, 1) for a in ("period", "duty_cycle", "enable")]
    for f in files:
        _lock(f)

    def udev():  # what the rule does, asynchronously
        time.sleep(0.3)
        for f in files:
            os.chmod(f, 0o666)

    t = threading.Thread(target=udev)
    t.start()
    code, msg = _run_unprivileged(fs.pwm, 30.0)
    t.join()
    assert (code, msg) == (0, "ok")
    assert (fs.chip_dirs["pwmchip0"] / "pwm1" / "duty_cycle").read_text() == "1450000"
