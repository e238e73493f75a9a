"""Calibration record, stock file I/O, history, and the one value -> pulse conversion."""

from __future__ import annotations

import json
import logging
import math
import os

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from car_runtime import data
from car_runtime.actuation import calibration as c
from car_runtime.actuation.calibration import Calibration, ChannelCalibration
from car_runtime.errors import CalibrationError

SHIPPED = data.CALIBRATION / "calibration.json"
SCHEMA = data.CALIBRATION / "calibration.schema.json"


def stock_duty(v: float, ch: ChannelCalibration) -> int:
    """aws-deepracer-servo-pkg servo_mgr.cpp servoSubscriber, for v in [-1, 1]."""
    adj = v * ch.polarity
    if adj < 0:
        return int(ch.mid_ns + adj * (ch.mid_ns - ch.min_ns))
    if adj > 0:
        return int(ch.mid_ns + adj * (ch.max_ns - ch.mid_ns))
    return ch.mid_ns


# ---------------------------------------------------------------- defaults and shipped file


def test_shipped_file_is_the_defaults_byte_for_byte():
    assert SHIPPED.read_text() == c.dumps_stock(Calibration.defaults())
    assert c.load_calibration(SHIPPED) == Calibration.defaults()


def test_defaults_are_the_stock_values(cal):
    assert (cal.servo.min_ns, cal.servo.mid_ns, cal.servo.max_ns, cal.servo.polarity) == (1200000, 1450000, 1700000, 1)
    assert (cal.motor.min_ns, cal.motor.mid_ns, cal.motor.max_ns, cal.motor.polarity) == (1311000, 1446000, 1603500, -1)
    assert cal.period_ns == c.PERIOD_NS == 20_000_000
    assert cal.neutral_ns() == (1450000, 1446000)


def test_stock_worked_examples(cal):
    # deepracer-stock-stack.md section 5.3
    assert cal.motor.to_duty_ns(0.32) == (1402800, False)
    assert cal.servo.to_duty_ns(1.0) == (1700000, False)
    assert cal.servo.to_duty_ns(-1.0) == (1200000, False)
    assert cal.motor.to_duty_ns(1.0) == (1311000, False)  # polarity -1: forward is the short pulse
    assert cal.motor.to_duty_ns(-1.0) == (1603500, False)


@pytest.mark.parametrize(
    "value, expected",
    [(math.nan, (1450000, True)), (math.inf, (1450000, True)), (-math.inf, (1450000, True)),
     (1.5, (1700000, True)), (-7.0, (1200000, True)), (10**400, (1700000, True)), (0, (1450000, False)),
     (-0.0, (1450000, False))],
)
def test_non_finite_and_out_of_range(cal, value, expected):
    assert cal.servo.to_duty_ns(value) == expected


def _mini_validate(instance, schema, root):
    """The subset of JSON Schema the shipped schema uses ($ref, type, required, properties,
    enum, const, minimum, maximum) -- enough to check file and schema agree."""
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return _mini_validate(instance, node, root)
    t = schema.get("type")
    if t == "object":
        assert isinstance(instance, dict), instance
        for k in schema.get("required", []):
            assert k in instance, f"missing {k}"
        for k, sub in schema.get("properties", {}).items():
            if k in instance:
                _mini_validate(instance[k], sub, root)
    if t == "integer":
        assert isinstance(instance, int) and not isinstance(instance, bool), instance
    if "enum" in schema:
        assert instance in schema["enum"], instance
    if "const" in schema:
        assert instance == schema["const"], instance
    if "minimum" in schema:
        assert instance >= schema["minimum"]
    if "maximum" in schema:
        assert instance <= schema["maximum"]


