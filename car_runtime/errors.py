"""Errors a user can act on.

Every message says what is wrong and how to fix it, on one line. The CLI prints
``error: <message>`` and exits with :attr:`CarRuntimeError.exit_code` (2), never a traceback.
"""

from __future__ import annotations


class CarRuntimeError(Exception):
    """A problem the user can fix (bad input, missing hardware, bad config)."""

    exit_code = 2


class ConfigError(CarRuntimeError):
    """Invalid configuration (YAML file, CLI flag or ROS parameter)."""


class ModelError(CarRuntimeError):
    """The model archive/folder/IR cannot be used."""


class MetadataError(ModelError):
    """``model_metadata.json`` is missing, malformed or describes something we cannot run."""


class CalibrationError(CarRuntimeError):
    """The calibration file or a calibration value is invalid."""


class HardwareError(CarRuntimeError):
    """A device (PWM chip, GPIO, serial port, camera) is missing or not accessible."""


class GuardianLostError(HardwareError):
    """The guardian process died: the outputs are at neutral and nothing may drive (exit 6,
    like ``run``)."""

    exit_code = 6


class SourceError(CarRuntimeError):
    """A frame source (camera, video, image folder, bag) cannot be opened or read."""


class BusyError(CarRuntimeError):
    """The request cannot be served now (e.g. a model is loading); try again when it is done."""


def require_module(module: str, flag: str) -> None:
    """Raise :class:`ConfigError` up front if ``flag`` needs ``module`` and it cannot be
    imported (``--plot needs matplotlib, which is not installed; run `pip install matplotlib`
    or drop --plot``): one message for every command with that flag."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{flag} needs {module}, which is not installed; "
                          f"run `pip install {module}` or drop {flag}") from None
