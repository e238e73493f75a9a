"""Policy output -> (steering_deg, speed_mps) -> (angle, throttle), exactly like the stock
navigation node.

Discrete: ``i = argmax`` (first index wins ties); ``angle = steering_i / max|steering|``;
``throttle = pct/100 * clamp(-1.2 x^2 + 2.2 x, -1, 1)`` with ``x = speed_i / max|speed|``.
Continuous: clip each output to [-1, 1] (or tanh-squash, SAC option), map linearly to
[low, high], then the same rules with ``high`` as the maximum. A non-finite output never becomes
a command: it yields a neutral, invalid :class:`Decision` and increments ``nonfinite``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from car_runtime.errors import ConfigError
from car_runtime.model.metadata import ActionSpace, ContinuousActionSpace, DiscreteActionSpace


@dataclass(frozen=True, slots=True)
class Decision:
    action_index: int | None  # None for continuous spaces and invalid outputs
    steering_deg: float
    speed_mps: float
    angle: float  # [-1, 1] normally; continuous asymmetric bounds can exceed it (as stock)
    throttle: float
    valid: bool = True
    #: The max speed (%) ``throttle`` was scaled with: it travels with the decision, so whoever
    #: records it sees the value used even if the max speed changes right after (None: neutral).
    max_speed_pct: float | None = None


NEUTRAL = Decision(None, 0.0, 0.0, 0.0, 0.0, valid=False)


def speed_curve(speed_mps: float, max_speed_mps: float) -> float:
    """Stock quadratic through (0,0), (max/2, 0.8), (max, 1.0), clamped to [-1, 1]."""
    if max_speed_mps <= 0:
        return 0.0
    x = speed_mps / max_speed_mps
    return min(1.0, max(-1.0, -1.2 * x * x + 2.2 * x))


def steering_scale(steering_deg: float, max_steering_deg: float) -> float:
    """``steering / max_steering``; 0 when the max is not positive (stock)."""
    return steering_deg / max_steering_deg if max_steering_deg > 0 else 0.0


class ActionMapper:
    """Stateless mapping plus counters; ``max_speed_pct`` may be changed live."""

    def __init__(
        self, action_space: ActionSpace, max_speed_pct: float = 50.0, *, sac_squash: bool = False
    ) -> None:
        self.space = action_space
        self.max_speed_pct = max_speed_pct
        self.sac_squash = sac_squash
        self.nonfinite = 0
        self._max_steer = action_space.max_steering_deg
        self._max_speed = action_space.max_speed_mps

    @property
    def max_speed_pct(self) -> float:
        return self._pct

    @max_speed_pct.setter
    def max_speed_pct(self, pct: float) -> None:
        try:
            pct = float(pct)
        except (TypeError, ValueError):
            raise ConfigError(
                f"max speed {pct!r} is not a number; pass --max-speed-pct 0-100"
            ) from None
        if not (0.0 <= pct <= 100.0) or math.isnan(pct):
            raise ConfigError(f"max speed {pct:g} % is outside 0..100; pass --max-speed-pct 0-100")
        self._pct = pct

    def action_table(self) -> list[Decision]:
        """The decision each discrete action maps to at the current max speed."""
        if not isinstance(self.space, DiscreteActionSpace):
            return []
        return [self._discrete(a.index) for a in self.space.actions]

    def decide(self, output: np.ndarray) -> Decision:
        """Map one flat model output to a :class:`Decision`."""
        if not np.isfinite(output).all():
            self.nonfinite += 1
            return NEUTRAL
        if isinstance(self.space, DiscreteActionSpace):
            return self._discrete(int(np.argmax(output)))
        return self._continuous(float(output[0]), float(output[1]))

    def _discrete(self, i: int) -> Decision:
        action = self.space.actions[i]  # type: ignore[union-attr]
        pct = self._pct  # read once: another thread may set a new max speed meanwhile
        return Decision(
            i,
            action.steering_deg,
            action.speed_mps,
            steering_scale(action.steering_deg, self._max_steer),
            pct / 100.0 * speed_curve(action.speed_mps, self._max_speed),
            max_speed_pct=pct,
        )

    def _continuous(self, raw_steer: float, raw_speed: float) -> Decision:
        space: ContinuousActionSpace = self.space  # type: ignore[assignment]
        if self.sac_squash:
            v0, v1 = math.tanh(raw_steer), math.tanh(raw_speed)
        else:
            v0, v1 = min(1.0, max(-1.0, raw_steer)), min(1.0, max(-1.0, raw_speed))
        steer = space.steering_low_deg + (v0 + 1.0) / 2.0 * (
            space.steering_high_deg - space.steering_low_deg
        )
        speed = space.speed_low_mps + (v1 + 1.0) / 2.0 * (space.speed_high_mps - space.speed_low_mps)
        pct = self._pct
        return Decision(
            None,
            steer,
            speed,
            steering_scale(steer, self._max_steer),
            pct / 100.0 * speed_curve(speed, self._max_speed),
            max_speed_pct=pct,
        )
