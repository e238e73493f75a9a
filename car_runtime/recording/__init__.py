"""The flight recorder: every driving session becomes a rosbag2 the community tools read.

Public API (small on purpose; the web cockpit's download page uses the catalog):

- :func:`attach` (``recording.attach(controls, cfg)``): record while driving, see
  :mod:`car_runtime.recording.recorder`;
- :func:`list_sessions` (``list_sessions(root) -> list[SessionInfo]``): the sessions in a folder,
  newest first, complete or torn, see :mod:`car_runtime.recording.catalog`.

Message definitions: :mod:`car_runtime.recording.messages`; session rules:
:mod:`car_runtime.recording.session`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from car_runtime.recording.catalog import SessionInfo, list_sessions
    from car_runtime.recording.recorder import attach

__all__ = ["attach", "list_sessions", "SessionInfo"]


def __getattr__(name: str) -> Any:  # lazy: `car-runtime --help` must not import rosbags
    if name == "attach":
        from car_runtime.recording.recorder import attach

        return attach
    if name in ("list_sessions", "SessionInfo"):
        from car_runtime.recording import catalog

        return getattr(catalog, name)
    raise AttributeError(name)
