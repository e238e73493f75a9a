"""Annotated replay frames: what the car saw and what it would have done, readable at a glance.

Layout (one canvas per frame, BGR uint8)::

    +-----------------------------+--------------+--------------+
    | camera frame, 640x480       | model A      | model B      |
    |  [model input 160x120 grey] | steering     | (--compare)  |
    |     steering arrow(s)       | throttle     |              |
    | frame 12  t 0.40 s          | PWM, actions |              |
    +-----------------------------+--------------+--------------+

Each model panel shows a steering gauge (DeepRacer convention: positive steering = left), a
throttle bar, the servo/ESC pulses, and the action-probability bars with the chosen action
highlighted (continuous models: the two raw outputs on [-1, 1]). The arrow on the frame points
where the wheels would point; its length grows with throttle. Static parts are drawn once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from car_runtime.control.actions import Decision

FRAME_W, FRAME_H = 640, 480
PANEL_W = 320
INSET_W, INSET_H = 160, 120
#: Model colours (BGR): A = amber, B = magenta.
COLORS = ((0, 190, 255), (255, 80, 255))
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BG = (32, 32, 32)
_FG = (235, 235, 235)
_DIM = (150, 150, 150)
_BAR_BG = (70, 70, 70)
_CHOSEN = (60, 210, 60)
_WARN = (40, 40, 230)
_GAUGE_C = (160, 128)  # gauge centre in panel coordinates
_GAUGE_R = 84
_GAUGE_SPAN_DEG = 75.0  # dial angle for full steering to either side
_THR = (20, 184, 300, 202)  # throttle bar x0, y0, x1, y1
_ACT_Y0, _ACT_Y1 = 258, 474  # action-bar area
_ACT_X0, _ACT_X1 = 118, 262  # bar extent (values to the right)


@dataclass(frozen=True)
class PanelSpec:
    """What does not change per frame for one model."""

    name: str
    action_labels: tuple[str, ...] | None  # None: continuous (two raw outputs)
    max_steering_deg: float
    color: tuple[int, int, int] = COLORS[0]


@dataclass(frozen=True)
class PanelState:
    """One model's result for one frame."""

    output: np.ndarray
    decision: Decision
    servo_ns: int
    motor_ns: int
    driven: bool  # False: the safety gate or an invalid output sent neutral


def _text(img: np.ndarray, s: str, org: tuple[int, int], scale: float = 0.45,
          color: tuple[int, int, int] = _FG, thickness: int = 1) -> None:
    cv2.putText(img, s, org, _FONT, scale, color, thickness, cv2.LINE_AA)


def _boxed_text(img: np.ndarray, s: str, org: tuple[int, int], scale: float = 0.6,
                color: tuple[int, int, int] = _FG, thickness: int = 1) -> None:
    """Text on a black box, readable on any background (``org`` = text baseline start)."""
    (w, h), base = cv2.getTextSize(s, _FONT, scale, thickness)
    x, y = org
    cv2.rectangle(img, (x - 4, y - h - 4), (x + w + 4, y + base + 2), (0, 0, 0), -1)
    cv2.putText(img, s, org, _FONT, scale, color, thickness, cv2.LINE_AA)


def _dial_point(frac: float, r: float) -> tuple[int, int]:
    """Point on the gauge for ``frac`` in [-1, 1] of full steering (positive = left)."""
    a = math.radians(90.0 + frac * _GAUGE_SPAN_DEG)
    return int(round(_GAUGE_C[0] + r * math.cos(a))), int(round(_GAUGE_C[1] - r * math.sin(a)))


