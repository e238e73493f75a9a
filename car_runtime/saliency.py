"""What did the model look at? Occlusion saliency from forward passes only (no gradients).

For each frame, a grey square (``patch`` pixels, moved by ``stride``) covers part of the model
input at a time -- filled with the input's mean, so it removes detail without adding an edge --
and the model runs on every occluded copy. A pixel's saliency is the mean change its patches
caused: for a discrete model, in the probability of the action the car chose; for a continuous
one, the Euclidean change of the raw outputs. OpenVINO has no gradients and we never load
TensorFlow; this is the perturbation counterpart of bag_analysis' Grad-CAM.

Cost: one forward pass per patch position -- 165 per frame with the default 20 px patch and
10 px stride on a 160x120 input. The occluded copies run as batches when the model's graph
can be reshaped to a batch (DeepRacer ``.pb`` graphs can); otherwise one by one.
``car-runtime replay --saliency`` states the measured cost per frame.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from car_runtime.errors import ModelError
from car_runtime.model.policy import Policy

log = logging.getLogger(__name__)

DEFAULT_PATCH = 20
DEFAULT_STRIDE = 10
DEFAULT_BATCH = 55  # 165 positions = 3 batches


def patch_positions(height: int, width: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners covering the whole input (the last row/column flush with the edge)."""
    def starts(n: int) -> list[int]:
        if patch >= n:
            return [0]
        out = list(range(0, n - patch + 1, stride))
        if out[-1] != n - patch:
            out.append(n - patch)
        return out

    return [(y, x) for y in starts(height) for x in starts(width)]


class OcclusionSaliency:
    """Occlusion saliency for one model; :meth:`heat` maps one model input to a heat map.

    ``model_path`` is the model file the replay runs (``.pb``/``.xml``): it is compiled a second
    time with batch ``batch`` (falls back to 1 if the graph refuses a batch reshape).
    """

    def __init__(self, model_path: str | Path, metadata, *, patch: int = DEFAULT_PATCH,
                 stride: int = DEFAULT_STRIDE, batch: int = DEFAULT_BATCH, device: str = "CPU",
                 precision: str = "f32", threads: int | None = None) -> None:
        if patch < 1 or stride < 1:
            raise ValueError("patch and stride must be >= 1")
        self.patch, self.stride = patch, stride
        self.discrete = metadata.action_space_type == "discrete"
        try:
            self.policy = Policy(model_path, metadata, device=device, precision=precision,
                                 threads=threads, batch=batch)
        except ModelError as exc:
            if batch == 1:
                raise
            log.info("saliency: %s; running the occluded inputs one by one", exc)
            self.policy = Policy(model_path, metadata, device=device, precision=precision,
                                 threads=threads, batch=1)
        self.batch = self.policy.input.shape[0]
        self.layout = self.policy.input.layout
        h, w = self.policy.input_hw
        self.positions = patch_positions(h, w, patch, stride)
        self.seconds: list[float] = []

    def _hwc(self, buf: np.ndarray) -> np.ndarray:
        """[B, H, W, C] view of an input buffer in either layout."""
        return buf if self.layout == "NHWC" else np.moveaxis(buf, 1, -1)

    def _run(self, inputs_hwc: np.ndarray) -> np.ndarray:
        buf = self.policy.input_buffer
        n = inputs_hwc.shape[0]
        self._hwc(buf)[:n] = inputs_hwc
        out = self.policy.infer().reshape(self.batch, -1)
        return out[:n].copy()

    def heat(self, x_hwc: np.ndarray) -> np.ndarray:
        """Saliency of the model input ``x_hwc`` ([H, W, C] float32, raw 0..255) as an [H, W]
        float32 map, >= 0, not normalised (0 where no patch changed anything)."""
        t0 = time.perf_counter()
        x = np.asarray(x_hwc, np.float32)
        h, w, _c = x.shape
        base = self._run(x[None])[0]
        target = int(np.argmax(base)) if self.discrete else None
        fill = x.reshape(-1, x.shape[2]).mean(axis=0)
        total = np.zeros((h, w), np.float64)
        count = np.zeros((h, w), np.float64)
        p = self.patch
        for k in range(0, len(self.positions), self.batch):
            group = self.positions[k : k + self.batch]
            batch = np.repeat(x[None], len(group), axis=0)
            for i, (y0, x0) in enumerate(group):
                batch[i, y0 : y0 + p, x0 : x0 + p, :] = fill
            out = self._run(batch)
            if target is not None:
                scores = np.abs(out[:, target] - base[target])
            else:
                scores = np.linalg.norm(out - base[None], axis=1)
            for (y0, x0), s in zip(group, scores):
                total[y0 : y0 + p, x0 : x0 + p] += s
                count[y0 : y0 + p, x0 : x0 + p] += 1
        self.seconds.append(time.perf_counter() - t0)
        return (total / np.maximum(count, 1)).astype(np.float32)

    @property
    def passes_per_frame(self) -> int:
        return len(self.positions) + 1

    def cost_line(self) -> str:
        if not self.seconds:
            return "saliency: no frames"
        ms = np.asarray(self.seconds) * 1e3
        mode = f"in batches of {self.batch}" if self.batch > 1 else "one by one (no batch reshape)"
        return (f"saliency: {self.passes_per_frame} forward passes per frame ({self.patch} px patch, "
                f"stride {self.stride}) {mode}: {np.median(ms):.1f} ms per frame (p50), "
                f"{np.percentile(ms, 90):.1f} ms (p90)")


def colorize(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Heat map -> BGR JET image of ``size`` (w, h), normalised to this frame's maximum."""
    import cv2

    peak = float(heat.max())
    norm = heat / peak if peak > 0 else heat
    img = np.clip(norm * 255.0, 0, 255).astype(np.uint8)
    img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    return cv2.applyColorMap(img, cv2.COLORMAP_JET)