def test_schema_accepts_what_we_write_and_rejects_what_we_reject(cal):
    schema = json.loads(SCHEMA.read_text())
    _mini_validate(json.loads(SHIPPED.read_text()), schema, schema)
    _mini_validate(cal.with_values({"servo.mid": 1460000}).to_stock_dict(), schema, schema)
    bad = cal.to_stock_dict()
    bad["Calibration"]["Servo"]["polarity"] = 0
    with pytest.raises(AssertionError):
        _mini_validate(bad, schema, schema)
    with pytest.raises(CalibrationError, match="polarity"):
        Calibration.from_stock_dict(bad)
    bad = cal.to_stock_dict()
    del bad["Calibration"]["Motor"]["mid"]
    with pytest.raises(AssertionError):
        _mini_validate(bad, schema, schema)
    with pytest.raises(CalibrationError, match=r"Calibration\.Motor\.mid"):
        Calibration.from_stock_dict(bad)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "args, match",
    [((1500000, 1450000, 1700000, 1), "min < mid < max"),
     ((1200000, 1450000, 1450000, 1), "min < mid < max"),
     ((1200000, 1450000, 20_000_001, 1), "min < mid < max"),
     ((-1, 1450000, 1700000, 1), "min < mid < max"),
     ((1200000, 1450000, 1700000, 0), "polarity"),
     ((1200000, 1450000, 1700000, 2), "polarity"),
     ((1200000.0, 1450000, 1700000, 1), "integer"),
     ((1200000, 1450000, 1700000, True), "integer")],
)
def test_channel_validation(args, match):
    with pytest.raises(CalibrationError, match=match):
        ChannelCalibration(*args)


def test_calibration_period_validation(cal):
    with pytest.raises(CalibrationError, match="period"):
        Calibration(cal.servo, cal.motor, period_ns=1_600_000)
    with pytest.raises(CalibrationError, match="period_ns"):
        Calibration(cal.servo, cal.motor, period_ns=0)


def test_from_stock_dict_variants(cal, caplog):
    d = cal.to_stock_dict()
    assert Calibration.from_stock_dict(d) == cal
    d["Calibration"]["Servo"]["mid"] = 1460000.0  # jsoncpp asInt() accepts integral reals
    d["Calibration"]["Servo"]["extra"] = "ignored"
    assert Calibration.from_stock_dict(d).servo.mid_ns == 1460000
    d["Calibration"]["Servo"]["mid"] = 1460000.5
    with pytest.raises(CalibrationError, match="integer"):
        Calibration.from_stock_dict(d)
    d = cal.to_stock_dict()
    d["Calibration"]["version"] = 2
    with pytest.raises(CalibrationError, match="version"):
        Calibration.from_stock_dict(d)
    del d["Calibration"]["version"]
    with caplog.at_level(logging.WARNING):
        assert Calibration.from_stock_dict(d) == cal
    assert "version" in caplog.text
    for bad in ([], {}, {"Calibration": []}, {"Calibration": {"Servo": {}}}):
        with pytest.raises(CalibrationError):
            Calibration.from_stock_dict(bad)


def test_with_values(cal):
    new = cal.with_values({"servo.mid": 1460000, "motor.polarity": 1})
    assert new.servo.mid_ns == 1460000 and new.motor.polarity == 1 and new.motor.mid_ns == cal.motor.mid_ns
    with pytest.raises(CalibrationError, match="unknown calibration key"):
        cal.with_values({"steering.mid": 1})
    with pytest.raises(CalibrationError, match="servo: need"):
        cal.with_values({"servo.mid": 1800000})


def test_console_units():
    assert c.console_units("servo", 1450000) == -5.0
    assert c.console_units("motor", 1446000) == -12.0
    assert c.console_units("servo", 1700000) == 20.0


# ---------------------------------------------------------------- the conversion, property-tested

distinct_triples = st.lists(st.integers(0, c.PERIOD_NS), min_size=3, max_size=3, unique=True).map(sorted)
channels = st.builds(lambda t, pol: ChannelCalibration(t[0], t[1], t[2], pol), distinct_triples,
                     st.sampled_from((-1, 1)))
