"""The per-frame stages shared by ``run``, ``bench``, ``replay`` and the ROS node.

``Pipeline.step(frame)`` runs decode -> preprocess -> infer -> decide and times each stage on
the shared :class:`~car_runtime.timing.StageTimer`. The caller then gates the decision (safety),
writes it (``actuate``) and calls ``timer.lap("actuate"); timer.end()``, so every entry point
reports the same stage names over the very same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from car_runtime.control.actions import ActionMapper, Decision
from car_runtime.model.policy import Policy
from car_runtime.timing import StageTimer
from car_runtime.vision.frame import Frame
from car_runtime.vision.preprocess import Preprocessor


@dataclass(slots=True)
class StepResult:
    frame: Frame
    output: np.ndarray  # the policy output; a view valid until the next step (copy to keep)
    decision: Decision


class Pipeline:
    """Frame -> Decision over a compiled :class:`Policy`."""

    def __init__(
        self,
        policy: Policy,
        *,
        preprocess: str = "stock",
        max_speed_pct: float = 50.0,
        sac_squash: bool = False,
        timer: StageTimer | None = None,
    ) -> None:
        self.policy = policy
        h, w = policy.input_hw
        self.preprocessor = Preprocessor(preprocess, h, w, policy.channels)
        self.mapper = ActionMapper(
            policy.metadata.action_space, max_speed_pct, sac_squash=sac_squash
        )
        self.timer = timer or StageTimer()
        self._views = [policy.camera_view(c) for c in range(policy.channels)]

    def step(self, frame: Frame) -> StepResult:
        """Run one frame through the stages; the timer pass stays open for ``actuate``."""
        timer = self.timer
        timer.begin()
        pixels = self.preprocessor.decode(frame.images)
        timer.lap("decode")
        self.preprocessor.prepare(pixels, self._views)
        timer.lap("preprocess")
        output = self.policy.infer()
        timer.lap("infer")
        decision = self.mapper.decide(output)
        timer.lap("decide")
        return StepResult(frame, output, decision)

    def model_input(self, channel: int = 0) -> np.ndarray:
        """The grey model input of the last step as uint8 (for overlays and debug images)."""
        return np.clip(self._views[channel], 0, 255).astype(np.uint8)
