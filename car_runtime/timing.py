"""The one timing primitive shared by ``run``, ``bench``, ``replay`` and the ROS node.

Usage on the hot path (no allocation per frame)::

    timer = StageTimer(("decode", "preprocess", "infer", "decide", "actuate"))
    timer.begin()
    ...decode...
    timer.lap("decode")
    ...
    timer.lap("actuate")
    timer.end()            # records "total" = begin -> end

Durations are kept in fixed-size ring buffers (the newest ``capacity`` samples per stage) and
summarised as p50/p90/p99/max in milliseconds.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterable, Iterator

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where the rings are made, not here: the stop path (`car-runtime neutral`,
# the actuation layer) uses only now_s and must start fast.

TOTAL = "total"

#: The stage names every entry point reports, in pipeline order.
PIPELINE_STAGES = ("decode", "preprocess", "infer", "decide", "actuate")

def _np():
    import numpy

    return numpy


now_s = time.monotonic
"""The clock for capture times, ages and deadlines (monotonic seconds)."""


class _Ring:
    __slots__ = ("buf", "n", "i")

    def __init__(self, capacity: int) -> None:
        import numpy as np

        self.buf = np.zeros(capacity, dtype=np.int64)
        self.n = 0
        self.i = 0

    def add(self, value_ns: int) -> None:
        self.buf[self.i] = value_ns
        self.i = (self.i + 1) % self.buf.shape[0]
        if self.n < self.buf.shape[0]:
            self.n += 1

    def values_ns(self) -> np.ndarray:
        return self.buf[: self.n] if self.n < self.buf.shape[0] else self.buf


class StageTimer:
    """Per-stage latency recorder with lap semantics; see the module docstring."""

    def __init__(self, stages: Iterable[str] = PIPELINE_STAGES, capacity: int = 4096) -> None:
        self.stages = tuple(stages)
        self._rings = {name: _Ring(capacity) for name in (*self.stages, TOTAL)}
        self._t_begin = 0
        self._t_mark = 0
        self.frames = 0

    def begin(self) -> None:
        """Start one pass through the pipeline."""
        self._t_begin = self._t_mark = time.perf_counter_ns()

    def lap(self, stage: str) -> int:
        """Record the time since the previous mark under ``stage``; return it in ns."""
        t = time.perf_counter_ns()
        dt = t - self._t_mark
        self._rings[stage].add(dt)
        self._t_mark = t
        return dt

    def skip(self) -> None:
        """Move the mark to now without recording (time spent outside any stage)."""
        self._t_mark = time.perf_counter_ns()

    def end(self) -> int:
        """Finish the pass: record ``total`` since :meth:`begin`; return it in ns."""
        dt = time.perf_counter_ns() - self._t_begin
        self._rings[TOTAL].add(dt)
        self.frames += 1
        return dt

    def add(self, stage: str, duration_s: float) -> None:
        """Record an externally measured duration."""
        self._rings[stage].add(int(duration_s * 1e9))

    @contextmanager
    def section(self, stage: str) -> Iterator[None]:
        """Time a block under ``stage`` (for code off the hot path)."""
        t = time.perf_counter_ns()
        try:
            yield
        finally:
            self._rings[stage].add(time.perf_counter_ns() - t)

    def samples_ms(self, stage: str) -> np.ndarray:
        """All retained samples of ``stage`` in milliseconds (a copy)."""
        import numpy as np

        return self._rings[stage].values_ns().astype(np.float64) / 1e6

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"p50_ms", "p90_ms", "p99_ms", "max_ms", "count"}}`` for stages with samples."""
        out: dict[str, dict[str, float]] = {}
        for name in (*self.stages, TOTAL):
            ms = self.samples_ms(name)
            if ms.size == 0:
                continue
            p50, p90, p99 = _np().percentile(ms, (50, 90, 99))
            out[name] = {
                "p50_ms": float(p50),
                "p90_ms": float(p90),
                "p99_ms": float(p99),
                "max_ms": float(ms.max()),
                "count": int(ms.size),
            }
        return out

    def status_line(self) -> str:
        """Compact ``stage p50/p99`` text for live status displays."""
        parts = []
        for name, s in self.summary().items():
            parts.append(f"{name} {s['p50_ms']:.2f}/{s['p99_ms']:.2f}")
        return " ".join(parts) + " ms (p50/p99)"


class RateMeter:
    """Frames per second over a sliding window of recent event times."""

    def __init__(self, window: int = 64) -> None:
        self._t = _np().zeros(window, dtype=_np().float64)
        self._n = 0
        self._i = 0

    def tick(self, t_s: float | None = None) -> None:
        self._t[self._i] = now_s() if t_s is None else t_s
        self._i = (self._i + 1) % self._t.shape[0]
        self._n = min(self._n + 1, self._t.shape[0])

    def fps(self) -> float:
        n = self._n
        if n < 2:
            return 0.0
        size = self._t.shape[0]
        oldest = self._i if n == size else 0  # (no copy: this runs several times a second)
        span = float(self._t[(self._i - 1) % size] - self._t[oldest])
        return (n - 1) / span if span > 0 else 0.0