def fit_frame(image: np.ndarray, out: np.ndarray) -> None:
    """Draw ``image`` (BGR, BGRA or grey) into ``out`` (FRAME_H x FRAME_W), aspect kept."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    h, w = image.shape[:2]
    oh, ow = out.shape[:2]
    if (h, w) == (oh, ow):
        out[:] = image
        return
    scale = min(ow / w, oh / h)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    x0, y0 = (ow - nw) // 2, (oh - nh) // 2
    if (nw, nh) != (ow, oh):
        out[:] = 0
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(image, (nw, nh), interpolation=interp)


class OverlayRenderer:
    """Renders one canvas per frame for 1 (or 2, ``--compare``) models. Reuses its buffers:
    the returned array is overwritten by the next :meth:`render`."""

    def __init__(self, specs: Sequence[PanelSpec]) -> None:
        if not 1 <= len(specs) <= 2:
            raise ValueError("the overlay shows one or two models")
        self.specs = tuple(specs)
        self.width = FRAME_W + PANEL_W * len(specs)
        self.height = FRAME_H
        self._canvas = np.zeros((self.height, self.width, 3), np.uint8)
        self._templates = [self._template(s) for s in self.specs]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as cv2.VideoWriter wants it."""
        return self.width, self.height

    # -- static parts ----------------------------------------------------------------------------
    def _template(self, spec: PanelSpec) -> np.ndarray:
        p = np.full((FRAME_H, PANEL_W, 3), _BG, np.uint8)
        cv2.rectangle(p, (0, 0), (PANEL_W - 1, 26), spec.color, -1)
        name = spec.name if len(spec.name) <= 30 else spec.name[:29] + "~"
        _text(p, name, (8, 18), 0.5, (0, 0, 0), 1)
        # steering gauge: arc, ticks at -1, -0.5, 0, 0.5, 1 of full steering
        cv2.ellipse(p, _GAUGE_C, (_GAUGE_R, _GAUGE_R), 0, -90 - _GAUGE_SPAN_DEG,
                    -90 + _GAUGE_SPAN_DEG, _DIM, 2, cv2.LINE_AA)
        for frac in (-1.0, -0.5, 0.0, 0.5, 1.0):
            cv2.line(p, _dial_point(frac, _GAUGE_R - 8), _dial_point(frac, _GAUGE_R + 4), _FG, 2,
                     cv2.LINE_AA)
        lx, ly = _dial_point(1.0, _GAUGE_R + 16)
        rx, ry = _dial_point(-1.0, _GAUGE_R + 16)
        _text(p, "L", (lx - 6, ly + 4), 0.5, _FG, 1)
        _text(p, "R", (rx - 4, ry + 4), 0.5, _FG, 1)
        _text(p, f"full {spec.max_steering_deg:g} deg", (_GAUGE_C[0] + 70, _GAUGE_C[1] + 20), 0.38,
              _DIM)
        # throttle bar frame and ticks
        x0, y0, x1, y1 = _THR
        _text(p, "throttle", (x0, y0 - 6), 0.45, _DIM)
        cv2.rectangle(p, (x0, y0), (x1, y1), _BAR_BG, -1)
        for frac in (0.25, 0.5, 0.75):
            x = int(x0 + frac * (x1 - x0))
            cv2.line(p, (x, y1), (x, y1 + 4), _DIM, 1)
        # action labels
        if spec.action_labels is None:
            labels: Sequence[str] = ("steer raw", "speed raw")
        else:
            labels = spec.action_labels
        _text(p, "model output" if spec.action_labels is None else "action probabilities",
              (8, _ACT_Y0 - 8), 0.45, _DIM)
        rows = self._rows(len(labels))
        for i, label in enumerate(labels):
            yc = rows[i] + self._row_h(len(labels)) // 2
            _text(p, label, (6, yc + 4), self._label_scale(len(labels)), _FG)
            if spec.action_labels is None:  # centre line for signed values
                xm = (_ACT_X0 + _ACT_X1) // 2
                cv2.line(p, (xm, rows[i]), (xm, rows[i] + self._row_h(len(labels)) - 3), _DIM, 1)
        return p

    @staticmethod
    def _row_h(n: int) -> int:
        return max(8, min(30, (_ACT_Y1 - _ACT_Y0) // max(1, n)))

    def _rows(self, n: int) -> list[int]:
        h = self._row_h(n)
        return [_ACT_Y0 + i * h for i in range(n)]

    @staticmethod
    def _label_scale(n: int) -> float:
        return 0.42 if n <= 14 else 0.32

    # -- per frame -------------------------------------------------------------------------------
    def render(
        self,
        image: np.ndarray,
        model_input: np.ndarray,
        states: Sequence[PanelState],
        *,
        frame_no: int,
        t_s: float,
        differ: bool = False,
        heat: np.ndarray | None = None,
        differ_text: str | None = None,
    ) -> np.ndarray:
        """Compose the canvas for one frame (see the module docstring). ``heat``: a saliency
        map over the model input, blended onto the frame and the inset as a JET heat map."""
        c = self._canvas
        view = c[:, :FRAME_W]
        fit_frame(image, view)
        heat_rgb = None
        if heat is not None:
            from car_runtime.saliency import colorize

            view[:] = cv2.addWeighted(view, 0.55, colorize(heat, (FRAME_W, FRAME_H)), 0.45, 0.0)
            heat_rgb = colorize(heat, (INSET_W, INSET_H))
        # model input inset, top right, with a border
        ix0, iy0 = FRAME_W - INSET_W - 10, 10
        grey = model_input if model_input.shape == (INSET_H, INSET_W) else cv2.resize(
            model_input, (INSET_W, INSET_H), interpolation=cv2.INTER_NEAREST)
        cv2.rectangle(view, (ix0 - 2, iy0 - 2), (ix0 + INSET_W + 1, iy0 + INSET_H + 1), _FG, 2)
        view[iy0 : iy0 + INSET_H, ix0 : ix0 + INSET_W] = grey[:, :, None]
        if heat_rgb is not None:
            inset = view[iy0 : iy0 + INSET_H, ix0 : ix0 + INSET_W]
            inset[:] = cv2.addWeighted(inset, 0.5, heat_rgb, 0.5, 0.0)
        _boxed_text(view, "model input" + (" + saliency" if heat_rgb is not None else ""),
                    (ix0, iy0 + INSET_H + 20), 0.5)
        # steering arrows from the bottom centre, one per model
        for spec, st in zip(self.specs, states):
            self._arrow(view, spec, st)
        _boxed_text(view, f"frame {frame_no}  t {t_s:.2f} s", (12, FRAME_H - 14), 0.7, _FG, 2)
        if differ:
            _boxed_text(view, differ_text or "MODELS DIFFER", (12, 32), 0.8, (80, 80, 255), 2)
        for k, (spec, st) in enumerate(zip(self.specs, states)):
            x = FRAME_W + k * PANEL_W
            panel = c[:, x : x + PANEL_W]
            panel[:] = self._templates[k]
            self._panel(panel, spec, st)
        return c

    @staticmethod
    def _arrow(view: np.ndarray, spec: PanelSpec, st: PanelState) -> None:
        d = st.decision
        base = (FRAME_W // 2, FRAME_H - 40)
        length = 60 + 260 * min(1.0, abs(d.throttle))
        a = math.radians(90.0 + d.steering_deg)  # positive steering = left
        tip = (int(base[0] + length * math.cos(a)), int(base[1] - length * math.sin(a)))
        cv2.arrowedLine(view, base, tip, (0, 0, 0), 9, cv2.LINE_AA, tipLength=0.12)
        cv2.arrowedLine(view, base, tip, spec.color if st.driven else _DIM, 5, cv2.LINE_AA,
                        tipLength=0.12)

    def _panel(self, p: np.ndarray, spec: PanelSpec, st: PanelState) -> None:
        d = st.decision
        # gauge needle: fraction of full steering
        frac = d.steering_deg / spec.max_steering_deg if spec.max_steering_deg > 0 else 0.0
        frac = max(-1.2, min(1.2, frac))
        cv2.line(p, _GAUGE_C, _dial_point(frac, _GAUGE_R - 12), spec.color, 4, cv2.LINE_AA)
        cv2.circle(p, _GAUGE_C, 6, _FG, -1, cv2.LINE_AA)
        side = "left" if d.steering_deg > 0 else "right" if d.steering_deg < 0 else "straight"
        _text(p, f"{abs(d.steering_deg):.1f} deg {side}", (20, _GAUGE_C[1] + 30), 0.6, _FG, 1)
        # throttle bar
        x0, y0, x1, y1 = _THR
        t = max(-1.0, min(1.0, d.throttle))
        w = int(abs(t) * (x1 - x0))
        if w:
            cv2.rectangle(p, (x0, y0), (x0 + w, y1), _CHOSEN if t >= 0 else _WARN, -1)
        _text(p, f"{d.throttle:+.2f}  ({d.speed_mps:.2f} m/s)", (x0 + 78, y0 - 6), 0.45, _FG)
        # pulses
        _text(p, f"servo {st.servo_ns / 1000:.1f} us", (x0, 226), 0.45, _FG)
        _text(p, f"ESC {st.motor_ns / 1000:.1f} us", (x0 + 150, 226), 0.45, _FG)
        if not st.driven:
            cv2.rectangle(p, (222, 3), (316, 23), _WARN, -1)
            _text(p, "NEUTRAL", (232, 19), 0.5, _FG, 1)
        # action bars
        out = np.asarray(st.output, dtype=np.float64).reshape(-1)
        n = out.size
        rows = self._rows(n)
        h = self._row_h(n) - 3
        scale = self._label_scale(n)
        for i in range(n):
            v = float(out[i])
            y = rows[i]
            if spec.action_labels is None:  # signed raw output on [-1, 1]
                xm = (_ACT_X0 + _ACT_X1) // 2
                vc = max(-1.0, min(1.0, v)) if math.isfinite(v) else 0.0
                xe = int(xm + vc * (_ACT_X1 - _ACT_X0) / 2)
                cv2.rectangle(p, (min(xm, xe), y), (max(xm, xe), y + h), spec.color, -1)
                _text(p, f"{v:+.3f}", (_ACT_X1 + 6, y + h // 2 + 4), scale, _FG)
                continue
            chosen = d.action_index == i
            vc = max(0.0, min(1.0, v)) if math.isfinite(v) else 0.0
            xe = _ACT_X0 + int(vc * (_ACT_X1 - _ACT_X0))
            cv2.rectangle(p, (_ACT_X0, y), (_ACT_X1, y + h), _BAR_BG, -1)
            if xe > _ACT_X0:
                cv2.rectangle(p, (_ACT_X0, y), (xe, y + h), _CHOSEN if chosen else _DIM, -1)
            if chosen:
                cv2.rectangle(p, (2, y - 1), (PANEL_W - 3, y + h + 1), _CHOSEN, 1)
            _text(p, f"{v:.3f}", (_ACT_X1 + 6, y + h // 2 + 4), scale, _FG if chosen else _DIM)


def action_label(steering_deg: float, speed_mps: float, index: int) -> str:
    """Short label for a discrete action, e.g. ``3: -15 @1.0``."""
    return f"{index}: {steering_deg:+g} @{speed_mps:g}"
