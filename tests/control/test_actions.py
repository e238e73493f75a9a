"""Policy output -> Decision, against the stock navigation node's formulas.

The expected values are computed here independently, in the navigation node's own form
(``a = (2*1.0 - 4*0.8) / max^2``, ``b = (4*0.8 - 1.0) / max``, ``clamp(a*s^2 + b*s, -1, 1)``),
and a few are written out by hand (the stock docs' worked example).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from car_runtime.control.actions import NEUTRAL, ActionMapper, speed_curve
from car_runtime.errors import ConfigError
from car_runtime.model.metadata import parse_metadata


def stock_throttle(speed: float, max_speed: float, pct: float) -> float:
    """navigation_pkg: coefficients from DEFAULT_SPEED_SCALES [1.0, 0.8]; 0 if max <= 0."""
    if max_speed <= 0:
        return 0.0
    a = (2 * 1.0 - 4 * 0.8) / max_speed**2
    b = (4 * 0.8 - 1.0) / max_speed
    return pct / 100.0 * max(-1.0, min(1.0, a * speed * speed + b * speed))


def stock_angle(steer: float, max_steer: float) -> float:
    return steer / max_steer if max_steer > 0 else 0.0


def discrete(actions: list[tuple[float, float]]):
    return parse_metadata(
        {"action_space": [{"steering_angle": s, "speed": v} for s, v in actions]}
    ).action_space


def continuous(steer: tuple[float, float], speed: tuple[float, float]):
    return parse_metadata({
        "action_space_type": "continuous",
        "action_space": {"steering_angle": {"low": steer[0], "high": steer[1]},
                         "speed": {"low": speed[0], "high": speed[1]}},
    }).action_space


def one_hot(n: int, i: int) -> np.ndarray:
    out = np.full(n, 0.01, np.float32)
    out[i] = 0.9
    return out


# ---- hand-written values -----------------------------------------------------------------------

def test_docs_worked_example():
    """Stock docs: max 0.8 m/s -> a=-1.875, b=2.75; 0.2 m/s -> 0.475; at 40 % -> 0.19."""
    space = discrete([(-30, 0.8), (0, 0.2), (30, 0.4)])
    mapper = ActionMapper(space, max_speed_pct=100)
    d = mapper.decide(one_hot(3, 1))
    assert (d.action_index, d.steering_deg, d.speed_mps) == (1, 0.0, 0.2)
    assert d.throttle == pytest.approx(0.475, abs=1e-12)
    assert d.max_speed_pct == 100.0  # the max speed travels with the decision
    mapper.max_speed_pct = 40
    assert mapper.decide(one_hot(3, 1)).throttle == pytest.approx(0.19, abs=1e-12)
    assert mapper.decide(one_hot(3, 1)).max_speed_pct == 40.0 and d.max_speed_pct == 100.0
    # the curve's anchor points: (max/2, 0.8) and (max, 1.0)
    assert mapper.decide(one_hot(3, 2)).throttle == pytest.approx(0.4 * 0.8, abs=1e-12)
    assert mapper.decide(one_hot(3, 0)).throttle == pytest.approx(0.4 * 1.0, abs=1e-12)
    assert mapper.decide(one_hot(3, 0)).angle == -1.0


@pytest.mark.parametrize(
    "speed, max_speed, expected",
    [
        (0.0, 1.0, 0.0),
        (0.5, 1.0, 0.8),
        (1.0, 1.0, 1.0),
        (0.25, 1.0, 0.475),  # -1.2/16 + 2.2/4
        (-0.25, 1.0, -0.625),  # -1.2/16 - 2.2/4
        (-0.5, 1.0, -1.0),  # -1.4 clamped
        (2.0, 4.0, 0.8),  # relative to the model's own maximum
        (1.0, 0.0, 0.0),  # max <= 0 -> 0 (stock)
        (1.0, -1.0, 0.0),
    ],
)
def test_speed_curve_hand_values(speed, max_speed, expected):
    assert speed_curve(speed, max_speed) == pytest.approx(expected, abs=1e-12)


# ---- table-driven against the stock formulas -----------------------------------------------

DISCRETE_SPACES = {
    "drfc-default": [(-30, 0.6), (-15, 0.6), (0, 0.6), (15, 0.6), (30, 0.6)],
    "two-speed": [(-30, 0.5), (-30, 1.0), (0, 0.5), (0, 1.0), (30, 0.5), (30, 1.0)],
    "asymmetric-steering": [(-10, 1.0), (0, 2.0), (25, 3.0)],  # max|steer| = 25
    "legacy-fast": [(15, 8), (10, 10), (0, 10), (-10, 10), (-15, 8)],
    "negative-speeds": [(0, -0.5), (10, 1.0), (-10, -1.5), (0, 0.25)],  # max|speed| = 1.5
    "zero-speed": [(0, 0.0), (30, 0.0)],  # max speed 0 -> throttle 0
    "zero-steer": [(0, 1.0), (0, 2.0)],  # max steer 0 -> angle 0
}


@pytest.mark.parametrize("name", sorted(DISCRETE_SPACES))
@pytest.mark.parametrize("pct", [0.0, 40.0, 50.0, 100.0])
def test_discrete_every_action_matches_stock(name, pct):
    actions = DISCRETE_SPACES[name]
    mapper = ActionMapper(discrete(actions), max_speed_pct=pct)
    max_steer = max(abs(s) for s, _ in actions)
    max_speed = max(abs(v) for _, v in actions)
    table = mapper.action_table()
    assert len(table) == len(actions)
    for i, (steer, speed) in enumerate(actions):
        for d in (mapper.decide(one_hot(len(actions), i)), table[i]):
            assert d.valid and d.action_index == i
            assert d.steering_deg == steer and d.speed_mps == speed
            assert d.angle == pytest.approx(stock_angle(steer, max_steer), abs=1e-12)
            assert d.throttle == pytest.approx(stock_throttle(speed, max_speed, pct), abs=1e-12)


def test_negative_speed_hand_values():
    mapper = ActionMapper(discrete(DISCRETE_SPACES["negative-speeds"]), max_speed_pct=100)
    # max|speed| = 1.5: -0.5/1.5 = -1/3 -> -1.2/9 - 2.2/3 = -0.8667; -1.5 -> -3.4 -> -1
    assert mapper.decide(one_hot(4, 0)).throttle == pytest.approx(-1.2 / 9 - 2.2 / 3, abs=1e-12)
    assert mapper.decide(one_hot(4, 2)).throttle == -1.0
    assert mapper.decide(one_hot(4, 2)).angle == -1.0


@pytest.mark.parametrize(
    "output, expected_index",
    [
        ([0.2, 0.3, 0.3, 0.2], 1),  # tie: first index wins (Python max / np.argmax)
        ([0.25, 0.25, 0.25, 0.25], 0),
        ([0.1, 0.2, 0.3, 0.4], 3),
        ([0.4, 0.1, 0.1, 0.4], 0),
        ([-1.0, -2.0, -0.5, -0.5], 2),
    ],
)
def test_ties_first_index_wins(output, expected_index):
    mapper = ActionMapper(discrete([(-30, 1), (-10, 1), (10, 1), (30, 1)]), max_speed_pct=100)
    assert mapper.decide(np.array(output, np.float32)).action_index == expected_index


CONTINUOUS_SPACES = {
    "symmetric": ((-30.0, 30.0), (0.5, 1.0)),
    "drfc": ((-30.0, 30.0), (1.0, 2.0)),
    "eswc-asymmetric": ((-18.0, 23.0), (0.5, 1.5)),
    "very-asymmetric": ((-30.0, 10.0), (0.5, 4.0)),  # |angle| up to 3 (stock; servo rejects it)
    "reverse-capable": ((-20.0, 20.0), (-1.0, 1.0)),
    "high-not-positive": ((-30.0, -10.0), (-2.0, -1.0)),  # max = high <= 0 -> 0 (stock)
}


def stock_continuous(raw: tuple[float, float], steer: tuple[float, float],
                     speed: tuple[float, float], pct: float) -> tuple[float, float, float, float]:
    v0 = max(-1.0, min(1.0, raw[0]))
    v1 = max(-1.0, min(1.0, raw[1]))
    s = steer[0] + (v0 + 1) / 2 * (steer[1] - steer[0])
    v = speed[0] + (v1 + 1) / 2 * (speed[1] - speed[0])
    return s, v, stock_angle(s, steer[1]), stock_throttle(v, speed[1], pct)


RAW = [(-1.0, -1.0), (1.0, 1.0), (0.0, 0.0), (0.3, -0.7), (-2.5, 3.0), (1e-3, -0.999)]


@pytest.mark.parametrize("name", sorted(CONTINUOUS_SPACES))
@pytest.mark.parametrize("raw", RAW)
def test_continuous_matches_stock(name, raw):
    steer, speed = CONTINUOUS_SPACES[name]
    mapper = ActionMapper(continuous(steer, speed), max_speed_pct=60)
    d = mapper.decide(np.array(raw, np.float32))
    raw32 = tuple(float(np.float32(r)) for r in raw)
    s, v, angle, throttle = stock_continuous(raw32, steer, speed, 60)
    assert d.valid and d.action_index is None and d.max_speed_pct == 60
    assert d.steering_deg == pytest.approx(s, abs=1e-9)
    assert d.speed_mps == pytest.approx(v, abs=1e-9)
    assert d.angle == pytest.approx(angle, abs=1e-9)
    assert d.throttle == pytest.approx(throttle, abs=1e-9)


def test_continuous_asymmetric_hand_values():
    mapper = ActionMapper(continuous((-30.0, 10.0), (0.5, 4.0)), max_speed_pct=100)
    d = mapper.decide(np.array([-1.0, 0.0], np.float32))
    assert d.steering_deg == -30.0 and d.angle == -3.0  # |angle| > 1, exactly as stock
    assert d.speed_mps == 2.25
    assert d.throttle == pytest.approx(-1.2 * (2.25 / 4) ** 2 + 2.2 * 2.25 / 4, abs=1e-12)
    eswc = ActionMapper(continuous((-18.0, 23.0), (0.5, 1.5)), max_speed_pct=100)
    d = eswc.decide(np.array([-1.0, 1.0], np.float32))
    assert d.angle == pytest.approx(-18 / 23, abs=1e-12) and d.throttle == 1.0


def test_sac_clip_is_default_and_tanh_is_optional():
    space = continuous((-30.0, 30.0), (0.5, 1.0))
    raw = np.array([0.5, 2.0], np.float32)
    clip = ActionMapper(space, max_speed_pct=100).decide(raw)
    assert clip.steering_deg == pytest.approx(15.0) and clip.speed_mps == pytest.approx(1.0)
    squash = ActionMapper(space, max_speed_pct=100, sac_squash=True).decide(raw)
    assert squash.steering_deg == pytest.approx(30.0 * math.tanh(0.5), abs=1e-9)  # 13.86
    assert squash.speed_mps == pytest.approx(0.75 + 0.25 * math.tanh(2.0), abs=1e-9)
    assert squash.throttle == pytest.approx(
        stock_throttle(0.75 + 0.25 * math.tanh(2.0), 1.0, 100), abs=1e-9
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_nonfinite_output_is_neutral_and_counted(bad, kind):
    if kind == "discrete":
        mapper = ActionMapper(discrete([(-30, 1), (30, 1), (0, 2)]), max_speed_pct=100)
        out = np.array([0.1, bad, 0.2], np.float32)
        good = np.array([0.1, 0.7, 0.2], np.float32)
    else:
        mapper = ActionMapper(continuous((-30, 30), (1, 2)), max_speed_pct=100)
        out = np.array([bad, 0.5], np.float32)
        good = np.array([0.0, 0.5], np.float32)
    d = mapper.decide(out)
    assert d == NEUTRAL and not d.valid
    assert (d.angle, d.throttle, d.action_index) == (0.0, 0.0, None)
    assert mapper.nonfinite == 1
    assert mapper.decide(good).valid
    mapper.decide(out)
    assert mapper.nonfinite == 2


@pytest.mark.parametrize("pct", [-0.01, 100.01, 250, float("nan"), float("inf"), "fast", None])
def test_max_speed_pct_validation(pct):
    with pytest.raises(ConfigError, match="max-speed-pct"):
        ActionMapper(discrete([(0, 1)]), max_speed_pct=pct)
    mapper = ActionMapper(discrete([(0, 1)]), max_speed_pct=30)
    with pytest.raises(ConfigError):
        mapper.max_speed_pct = pct
    assert mapper.max_speed_pct == 30  # a refused value leaves the old one in place


@pytest.mark.parametrize("pct", [0, 0.0, 12.5, "75", 100])
def test_max_speed_pct_accepts_range(pct):
    mapper = ActionMapper(discrete([(0, 1.0), (10, 0.5)]), max_speed_pct=pct)
    assert mapper.max_speed_pct == float(pct)
    assert mapper.decide(one_hot(2, 0)).throttle == pytest.approx(float(pct) / 100)


def test_continuous_has_no_action_table():
    assert ActionMapper(continuous((-30, 30), (1, 2))).action_table() == []
