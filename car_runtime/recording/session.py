"""When a recording session opens and closes: pure rules, no I/O, no clock of their own.

The community logger's rules, on car-runtime's events:

- a session **opens** at the first write that drives (the loop is armed and acted on a model
  decision) while none is open;
- everything the loop writes while a session is open is recorded, driving or not;
- it **closes** once ``idle_close_s`` (15 s) pass without a driving write; driving again before
  that continues the same session (a restart within 15 s appends);
- it closes at once on a **model change** (the next driving write opens a new session, named
  after the new model), when the run **ends**, or when recording **stops** (disk full, write
  error): after a stop no session opens again.

:func:`step` is the whole rule set: ``(state, event, t_s) -> (state, action)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

IDLE_CLOSE_S = 15.0


class Event(enum.Enum):
    DRIVING = "driving"  # a write that drove (armed, model decision)
    WRITE = "write"  # any other write (neutral, disarmed, an event)
    TICK = "tick"  # time passes without writes (the writer's timer)
    MODEL_CHANGED = "model_changed"
    END = "end"  # the run ends
    FAILED = "failed"  # recording must stop for good (disk full, write error)


class Action(enum.Enum):
    NONE = "none"  # nothing to do (drop the write when no session is open)
    OPEN = "open"  # open a session, then record this write
    RECORD = "record"  # record this write into the open session
    CLOSE = "close"  # close the open session (the write, if any, is not recorded)
    REOPEN = "reopen"  # close the open session, open a new one, record this write


@dataclass(frozen=True)
class SessionState:
    open: bool = False
    last_driving_s: float = float("-inf")
    stopped: bool = False  # recording stopped for good


def step(state: SessionState, event: Event, t_s: float,
         idle_close_s: float = IDLE_CLOSE_S) -> tuple[SessionState, Action]:
    """Apply ``event`` at time ``t_s``; return the new state and what the recorder must do."""
    if state.stopped:
        return state, Action.NONE
    if event is Event.FAILED:
        return SessionState(stopped=True), Action.CLOSE if state.open else Action.NONE
    if event in (Event.MODEL_CHANGED, Event.END):
        return SessionState(), Action.CLOSE if state.open else Action.NONE
    idle = state.open and t_s - state.last_driving_s >= idle_close_s
    if event is Event.DRIVING:
        if state.open and not idle:
            return replace(state, last_driving_s=t_s), Action.RECORD
        opened = SessionState(open=True, last_driving_s=t_s)
        return opened, Action.REOPEN if idle else Action.OPEN
    # WRITE or TICK
    if idle:
        return SessionState(), Action.CLOSE
    if state.open and event is Event.WRITE:
        return state, Action.RECORD
    return state, Action.NONE
