"""Config and calibration loading everywhere (not only `neutral`): every unusable file or value
is one `error:` line and exit 2 -- never a traceback, never a hang -- and every key is
type-checked before anything copies or prints it."""

from __future__ import annotations

import os
import time

import pytest

from car_runtime.cli.main import main
from car_runtime.config import from_mapping
from car_runtime.errors import ConfigError

BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "model: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n")

CASES = [
    ("non-utf8", b"model: m.tar.gz\xff\n", "not UTF-8"),
    ("5000 digits", b"max_speed_pct: " + b"9" * 5000 + b"\n", "5000-digit"),
    ("deep nesting", b"model: " + b"[" * 50_000 + b"\n", "levels deep"),
    ("alias bomb", BOMB.encode(), "alias"),
    ("model is a list", b"model: [a, b]\n", "model must be the path"),
    ("model is a number", b"model: 12\n", "model must be the path"),
    ("model is empty", b"model: ''\n", "model must be the path"),
    ("camera is a mapping", b"camera: {a: 1}\n", "camera must be a non-empty string"),
    ("threads float", b"threads: 2.5\n", "threads must be a whole number"),
    ("huge int speed", b"max_speed_pct: " + b"9" * 25 + b"\n", "max_speed_pct"),
    ("huge int deadline", b"deadline_ms: " + b"9" * 29 + b"\n", "deadline_ms"),
    ("nan", b"deadline_ms: .nan\n", "deadline_ms"),
    ("complex key", b"? [a, b]\n: 1\n", "not valid YAML"),
    ("bool key", b"true: 1\n", "setting names must be words"),
    ("python tag", b"model: !!python/name:os.system\n", "not valid YAML"),
    ("too large", b"#" * 70_000, "more than the 65536"),
    ("list at top", b"- a\n", "mapping"),
    ("many unknown keys", "".join(f"k{i}: 1\n" for i in range(50)).encode(), "unknown setting"),
]


@pytest.mark.parametrize("name, body, needle", CASES, ids=[c[0] for c in CASES])
def test_run_refuses_a_hostile_config_in_one_line(tmp_path, capsys, name, body, needle):
    cfg = tmp_path / "config.yaml"
    cfg.write_bytes(body)
    t = time.perf_counter()
    code = main(["run", "--config", str(cfg), "--output", "record:"])
    took = time.perf_counter() - t
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err, err
    assert len(err) < 1000  # a bounded message: no value is printed in full
    print(f"{name}: exit 2 in {took * 1e3:.0f} ms: {err.strip()[:140]}")


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory"])
def test_run_refuses_a_config_that_is_not_a_regular_file(tmp_path, capsys, kind):
    cfg = tmp_path / "config.yaml"
    if kind == "fifo":
        os.mkfifo(cfg)
    elif kind == "dev_zero":
        cfg.symlink_to("/dev/zero")
    else:
        cfg.mkdir()
    code = main(["run", "--config", str(cfg)])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "not a regular file" in err


@pytest.mark.parametrize("body, needle", [
    (b"[" * 50_000, "nests too deeply"), (b'{"Calibration": ' + b"7" * 5000 + b"}", "5000-digit"),
])
def test_run_refuses_a_hostile_calibration_in_one_line(tmp_path, capsys, demo_model, body, needle):
    cal = tmp_path / "cal.json"
    cal.write_bytes(body)
    code = main(["run", "--model", str(demo_model), "--calibration", str(cal), "--output",
                 "record:", "--camera", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err


def test_every_key_is_type_checked():
    for key, value in [("model", ["x"]), ("output", 3), ("calibration", None), ("device", []),
                       ("precision", {"a": 1}), ("preprocess", 1.5), ("arm", "yes"),
                       ("guardian", 1), ("fps", "fast"), ("web_password_file", 0)]:
        with pytest.raises(ConfigError, match=key):
            from_mapping({key: value})
