"""Fixtures for the doctor tests: a car-shaped system tree in a temp dir (``car_tree``), and a
laptop-shaped one."""

from __future__ import annotations

from pathlib import Path

import pytest

from car_tree import CarTree


@pytest.fixture
def car(tmp_path: Path) -> CarTree:
    return CarTree(tmp_path / "car")


@pytest.fixture
def laptop(tmp_path: Path) -> Path:
    root = tmp_path / "laptop"
    for d in ("sys/class", "dev", "proc", "etc"):
        (root / d).mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text(
        "model name\t: Some Laptop CPU\nflags\t\t: fpu sse4_1 sse4_2 avx avx2 fma\n")
    return root
