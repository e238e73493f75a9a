"""Python ``logging`` -> rclpy logging, so ``car-runtime ros`` prints one log format.

The node logs through rclpy (``[INFO] [time] [car_runtime]: ...``, also on ``/rosout``); the
drive loop, the camera and the other stages log through Python's ``logging``. Under ``ros``
every Python record is handed to the rclpy logger of the same name, so all lines share ROS's
format, severity filter and ``/rosout``.
"""

from __future__ import annotations

import logging

import rclpy.logging

_SEVERITY = (  # (Python level at or above, rclpy logger method)
    (logging.CRITICAL, "fatal"),
    (logging.ERROR, "error"),
    (logging.WARNING, "warning"),
    (logging.INFO, "info"),
    (logging.NOTSET, "debug"),
)


class RclpyHandler(logging.Handler):
    """Forward each record to ``rclpy.logging.get_logger(record.name)``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            logger = rclpy.logging.get_logger(record.name)
            method = next(name for level, name in _SEVERITY if record.levelno >= level)
            getattr(logger, method)(message)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def install(verbose: bool = False) -> None:
    """Replace the root logger's handlers with :class:`RclpyHandler`; ``verbose`` lets DEBUG
    records of car_runtime through rclpy's own filter too."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(RclpyHandler())
    if verbose:
        rclpy.logging.set_logger_level("car_runtime", rclpy.logging.LoggingSeverity.DEBUG)
