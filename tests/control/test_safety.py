"""The safety state machine over every state x event, against a table written out by hand."""

from __future__ import annotations

import math
import signal

import pytest

from car_runtime.control.safety import (
    INITIAL_STATE,
    Event,
    ExitCode,
    State,
    Verdict,
    deadline_expired,
    is_stale,
    step,
)

# Independent of the implementation's table: rows written from the rules in the brief.
# (state, event) -> (next state, drive)
D, A, F = "disarmed", "armed", "fault"
EXPECTED = {
    ("disarmed", "arm"): (A, False),
    ("disarmed", "disarm"): (D, False),
    ("disarmed", "stop"): (D, False),
    ("disarmed", "decision"): (D, False),
    ("disarmed", "stale_frame"): (D, False),
    ("disarmed", "deadline"): (D, False),
    ("disarmed", "error"): (F, False),
    ("disarmed", "reset"): (D, False),
    ("disarmed", "end"): (D, False),
    ("disarmed", "link_lost"): (D, False),
    ("disarmed", "guardian_trip"): (F, False),
    ("armed", "arm"): (A, False),
    ("armed", "disarm"): (D, False),
    ("armed", "stop"): (D, False),
    ("armed", "decision"): (A, True),
    ("armed", "stale_frame"): (A, False),
    ("armed", "deadline"): (A, False),
    ("armed", "error"): (F, False),
    ("armed", "reset"): (D, False),
    ("armed", "end"): (D, False),
    ("armed", "link_lost"): (D, False),
    ("armed", "guardian_trip"): (F, False),
    ("fault", "arm"): (F, False),
    ("fault", "disarm"): (D, False),
    ("fault", "stop"): (D, False),
    ("fault", "decision"): (F, False),
    ("fault", "stale_frame"): (F, False),
    ("fault", "deadline"): (F, False),
    ("fault", "error"): (F, False),
    ("fault", "reset"): (D, False),
    ("fault", "end"): (D, False),
    ("fault", "link_lost"): (F, False),
    ("fault", "guardian_trip"): (F, False),
}


def test_expected_table_covers_every_state_and_event():
    assert len(State) == 3 and len(Event) == 11
    assert set(EXPECTED) == {(s.value, e.value) for s in State for e in Event}


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("event", list(Event), ids=lambda e: e.value)
def test_step(state: State, event: Event):
    next_value, drive = EXPECTED[(state.value, event.value)]
    assert step(state, event) == Verdict(State(next_value), drive)


def test_starts_disarmed_and_only_armed_decision_drives():
    assert INITIAL_STATE is State.DISARMED
    driving = [(s, e) for s in State for e in Event if step(s, e).drive]
    assert driving == [(State.ARMED, Event.DECISION)]


def test_a_run_sequence():
    """A realistic run: arm, drive, stall, resume, crash, refuse to re-arm, reset, stop."""
    state = INITIAL_STATE
    log = []
    for event in [
        Event.DECISION,  # decisions before arming never drive
        Event.ARM,
        Event.DECISION,
        Event.DEADLINE,  # camera stalled: neutral, still armed
        Event.DECISION,  # it came back: drive again
        Event.ERROR,
        Event.ARM,  # refused while faulted
        Event.DECISION,
        Event.RESET,
        Event.DECISION,
        Event.ARM,
        Event.STOP,
    ]:
        verdict = step(state, event)
        state = verdict.state
        log.append((state.value, verdict.drive))
    assert log == [
        (D, False), (A, False), (A, True), (A, False), (A, True), (F, False),
        (F, False), (F, False), (D, False), (D, False), (A, False), (D, False),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("age_s", "max_age_s", "stale"),
    [
        (0.0, 0.1, False),
        (0.1, 0.1, False),  # exactly at the limit is still usable
        (0.1000001, 0.1, True),
        (5.0, 0.1, True),
        (-0.001, 0.1, False),
        (math.nan, 0.1, True),
        (math.inf, 0.1, True),
    ],
)
def test_is_stale(age_s, max_age_s, stale):
    assert is_stale(age_s, max_age_s) is stale


@pytest.mark.parametrize(
    ("now", "last", "deadline", "expired"),
    [
        (10.0, 10.0, 0.1, False),
        (10.1, 10.0, 0.2, False),
        (10.2, 10.0, 0.1, True),
        (1000.0, 10.0, 0.1, True),
        (10.0, math.nan, 0.1, True),
        (math.inf, 10.0, 0.1, True),
    ],
)
def test_deadline_expired(now, last, deadline, expired):
    assert deadline_expired(now, last, deadline) is expired


def test_exit_codes():
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0,
        "USER_ERROR": 2,
        "FAULT": 3,
        "CAMERA_LOST": 4,
        "WATCHDOG": 5,
        "GUARDIAN_LOST": 6,
        "SIGHUP": 129,
        "SIGINT": 130,
        "SIGQUIT": 131,
        "SIGUSR1": 138,
        "SIGUSR2": 140,
        "SIGPIPE": 141,
        "SIGTERM": 143,
    }
    for name in ("SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE", "SIGTERM"):
        assert ExitCode[name] == 128 + signal.Signals[name].value
    assert ExitCode.for_signal(signal.SIGINT) is ExitCode.SIGINT
    assert ExitCode.for_signal(signal.SIGTERM) is ExitCode.SIGTERM
    assert ExitCode.for_signal(signal.SIGHUP) is ExitCode.SIGHUP
    assert ExitCode.for_signal(signal.SIGALRM) == 142  # not handled: the plain number
