"""The safety gate: a pure state machine deciding whether a decision may reach the wheels.

No I/O and no clock reads: the drive loop turns what it observes into :class:`Event` values
(times are passed in to the helpers) and obeys the returned :class:`Verdict`.

States::

    DISARMED --ARM--> ARMED --ERROR|GUARDIAN_TRIP--> FAULT --RESET|DISARM|STOP|END--> DISARMED
        ^               |
        +--DISARM|STOP|END|RESET--+

Rules (the full table is :data:`TRANSITIONS`):

- The machine starts in :data:`INITIAL_STATE` = ``DISARMED``.
- ``drive`` is ``True`` for exactly one case: a ``DECISION`` while ``ARMED``. Every other
  verdict means "write neutral".
- ``STALE_FRAME`` and ``DEADLINE`` in ``ARMED`` write neutral but stay armed: the next fresh
  decision drives again (a camera hiccup is not a reason to stop the run).
- ``ERROR`` (an exception in a stage) latches ``FAULT`` from anywhere; only ``RESET``, ``DISARM``,
  ``STOP`` or ``END`` leave it, always to ``DISARMED``. ``ARM`` in ``FAULT`` is refused.
- ``STOP`` (a signal, a stop request) and ``END`` (end of input) always go to ``DISARMED``.
- ``RESET`` means "back to the power-on state": ``DISARMED`` from every state.
- ``LINK_LOST`` (the controlling client's heartbeats stopped: the deadman) disarms an armed car;
  a latched ``FAULT`` stays latched.
- ``GUARDIAN_TRIP`` (the guardian process saw the runtime frozen or stuck past the deadline and
  wrote neutral itself) latches ``FAULT`` like ``ERROR``: a process that was frozen never drives
  on by itself; the user disarms (or resets) and arms again.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class State(enum.Enum):
    DISARMED = "disarmed"
    ARMED = "armed"
    FAULT = "fault"


class Event(enum.Enum):
    ARM = "arm"  # the user (or --arm) asks to drive
    DISARM = "disarm"  # the user asks to stop driving but keep running
    STOP = "stop"  # SIGINT/SIGTERM or a stop request: the run ends
    DECISION = "decision"  # a fresh decision from a fresh frame is ready to write
    STALE_FRAME = "stale_frame"  # the newest frame is older than the max frame age
    DEADLINE = "deadline"  # no fresh decision reached the output within the deadline
    ERROR = "error"  # an exception in a stage (decode, infer, decide, write)
    RESET = "reset"  # clear a fault (back to disarmed)
    END = "end"  # end of input (file source finished)
    LINK_LOST = "link_lost"  # the deadman: the controlling client's heartbeats stopped
    GUARDIAN_TRIP = "guardian_trip"  # the guardian process took over: we were frozen or stuck


@dataclass(frozen=True)
class Verdict:
    """The outcome of an event: the new ``state``; ``drive`` = apply the decision, else neutral."""

    state: State
    drive: bool


INITIAL_STATE = State.DISARMED

_D, _A, _F = State.DISARMED, State.ARMED, State.FAULT

#: ``(state, event) -> next state``. ``drive`` is derived: only ``(ARMED, DECISION)`` drives.
TRANSITIONS: dict[tuple[State, Event], State] = {
    # DISARMED: only ARM arms; an error latches a fault; everything else stays put.
    (_D, Event.ARM): _A,
    (_D, Event.DISARM): _D,
    (_D, Event.STOP): _D,
    (_D, Event.DECISION): _D,
    (_D, Event.STALE_FRAME): _D,
    (_D, Event.DEADLINE): _D,
    (_D, Event.ERROR): _F,
    (_D, Event.RESET): _D,
    (_D, Event.END): _D,
    (_D, Event.LINK_LOST): _D,
    (_D, Event.GUARDIAN_TRIP): _F,
    # ARMED: decisions drive; stale frames / missed deadlines write neutral but stay armed.
    (_A, Event.ARM): _A,
    (_A, Event.DISARM): _D,
    (_A, Event.STOP): _D,
    (_A, Event.DECISION): _A,
    (_A, Event.STALE_FRAME): _A,
    (_A, Event.DEADLINE): _A,
    (_A, Event.ERROR): _F,
    (_A, Event.RESET): _D,
    (_A, Event.END): _D,
    (_A, Event.LINK_LOST): _D,
    (_A, Event.GUARDIAN_TRIP): _F,
    # FAULT: latched; ARM is refused; only RESET/DISARM/STOP/END leave (to DISARMED).
    (_F, Event.ARM): _F,
    (_F, Event.DISARM): _D,
    (_F, Event.STOP): _D,
    (_F, Event.DECISION): _F,
    (_F, Event.STALE_FRAME): _F,
    (_F, Event.DEADLINE): _F,
    (_F, Event.ERROR): _F,
    (_F, Event.RESET): _D,
    (_F, Event.END): _D,
    (_F, Event.LINK_LOST): _F,
    (_F, Event.GUARDIAN_TRIP): _F,
}


def step(state: State, event: Event) -> Verdict:
    """Apply one event; see the module docstring for the rules."""
    next_state = TRANSITIONS[(state, event)]
    return Verdict(next_state, state is State.ARMED and event is Event.DECISION)


def is_stale(frame_age_s: float, max_age_s: float) -> bool:
    """True if a frame ``frame_age_s`` old must not be acted on (older than ``max_age_s``).

    A non-finite age (NaN, inf) is stale: when in doubt, do not drive.
    """
    if not math.isfinite(frame_age_s):
        return True
    return frame_age_s > max_age_s


def deadline_expired(now_s: float, last_command_s: float, deadline_s: float) -> bool:
    """True if more than ``deadline_s`` passed since the last fresh command (``last_command_s``).

    Pass the start time as ``last_command_s`` before the first command. Non-finite times count
    as expired.
    """
    elapsed_s = now_s - last_command_s
    if not math.isfinite(elapsed_s):
        return True
    return elapsed_s > deadline_s


class ExitCode(enum.IntEnum):
    """Process exit status of ``car-runtime run`` / ``car-runtime ros`` (and the service): why
    it stopped. Every one of them leaves both channels at neutral (see docs/safety.md).

    Signals follow the shell convention 128 + signal number; each listed signal is handled
    (neutral, then a clean exit with that code). The systemd unit lists 130 and 143 in
    ``SuccessExitStatus=`` so a requested stop is not a failure; every other non-zero code
    makes ``Restart=on-failure`` restart the service.
    """

    OK = 0  # end of input, or a clean stop request
    USER_ERROR = 2  # bad model / config / calibration / missing device (CarRuntimeError)
    FAULT = 3  # runtime fault: an exception in a stage, or a PWM/record write that failed
    CAMERA_LOST = 4  # the camera stopped delivering and reconnecting did not bring it back
    WATCHDOG = 5  # a stage or a PWM write was stuck longer than stall_timeout_ms: aborted
    GUARDIAN_LOST = 6  # the guardian process died: no fail-safe left, so the run ends
    SIGHUP = 129  # the terminal went away (SSH dropped, pty closed) or `kill -HUP`
    SIGINT = 130  # Ctrl-C
    SIGQUIT = 131  # Ctrl-backslash
    SIGUSR1 = 138  # `kill -USR1`
    SIGUSR2 = 140  # `kill -USR2`
    SIGPIPE = 141  # a pipe we write to was closed (e.g. `car-runtime run | head`)
    SIGTERM = 143  # systemctl stop / kill

    @classmethod
    def for_signal(cls, signum: int) -> int:
        """Shell-style status for a stop by ``signum``: 128 + signum (an ExitCode if listed)."""
        code = 128 + int(signum)
        try:
            return cls(code)
        except ValueError:
            return code