any_value = st.one_of(
    st.floats(-1, 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.sampled_from((math.nan, math.inf, -math.inf, 1e308, -1e308, 1.0000001, -1.0000001, 5e-324)),
)


@settings(max_examples=1500, deadline=None)
@given(ch=channels, v=any_value)
@example(ch=ChannelCalibration(1311000, 1446000, 1603500, -1), v=0.32)
def test_duty_always_within_range_and_stock_inside_unit_interval(ch, v):
    duty, adjusted = ch.to_duty_ns(v)
    assert type(duty) is int
    assert ch.min_ns <= duty <= ch.max_ns
    finite_in_range = math.isfinite(v) and -1 <= v <= 1
    assert adjusted is (not finite_in_range)
    if finite_in_range:
        assert duty == stock_duty(v, ch)
    elif not math.isfinite(v):
        assert duty == ch.mid_ns
    else:
        assert duty == (ch.max_ns if v * ch.polarity > 0 else ch.min_ns)


@settings(max_examples=300, deadline=None)
@given(ch=channels, a=st.floats(-1, 1), b=st.floats(-1, 1))
def test_duty_is_monotonic_in_value_times_polarity(ch, a, b):
    a, b = sorted((a, b))
    (da, _), (db, _) = ch.to_duty_ns(a), ch.to_duty_ns(b)
    assert (db - da) * ch.polarity >= 0


# ---------------------------------------------------------------- load / save / history


def test_load_missing(tmp_path, caplog):
    p = tmp_path / "cal.json"
    with pytest.raises(CalibrationError, match=r"not found.*car-runtime calibrate --file .*--reset-defaults"):
        c.load_calibration(p)
    with caplog.at_level(logging.WARNING):
        assert c.load_calibration(p, missing="defaults") == Calibration.defaults()
    assert "not found" in caplog.text
    with pytest.raises(ValueError):
        c.load_calibration(p, missing="ignore")


@pytest.mark.parametrize(
    "content, match",
    [(b"{not json", "not valid JSON"), (b"\xff\xfe", "not UTF-8 text"), (b"[]", "Calibration"),
     (b'{"Calibration": {"Servo": {"min": 1, "mid": 2, "max": 3, "polarity": 1}}}', "Motor")],
)
def test_load_invalid_names_file_and_fix(tmp_path, content, match):
    p = tmp_path / "cal.json"
    p.write_bytes(content)
    with pytest.raises(CalibrationError, match=match) as e:
        c.load_calibration(p)
    msg = str(e.value)
    assert str(p) in msg and "--reset-defaults" in msg and "\n" not in msg


def test_load_unreadable(tmp_path):
    (tmp_path / "cal.json").mkdir()  # a directory where the file should be
    with pytest.raises(CalibrationError, match="cal.json is a directory, not a regular file"):
        c.load_calibration(tmp_path / "cal.json")


def test_save_roundtrip_mode_and_history(tmp_path, cal):
    p = tmp_path / "sub" / "calibration.json"
    assert c.save_calibration(cal, p) == p
    assert p.read_text() == c.dumps_stock(cal)
    assert oct(p.stat().st_mode & 0o777) == oct(0o644)
    assert c.list_history(p) == []  # nothing was replaced yet
    os.chmod(p, 0o640)
    cals = [cal.with_values({"servo.mid": 1450000 + 1000 * i}) for i in range(1, 14)]
    for x in cals:
        c.save_calibration(x, p, keep=10)
    assert c.load_calibration(p) == cals[-1]
    assert oct(p.stat().st_mode & 0o777) == oct(0o640)  # the file keeps its permissions
    hist = c.list_history(p)
    assert [e.n for e in hist] == list(range(1, 11))
    # newest first: entry 1 is the version replaced last
    assert [e.calibration for e in hist] == list(reversed([cal, *cals[:-1]]))[:10]
    assert all(e.error is None and e.replaced_utc.endswith("+00:00") for e in hist)
    assert not list(p.parent.glob("*.tmp"))


def test_restore_history(tmp_path, cal):
    p = tmp_path / "calibration.json"
    a, b = cal.with_values({"servo.mid": 1461000}), cal.with_values({"servo.mid": 1462000})
    for x in (cal, a, b):
        c.save_calibration(x, p)
    assert c.restore_history(p, 2) == cal  # 1 = a (replaced by b), 2 = cal
    assert c.load_calibration(p) == cal
    assert c.list_history(p)[0].calibration == b  # the restore kept b
    with pytest.raises(CalibrationError, match=r"choose 1\.\.3"):
        c.restore_history(p, 4)
    c.list_history(p)[0].path.write_text("garbage")
    assert c.list_history(p)[0].calibration is None
    with pytest.raises(CalibrationError, match="not a valid calibration"):
        c.restore_history(p, 1)
    with pytest.raises(CalibrationError, match="no calibration history"):
        c.restore_history(tmp_path / "other.json", 1)


def test_save_into_unwritable_place_is_a_calibration_error(tmp_path, cal):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CalibrationError, match="cannot write calibration file"):
        c.save_calibration(cal, blocker / "calibration.json")  # parent is a file
