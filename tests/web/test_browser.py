"""The cockpit in a real browser (Debian's chromium driven by Playwright) against a real
`car-runtime run --web` on recorded footage, with the record output as the ground truth of
what reached the wheels. Phone-size screenshots of every page go to $COCKPIT_SHOTS (or
tmp_path) for a person to look at.

Skipped when /usr/bin/chromium or playwright is missing; .ci/run installs both.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import psutil
import pytest

from car_runtime.actuation.calibration import Calibration
from car_runtime.actuation.recorder import read_records
from car_runtime.control.actions import ActionMapper
from car_runtime.model.archive import open_model
from helpers import car_runtime_cmd, mcap_records
from webclient import PASSWORD, tar_gz

pytestmark = [pytest.mark.slow, pytest.mark.browser]
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

NEUTRAL = Calibration.defaults().neutral_ns()
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DEADMAN_MS, DEADLINE_MS = 500, 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def looped_footage(src: Path, dst: Path, frames: int) -> Path:
    """A folder of ``frames`` links cycling through the real footage (a camera that lasts)."""
    dst.mkdir()
    files = sorted(src.glob("*.jpg"))
    for i in range(frames):
        (dst / f"{i:06d}.jpg").symlink_to(files[i % len(files)])
    return dst


class Record:
    """The recorder's JSON lines, read as they grow."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict]:
        return read_records(self.path) if self.path.exists() else []

    def wait(self, predicate, timeout_s: float = 15.0, what: str = "records"):
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            recs = self.all()
            found = predicate(recs)
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def wait_neutral_since(self, t0: float, start_index: int, timeout_s: float = 5.0) -> float:
        """Seconds from ``t0`` until a disarmed neutral write appears after ``start_index``."""
        self.wait(lambda r: any(x.get("state") == "disarmed" and pulses(x) == NEUTRAL
                                for x in r[start_index:]), timeout_s, "neutral")
        return time.monotonic() - t0


def pulses(r: dict) -> tuple[int, int]:
    return (r["servo_ns"], r["motor_ns"])


def driven(recs: list[dict]) -> list[dict]:
    return [r for r in recs if r.get("state") == "armed" and r.get("frame_seq") is not None
            and pulses(r) != NEUTRAL]


def distinct_model(model_dir: Path) -> bytes:
    """The tiny net with an action space whose decisions the demo model can never make
    (throttle 0.2 * curve(0.3) = 0.1104 at 20 %), so the record tells the models apart."""
    meta = json.loads((model_dir / "model_metadata.json").read_text())
    meta["action_space"] = [{"steering_angle": -30, "speed": 0.15, "index": 0},
                            {"steering_angle": 0, "speed": 0.15, "index": 1},
                            {"steering_angle": 30, "speed": 0.5, "index": 2}]
    return tar_gz([("agent/model.pb", (model_dir / "model.pb").read_bytes(), "file"),
                   ("model_metadata.json", json.dumps(meta).encode(), "file")])


def decisions(model_path, pct: float) -> set[tuple[float, float]]:
    with open_model(model_path) as bundle:
        table = ActionMapper(bundle.metadata.action_space, pct).action_table()
    return {(round(d.angle, 4), round(d.throttle, 4)) for d in table}


