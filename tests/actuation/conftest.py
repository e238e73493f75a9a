"""Fixtures for the actuation tests (fakes live in actuation_fakes.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actuation_fakes import FakeSysfs  # noqa: E402

from car_runtime.actuation.calibration import Calibration  # noqa: E402


@pytest.fixture
def cal() -> Calibration:
    return Calibration.defaults()


@pytest.fixture
def fake_sys(tmp_path):
    """A running fake kernel with the stock chip (PCI 0000:00:17.0) and a GPIO class dir."""
    fs = FakeSysfs(tmp_path).start()
    yield fs
    fs.stop()
