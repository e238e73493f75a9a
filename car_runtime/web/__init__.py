"""The race-day web cockpit: ``car-runtime run --web [HOST:]PORT``.

``serve(controls, cfg)`` is the context manager ``run`` enters in its adapters stack; see
:mod:`car_runtime.web.server` and docs/web.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from car_runtime.config import RunConfig
    from car_runtime.controls import DriveControls
    from car_runtime.web.server import Cockpit


def serve(controls: "DriveControls", cfg: "RunConfig", **kwargs: Any) -> "AbstractContextManager[Cockpit]":
    """Serve the cockpit while the ``with`` block runs (imports aiohttp only when used)."""
    from car_runtime.web.server import serve as _serve

    return _serve(controls, cfg, **kwargs)
