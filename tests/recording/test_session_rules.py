"""The session rules are pure: every state x event, and the community timings."""

from __future__ import annotations

import itertools

import pytest

from car_runtime.recording.session import IDLE_CLOSE_S, Action, Event, SessionState, step

STATES = {
    "closed": SessionState(),
    "open_fresh": SessionState(open=True, last_driving_s=9.0),
    "open_idle": SessionState(open=True, last_driving_s=10.0 - IDLE_CLOSE_S),
    "stopped": SessionState(stopped=True),
}
EXPECTED = {  # (state, event) -> (action, open after, stopped after)
    ("closed", Event.DRIVING): (Action.OPEN, True, False),
    ("closed", Event.WRITE): (Action.NONE, False, False),
    ("closed", Event.TICK): (Action.NONE, False, False),
    ("closed", Event.MODEL_CHANGED): (Action.NONE, False, False),
    ("closed", Event.END): (Action.NONE, False, False),
    ("closed", Event.FAILED): (Action.NONE, False, True),
    ("open_fresh", Event.DRIVING): (Action.RECORD, True, False),
    ("open_fresh", Event.WRITE): (Action.RECORD, True, False),
    ("open_fresh", Event.TICK): (Action.NONE, True, False),
    ("open_fresh", Event.MODEL_CHANGED): (Action.CLOSE, False, False),
    ("open_fresh", Event.END): (Action.CLOSE, False, False),
    ("open_fresh", Event.FAILED): (Action.CLOSE, False, True),
    ("open_idle", Event.DRIVING): (Action.REOPEN, True, False),
    ("open_idle", Event.WRITE): (Action.CLOSE, False, False),
    ("open_idle", Event.TICK): (Action.CLOSE, False, False),
    ("open_idle", Event.MODEL_CHANGED): (Action.CLOSE, False, False),
    ("open_idle", Event.END): (Action.CLOSE, False, False),
    ("open_idle", Event.FAILED): (Action.CLOSE, False, True),
}


@pytest.mark.parametrize("state,event", list(itertools.product(STATES, Event)))
def test_every_state_and_event(state, event):
    new, action = step(STATES[state], event, 10.0)
    if state == "stopped":
        assert (new, action) == (STATES["stopped"], Action.NONE)
        return
    want_action, want_open, want_stopped = EXPECTED[(state, event)]
    assert (action, new.open, new.stopped) == (want_action, want_open, want_stopped)


def test_community_timing_restart_within_15_s_appends_and_silence_closes():
    s, a = step(SessionState(), Event.DRIVING, 0.0)
    assert a is Action.OPEN
    s, a = step(s, Event.WRITE, 5.0)  # disarmed, neutral writes keep being recorded
    assert a is Action.RECORD
    s, a = step(s, Event.DRIVING, 14.5)  # driving again within 15 s: same session
    assert a is Action.RECORD
    s, a = step(s, Event.TICK, 14.5 + IDLE_CLOSE_S - 0.01)
    assert a is Action.NONE and s.open
    s, a = step(s, Event.TICK, 14.5 + IDLE_CLOSE_S)
    assert a is Action.CLOSE and not s.open
    s, a = step(s, Event.DRIVING, 40.0)
    assert a is Action.OPEN