@pytest.fixture
def shots(tmp_path) -> Path:
    d = Path(os.environ.get("COCKPIT_SHOTS") or tmp_path / "shots")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def car_process(tmp_path, demo_model, footage_seq_dir, password_file):
    port = free_port()
    models = tmp_path / "models"
    models.mkdir()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"models_dir: {models}\nweb_deadman_ms: {DEADMAN_MS}\nweb_video_fps: 15\n"
                   f"deadline_ms: {DEADLINE_MS}\ncalibration: {tmp_path / 'calibration.json'}\n")
    folder = looped_footage(footage_seq_dir, tmp_path / "footage", 4000)
    rec = tmp_path / "rec.jsonl"
    runs = tmp_path / "runs"
    log = open(tmp_path / "car.log", "w")
    p = subprocess.Popen([*car_runtime_cmd(), "run", "--config", str(cfg), "--model", str(demo_model),
                          "--camera", str(folder), "--fps", "15", "--output", f"record:{rec}",
                          "--record", str(runs),
                          "--web", f"127.0.0.1:{port}", "--web-password-file", str(password_file),
                          "--status-interval", "0"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield url, Record(rec), models, p, runs
    p.send_signal(signal.SIGINT)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
    log.close()
    print((tmp_path / "car.log").read_text()[-3000:])


def chromium_processes() -> list[psutil.Process]:
    return [c for c in psutil.Process().children(recursive=True)
            if "chrom" in (c.name() or "").lower()]


def open_page(pw, url: str):
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page.goto(url)
    page.fill("#password", PASSWORD)
    page.click("#login-form button")
    page.wait_for_selector("#control:has-text('you control'), #control button", timeout=10_000)
    if page.query_selector("#control button"):  # the last controller left < 2 s ago
        page.click("#control button")
    page.wait_for_selector("#control:has-text('you control')", timeout=10_000)
    page.wait_for_selector("#start:not([disabled])")
    return browser, page


def test_race_day_in_a_real_browser(car_process, tiny_model, tmp_path, shots, demo_model):
    url, record, models, proc, runs = car_process
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1)
        page.goto(url)
        page.wait_for_selector("#password")
        page.screenshot(path=str(shots / "0-login.png"))
        page.fill("#password", "wrong password")
        page.click("#login-form button")
        page.wait_for_selector("#login-error:has-text('wrong password')")
        page.fill("#password", PASSWORD)
        page.click("#login-form button")
        page.wait_for_selector("#control:has-text('you control')", timeout=10_000)
        page.wait_for_selector("#start:not([disabled])")

        # START -> the record shows armed writes that drive
        n0 = len(record.all())
        page.click("#start")
        record.wait(lambda r: len(driven(r[n0:])) >= 10, what="armed driving writes")
        page.wait_for_selector("#state.armed")
        first_live = page.evaluate("window.__live.lastSeq")
        time.sleep(1.0)
        assert page.evaluate("window.__live.lastSeq") != first_live  # the live image changes
        assert page.evaluate("window.__live.frames") >= 10
        page.screenshot(path=str(shots / "1-drive-armed.png"))

        # max speed 50 -> 20: the recorded throttle follows
        before = decisions(demo_model, 50)
        assert {(round(r["angle"], 4), round(r["throttle"], 4)) for r in driven(record.all())} <= before
        page.eval_on_selector("#speed", "e => { e.value = 20; e.dispatchEvent(new Event('input')); }")
        page.wait_for_selector("#speed-value:has-text('20')")
        n1 = len(record.all())
        time.sleep(0.3)
        n1 = len(record.all())
        recs = record.wait(lambda r: driven(r[n1:])[5:] and r, what="driving at 20 %")
        after = {(round(r["angle"], 4), round(r["throttle"], 4)) for r in driven(recs[n1:])}
        assert after <= decisions(demo_model, 20) and max(t for _, t in after) <= 0.2

        # Models: a bad archive shows run's reason and writes nothing; a good one loads live
        page.click("nav a[data-tab=models]")
        bad = tmp_path / "upload" / "broken-model.tar.gz"
        bad.parent.mkdir()
        bad.write_bytes(b"definitely not a tar.gz")
        page.set_input_files("#upload-file", str(bad))
        page.click("#upload-form button")
        page.wait_for_selector("#upload-msg.bad")
        reason = page.inner_text("#upload-msg")
        assert reason.startswith("broken-model.tar.gz is not a readable tar.gz"), reason
        assert list(models.iterdir()) == []
        page.screenshot(path=str(shots / "2-models-bad-upload.png"))

        good = tmp_path / "upload" / "tiny-3.tar.gz"
        good.write_bytes(distinct_model(tiny_model(fmt="pb", n_outputs=3).dir))
        page.set_input_files("#upload-file", str(good))
        page.click("#upload-form button")
        page.wait_for_selector("#upload-msg.good")
        assert [p.name for p in models.iterdir()] == ["tiny-3.tar.gz"]
        page.wait_for_selector(".model:has-text('tiny-3.tar.gz') button:has-text('Load')")
        n2 = len(record.all())
        page.click(".model:has-text('tiny-3.tar.gz') button:has-text('Load')")
        page.wait_for_selector("#load-msg.good", timeout=30_000)
        page.wait_for_selector(".model.current:has-text('tiny-3.tar.gz')")
        page.screenshot(path=str(shots / "3-models-loaded.png"))
        new = decisions(good, 20)
        recs = record.wait(lambda r: len(driven(r[n2:])) >= 15 and r, what="the new model driving")
        tail = {(round(r["angle"], 4), round(r["throttle"], 4)) for r in driven(recs[n2:])[-10:]}
        assert tail <= new and tail - decisions(demo_model, 20)  # decisions only the new model makes

        # Calibrate and Status pages (screenshots), then back to Drive
        page.click("nav a[data-tab=calibrate]")
        page.click("#cal-begin")
        page.wait_for_selector("#cal-panels:not([hidden])")
        page.click("[data-channel=servo] [data-step='10000']")
        page.wait_for_selector("[data-channel=servo] .pulse-ns:has-text('1460000')")
        page.screenshot(path=str(shots / "4-calibrate.png"), full_page=True)
        page.click("nav a[data-tab=status]")  # leaving the page ends the calibration
        page.wait_for_selector("#status-table td:has-text('deadline misses')")
        page.wait_for_selector("#state:not(.calibrating)")
        # record: output has no wheels, so no guardian; the recorder reports its sessions
        page.wait_for_selector("#status-table td:has-text('none (no PWM output')")
        page.wait_for_selector("#status-table td:has-text('sessions'), "
                               "#status-table td:has-text('recording ')")
        page.screenshot(path=str(shots / "5-status.png"), full_page=True)

        # Runs: the flight recorder's sessions; the demo model's closed when tiny-3 was loaded
        page.click("nav a[data-tab=runs]")
        page.wait_for_selector("#run-list .run")
        demo_run = next(p.name for p in runs.iterdir() if p.name.startswith(demo_model.name.split(".")[0]))
        card = f".run[data-run='{demo_run}']"
        page.wait_for_selector(f"{card}:not(.recording):not(.torn) a:has-text('Download')")
        tiny_run = next(p.name for p in runs.iterdir() if p.name.startswith("tiny-3"))
        assert page.inner_text(f".run[data-run='{tiny_run}']")  # listed (recording, or closed)
        assert "runs in" in page.inner_text("#runs-info")
        page.screenshot(path=str(shots / "6-runs.png"))
        with page.expect_download() as download_info:
            page.click(f"{card} a:has-text('Download')")
        download = download_info.value
        assert download.suggested_filename == f"{demo_run}.tar"
        got = tmp_path / "got"
        with tarfile.open(download.path()) as tar:
            tar.extractall(got, filter="data")
        for f in (runs / demo_run).iterdir():
            assert (got / demo_run / f.name).read_bytes() == f.read_bytes()
        mcap_file = f"{demo_run}/{demo_run}.mcap"
        assert mcap_records(got / mcap_file) == mcap_records(runs / mcap_file)  # independent reader
        page.once("dialog", lambda d: d.accept())
        page.click(f"{card} button:has-text('Delete')")
        page.wait_for_selector("#runs-msg.good")
        page.wait_for_selector(card, state="detached")
        assert not (runs / demo_run).exists() and (runs / tiny_run).is_dir()
        page.click("nav a[data-tab=drive]")

        # STOP -> neutral
        page.click("#start")
        page.wait_for_selector("#state.armed")
        n3 = len(record.all())
        page.click("#stop")
        t = record.wait_neutral_since(time.monotonic(), n3)
        page.wait_for_selector("#state.disarmed")
        time.sleep(0.3)
        assert not driven(record.all()[len(record.all()) - 3:])
        print(f"STOP click -> neutral in the record: {t * 1e3:.0f} ms (polled)")

        # Space is STOP too
        page.click("#start")
        page.wait_for_selector("#state.armed")
        page.keyboard.press("Space")
        page.wait_for_selector("#state.disarmed")

        # close the page while armed -> neutral within deadman + deadline
        page.click("#start")
        page.wait_for_selector("#state.armed")
        n4 = len(record.all())
        t0 = time.monotonic()
        page.close()
        closed_s = record.wait_neutral_since(t0, n4)
        browser.close()
        print(f"page closed while armed -> neutral in {closed_s * 1e3:.0f} ms "
              f"(deadman {DEADMAN_MS} + deadline {DEADLINE_MS} ms)")
        assert closed_s <= (DEADMAN_MS + DEADLINE_MS) / 1e3 + 1.0  # slack for a loaded CI box

        # a frozen browser (Wi-Fi gone: the socket stays open, nothing arrives) -> the deadman
        browser, page = open_page(pw, url)
        page.click("#start")
        page.wait_for_selector("#state.armed")
        n5 = len(record.all())
        frozen = chromium_processes()
        t0 = time.monotonic()
        for c in frozen:
            c.send_signal(signal.SIGSTOP)
        try:
            frozen_s = record.wait_neutral_since(t0, n5)
            assert any(r.get("event") == "link_lost" for r in record.all()[n5:])
        finally:
            for c in frozen:
                c.send_signal(signal.SIGCONT)
        print(f"browser frozen while armed -> neutral in {frozen_s * 1e3:.0f} ms (deadman trip)")
        assert frozen_s <= (DEADMAN_MS + DEADLINE_MS) / 1e3 + 1.0

        # kill the browser while armed -> neutral
        page.wait_for_selector("#control:has-text('you control')")
        page.wait_for_selector("#start:not([disabled])")
        page.click("#start")
        page.wait_for_selector("#state.armed")
        n6 = len(record.all())
        t0 = time.monotonic()
        for c in chromium_processes():
            c.kill()
        killed_s = record.wait_neutral_since(t0, n6)
        print(f"browser killed while armed -> neutral in {killed_s * 1e3:.0f} ms")
        assert killed_s <= (DEADMAN_MS + DEADLINE_MS) / 1e3 + 1.0
        with contextlib.suppress(Exception):
            browser.close()
    assert proc.poll() is None  # the car process kept running through all of it
    last = record.all()[-1]
    assert pulses(last) == NEUTRAL and last["state"] == "disarmed"
