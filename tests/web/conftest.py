"""Fixtures for the cockpit tests: a real drive loop (real OpenVINO on the demo model, looping
real footage, a recorder output) with the real cockpit server on a free loopback port."""

from __future__ import annotations

from pathlib import Path

import pytest

from car_runtime.web.auth import LoginLimiter, write_password_file
from test_controls import Running
from webclient import PASSWORD, Client


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    return write_password_file(tmp_path / "secret" / "web-password", PASSWORD)


class Car:
    """A running loop + cockpit (+ a real flight recorder with ``record_dir``); ``client()``
    makes a logged-out client."""

    def __init__(self, running: Running, cockpit, models_dir: Path, recorder=None) -> None:
        self.running = running
        self.cockpit = cockpit
        self.loop = running.loop
        self.controls = running.controls
        self.models_dir = models_dir
        self.port = cockpit.port
        self.recorder = recorder

    def client(self, *, login: bool = True, control: bool = False) -> Client:
        c = Client(self.port)
        if login:
            assert c.login().status == 200
        if control:
            c.take_control()
        return c

    @property
    def writes(self):
        return self.running.writes


@pytest.fixture
def car_factory(demo_model, footage_seq_dir, password_file, tmp_path):
    from car_runtime.web.server import Cockpit

    made = []

    def make(*, deadman_ms: float = 500.0, video_fps: float = 15.0, extra_model_dirs=None,
             max_upload_bytes: int | None = None, limiter: LoginLimiter | None = None,
             calibration: Path | None = None, fps: float = 30.0,
             record_dir: Path | None = None, record_idle_close_s: float = 15.0) -> Car:
        models_dir = tmp_path / "models"
        models_dir.mkdir(exist_ok=True)
        running = Running(demo_model, footage_seq_dir, fps=fps)
        running.cfg = running.cfg.replace(
            web="127.0.0.1:8080", web_password_file=str(password_file), models_dir=str(models_dir),
            web_deadman_ms=deadman_ms, web_video_fps=video_fps,
            calibration=str(calibration or tmp_path / "calibration.json"),
            record_dir=None if record_dir is None else str(record_dir))
        running.loader.config = running.cfg
        recorder = None
        if record_dir is not None:
            from car_runtime.recording.recorder import FlightRecorder

            recorder = FlightRecorder(running.controls, record_dir, config=running.cfg,
                                      idle_close_s=record_idle_close_s, min_free_mb=0).start()
        kwargs = {"address": ("127.0.0.1", 0), "extra_model_dirs": extra_model_dirs or {},
                  "login_limiter": limiter}
        if max_upload_bytes is not None:
            kwargs["max_upload_bytes"] = max_upload_bytes
        cockpit = Cockpit(running.controls, running.cfg, **kwargs)
        cockpit.start()
        car = Car(running, cockpit, models_dir, recorder)
        made.append(car)
        return car

    yield make
    for car in made:
        car.cockpit.close()
        if car.recorder is not None:
            car.recorder.close()
        if car.running.thread.is_alive():
            car.running.close()


@pytest.fixture
def car(car_factory) -> Car:
    return car_factory()
