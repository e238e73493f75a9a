"""Password file, sessions and the login limiter (pure parts), and `car-runtime web-password`
as a real process."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from car_runtime.errors import ConfigError
from car_runtime.web.auth import (
    LoginLimiter, PasswordFile, PasswordRecord, Sessions, create_password_file, hash_password,
    write_password_file)
from helpers import car_runtime_cmd


def test_hash_is_salted_and_verifies_in_constant_time(tmp_path):
    a, b = hash_password("same password"), hash_password("same password")
    assert a != b and a.startswith("scrypt$16384$8$1$")
    rec = PasswordRecord.parse(a, "x")
    assert rec.verify("same password") and not rec.verify("same passwore") and not rec.verify("")


def test_file_is_0600_atomic_and_reread_on_change(tmp_path):
    p = write_password_file(tmp_path / "d" / "pw", "first password")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert [x.name for x in p.parent.iterdir()] == ["pw"]  # no temp file left
    pf = PasswordFile(p)
    assert pf.current().verify("first password")
    write_password_file(p, "second password")
    assert pf.current().verify("second password") and not pf.current().verify("first password")


def test_create_password_file_returns_a_working_random_password(tmp_path):
    pw = create_password_file(tmp_path / "pw")
    assert len(pw) >= 16
    assert PasswordFile(tmp_path / "pw").current().verify(pw)
    assert create_password_file(tmp_path / "pw2") != pw


def test_bad_inputs_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="at least 8"):
        write_password_file(tmp_path / "pw", "short")
    with pytest.raises(ConfigError, match="web-password --file"):
        PasswordFile(tmp_path / "missing").current()
    (tmp_path / "garbage").write_text("sha224:abcdef\n")
    with pytest.raises(ConfigError, match="not a car-runtime password file"):
        PasswordFile(tmp_path / "garbage").current()
    with pytest.raises(ConfigError, match="does not exist"):
        write_password_file(tmp_path / "pw", "long enough", owner="no-such-user-here")


def test_sessions_expire_end_on_password_change_and_are_bounded():
    rec1, rec2 = (PasswordRecord.parse(hash_password(p), "x") for p in ("password one", "password two"))
    s = Sessions(idle_s=3600, max_sessions=3)
    first = s.open(rec1, "a")
    assert s.get(first.token, rec1) is first
    assert s.get(first.token, rec2) is None and s.get(first.token, rec1) is None  # password changed
    tokens = [s.open(rec1, "a").token for _ in range(5)]
    assert len(s) == 3 and s.get(tokens[0], rec1) is None and s.get(tokens[-1], rec1) is not None
    short = Sessions(idle_s=-1)
    assert short.get(short.open(rec1, "a").token, rec1) is None


def test_login_limiter_per_address_and_total():
    lim = LoginLimiter(per_peer=2, total=3, window_s=60)
    assert lim.retry_after_s("a") == 0
    lim.failed("a"), lim.failed("a")
    assert 0 < lim.retry_after_s("a") <= 60 and lim.retry_after_s("b") == 0
    lim.failed("b")
    assert lim.retry_after_s("c") > 0  # 3 failures in all: everyone waits


def run_cli(*args, stdin=""):
    return subprocess.run([*car_runtime_cmd(), "web-password", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_cli_sets_generates_and_refuses(tmp_path):
    p = tmp_path / "pw"
    r = run_cli("--file", str(p), "--stdin", stdin="a fine passphrase\n")
    assert r.returncode == 0 and "saved" in r.stdout
    assert PasswordFile(p).current().verify("a fine passphrase")
    r = run_cli("--file", str(p), "--generate")
    assert r.returncode == 0
    generated = r.stdout.split("is:")[1].split()[0]
    assert PasswordFile(p).current().verify(generated)
    r = run_cli("--file", str(p), "--stdin", stdin="short\n")
    assert r.returncode == 2 and r.stderr.strip() == "error: the web password needs at least 8 characters"
    assert PasswordFile(p).current().verify(generated)  # unchanged
    r = run_cli("--file", str(p))  # no terminal here
    assert r.returncode == 2 and "--stdin or --generate" in r.stderr and "Traceback" not in r.stderr
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"web_password_file: {tmp_path / 'from-config'}\n")
    assert run_cli("--config", str(cfg), "--generate").returncode == 0
    assert (tmp_path / "from-config").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_root_resetting_the_password_keeps_the_files_owner(tmp_path):
    """`sudo car-runtime web-password` on the service's file: the service can still read it."""
    p = write_password_file(tmp_path / "pw", "first password", owner="nobody")
    assert (p.stat().st_uid, p.stat().st_gid) == (65534, 65534)
    write_password_file(p, "second password")
    st = p.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o600)
    assert PasswordFile(p).current().verify("second password")
    fresh = write_password_file(tmp_path / "new", "third password")  # a new file: root's
    assert (fresh.stat().st_uid, fresh.stat().st_gid) == (0, 0)
