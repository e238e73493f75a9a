"""car_runtime/data/systemd/99-car-runtime.rules: well-formed udev syntax, and its PWM shell command really
grants the group write access on a sysfs-shaped tree."""

from __future__ import annotations

import grp
import os
import re
import stat
import subprocess

from actuation_fakes import FakeSysfs

from car_runtime import data

RULES = data.SYSTEMD / "99-car-runtime.rules"
PAIR = re.compile(r'\s*([A-Z_]+(?:\{[A-Za-z_]+\})?)\s*(==|!=|\+=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
MATCH_KEYS = {"ACTION", "SUBSYSTEM", "KERNEL", "KERNELS", "ENV", "ATTR"}
ASSIGN_KEYS = {"RUN", "GROUP", "MODE", "OWNER"}


def parse_rules() -> list[list[tuple[str, str, str]]]:
    rules = []
    for line in RULES.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pos, pairs = 0, []
        while pos < len(line):
            m = PAIR.match(line, pos)
            assert m, f"bad udev syntax at column {pos}: {line[pos:pos + 40]!r}"
            pairs.append(m.groups())
            pos = m.end()
        for key, op, _ in pairs:
            base = key.split("{")[0]
            if op in ("==", "!="):
                assert base in MATCH_KEYS, key
            else:
                assert base in ASSIGN_KEYS, key
        rules.append(pairs)
    return rules


def test_rules_cover_pwm_gpio_and_video_and_header_says_how_to_install():
    rules = parse_rules()
    matched = [{k: v for k, op, v in r if op == "=="} for r in rules]
    assert {"SUBSYSTEM": "pwm", "KERNEL": "pwmchip*", "ACTION": "add|change"} in matched
    assert any(m.get("SUBSYSTEM") == "gpio" and m.get("KERNEL") == "gpio[0-9]*" for m in matched)
    assert any(m.get("SUBSYSTEM") == "video4linux" for m in matched)
    # the battery board's bus only (the cockpit's battery level), not every I2C bus
    assert {"SUBSYSTEM": "i2c-dev", "KERNELS": "0000:00:17.3"} in matched
    text = RULES.read_text()
    for needle in ("groupadd --system car-runtime", "/etc/udev/rules.d/", "udevadm control --reload",
                   "udevadm trigger", "usermod -aG car-runtime"):
        assert needle in text


def udev_expand(value: str, devpath: str) -> str:
    """The two substitutions the rules use: %p (device path) and $$ (a literal $)."""
    return value.replace("%p", devpath).replace("$$", "$")


def test_pwm_rule_command_grants_group_write(tmp_path):
    fs = FakeSysfs(tmp_path, exported=(0, 1), gpio=False)
    chip_real = fs.chip_dirs["pwmchip0"]
    for p in chip_real.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    pwm_rule = next(r for r in parse_rules() if ("SUBSYSTEM", "==", "pwm") in r)
    run = next(v for k, op, v in pwm_rule if k == "RUN")
    group = grp.getgrgid(os.getgid()).gr_name if os.getgid() != 0 else "daemon"
    devpath = "/" + str(chip_real.relative_to(tmp_path / "sys"))
    cmd = udev_expand(run, devpath).replace("/sys/", f"{tmp_path}/sys/").replace("car-runtime", group)
    assert cmd.startswith("/bin/sh -c '") and cmd.endswith("'")
    r = subprocess.run(["/bin/sh", "-c", cmd[len("/bin/sh -c '"):-1]], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    gid = grp.getgrnam(group).gr_gid
    for f in ["export", "unexport"] + [f"pwm{c}/{a}" for c in (0, 1) for a in ("period", "duty_cycle", "enable", "polarity")]:
        st = (chip_real / f).stat()
        assert st.st_gid == gid and st.st_mode & stat.S_IWGRP, f
