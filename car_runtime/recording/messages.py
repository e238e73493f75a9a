"""The recorder's message types, registered from the ``.msg`` files beside this module.

``msg/deepracer_interfaces_pkg/*.msg`` are the community car stack's definitions (field order
as v2.1.9.9 ships them: it matters for CDR); ``msg/car_runtime_msgs/*.msg`` are our audit
types. :func:`typestore` returns a rosbags typestore (ROS 2 Humble base types) with all of them
registered: enough to write and read the bags without any ROS installation.

Topics (:data:`TOPICS`)::

    /inference_pkg/rl_results               deepracer_interfaces_pkg/msg/InferResultsArray
    /deepracer_navigation_pkg/auto_drive    deepracer_interfaces_pkg/msg/ServoCtrlMsg
    /car_runtime/writes                     car_runtime_msgs/msg/DriveWrite
    /car_runtime/settings                   car_runtime_msgs/msg/RunSettings
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

MSG_DIR = Path(__file__).resolve().parent / "msg"

RL_RESULTS = "/inference_pkg/rl_results"
AUTO_DRIVE = "/deepracer_navigation_pkg/auto_drive"
WRITES = "/car_runtime/writes"
SETTINGS = "/car_runtime/settings"

INFER_RESULTS_ARRAY = "deepracer_interfaces_pkg/msg/InferResultsArray"
INFER_RESULTS = "deepracer_interfaces_pkg/msg/InferResults"
SERVO_CTRL = "deepracer_interfaces_pkg/msg/ServoCtrlMsg"
DRIVE_WRITE = "car_runtime_msgs/msg/DriveWrite"
RUN_SETTINGS = "car_runtime_msgs/msg/RunSettings"

#: ``CompressedImage.format`` of a frame the recorder JPEG-encoded (image_transport's names):
#: the source delivered pixels, so the bag holds a lossy copy of what the car decided on. The
#: camera's own bytes are stored as ``jpeg`` (``png`` for PNG files).
REENCODED_FORMATS = ("bgr8; jpeg compressed bgr8", "mono8; jpeg compressed mono8")

#: topic -> message type, in the order the connections are added to a bag.
TOPICS: dict[str, str] = {
    RL_RESULTS: INFER_RESULTS_ARRAY,
    AUTO_DRIVE: SERVO_CTRL,
    WRITES: DRIVE_WRITE,
    SETTINGS: RUN_SETTINGS,
}


def msg_files() -> dict[str, Path]:
    """``{"pkg/msg/Type": path}`` for every shipped ``.msg`` file."""
    return {f"{p.parent.name}/msg/{p.stem}": p for p in sorted(MSG_DIR.glob("*/*.msg"))}


@functools.lru_cache(maxsize=1)
def typestore() -> Any:
    """A rosbags typestore with the ROS 2 Humble types plus ours (cached; treat as read-only)."""
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict = {}
    for name, path in msg_files().items():
        types.update(get_types_from_msg(path.read_text(encoding="utf-8"), name))
    store.register(types)
    return store


def classes() -> Any:
    """The message classes by short name: ``classes().InferResultsArray(...)`` etc."""
    store = typestore()

    class _Ns:
        pass

    ns = _Ns()
    for full in (INFER_RESULTS_ARRAY, INFER_RESULTS, SERVO_CTRL, DRIVE_WRITE, RUN_SETTINGS,
                 "sensor_msgs/msg/CompressedImage", "std_msgs/msg/Header",
                 "builtin_interfaces/msg/Time"):
        setattr(ns, full.rsplit("/", 1)[1], store.types[full])
    return ns
