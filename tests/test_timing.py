"""RateMeter: frames per second over its window, before and after the ring wraps."""

from __future__ import annotations

import pytest

from car_runtime.timing import RateMeter


def test_rate_over_a_partial_and_a_wrapped_window():
    r = RateMeter(window=8)
    assert r.fps() == 0.0
    r.tick(1.0)
    assert r.fps() == 0.0  # one event is no rate
    for k in range(1, 5):
        r.tick(1.0 + k * 0.1)
    assert r.fps() == pytest.approx(10.0)
    for k in range(30):  # wraps the ring several times, now at 20 per second
        r.tick(2.0 + k * 0.05)
    assert r.fps() == pytest.approx(20.0)
    r.tick(2.0 + 29 * 0.05)  # two events at the same time still give a finite rate
    assert r.fps() == pytest.approx(7 / (6 * 0.05))


def test_no_span_is_no_rate():
    r = RateMeter(window=4)
    for _ in range(6):
        r.tick(5.0)
    assert r.fps() == 0.0
