"""Fixtures for the flight-recorder tests (their helpers live in ``recording_helpers``: a module
name of its own, since every test folder has a ``conftest``)."""

from __future__ import annotations

import pytest

from recording_helpers import RecordedRun, run_recorded


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, demo_model, footage_seq_dir) -> RecordedRun:
    """One `run --record` over the 100 real 160x120 frames, armed, at 30 fps."""
    tmp = tmp_path_factory.mktemp("recorded")
    run = run_recorded(tmp, demo_model, footage_seq_dir)
    assert run.proc.returncode == 0, run.proc.stderr
    return run
