"""What the race-day cockpit costs the car, measured side by side in one run.

    python benchmarks/web_cockpit.py [--phase-s 15] [--rounds 2] [--closes 5] [--json]

Starts ``car-runtime run --web`` (the demo model on the bundled real footage looped at 30 fps,
record output) and alternates phases with no page and with a phone-size page open in Debian's
chromium (Playwright) streaming the live view: A B A B... Per phase it reads the recorder's lines
(the loop's frame ages, frames) and the process's and web thread's CPU times (/proc). Then it
arms from the page and closes the page, several times, timing how long until the record shows
neutral.

Reported (targets from issue 11): frame age p99 and CPU per frame with a page / without
(<= 1.10x), the web thread's CPU with no page (<= 1 % of a core), the live view's glass-to-glass
staleness (capture -> drawn on the page's canvas, same machine clock), page closed -> neutral
(<= deadman + 100 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
FOOTAGE = ROOT / "car_runtime/data/footage/car-event-track-seq-160x120"
MODEL = ROOT / "models/demo-untrained-deep-ffc-discrete.tar.gz"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "benchmark password"
DEADMAN_MS = 500


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def web_thread_cpu_s(pid: int) -> float:
    """CPU seconds of the threads named car-web* (the cockpit's event loop and helpers)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if not (task / "comm").read_text().startswith("car-web"):
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            continue
    return total / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phase-s", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--closes", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from car_runtime.web.auth import write_password_file

    tmp = Path(tempfile.mkdtemp(prefix="web-cockpit-bench-"))
    frames = tmp / "footage"
    frames.mkdir()
    files = sorted(FOOTAGE.glob("*.jpg"))
    n_frames = int(30 * (args.phase_s * 2 * args.rounds + 30 + 10 * args.closes))
    for i in range(n_frames):
        (frames / f"{i:06d}.jpg").symlink_to(files[i % len(files)])
    write_password_file(tmp / "pw", PASSWORD)
    (tmp / "cfg.yaml").write_text(f"models_dir: {tmp / 'models'}\nweb_deadman_ms: {DEADMAN_MS}\n"
                                  f"calibration: {tmp / 'cal.json'}\n")
    rec = tmp / "rec.jsonl"
    port = free_port()
    car = subprocess.Popen(
        [sys.executable, "-m", "car_runtime.cli.main", "run", "--config", str(tmp / "cfg.yaml"),
         "--model", str(MODEL), "--camera", str(frames), "--fps", "30", "--output", f"record:{rec}",
         "--web", f"127.0.0.1:{port}", "--web-password-file", str(tmp / "pw"),
         "--status-interval", "0"], stdout=subprocess.DEVNULL, stderr=open(tmp / "car.log", "w"))
    proc = psutil.Process(car.pid)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    time.sleep(2.0)  # warm up
    phases: dict[str, list[dict]] = {"no page": [], "page + live view": []}
    stale_ms: list[float] = []
    closes_ms: list[float] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)

            def measure(name: str, page=None) -> None:
                n0 = len(read_lines(rec))
                cpu0 = sum(proc.cpu_times()[:2])
                web0 = web_thread_cpu_s(car.pid)
                t0 = time.monotonic()
                if page is not None:
                    page.evaluate("window.__live.staleMs = []")
                time.sleep(args.phase_s)
                wall = time.monotonic() - t0
                cpu = sum(proc.cpu_times()[:2]) - cpu0
                web = web_thread_cpu_s(car.pid) - web0
                recs = [r for r in read_lines(rec)[n0:] if r.get("frame_seq") is not None]
                ages = [r["frame_age_ms"] for r in recs]
                phases[name].append({"frames": len(recs), "cpu_ms_per_frame": cpu * 1e3 / len(recs),
                                     "age_p99_ms": float(np.percentile(ages, 99)),
                                     "age_p50_ms": float(np.percentile(ages, 50)),
                                     "web_cpu_pct": 100 * web / wall})
                if page is not None:
                    stale_ms.extend(page.evaluate("window.__live.staleMs"))

            def login():
                page = browser.new_page(viewport={"width": 390, "height": 844})
                page.goto(url)
                page.fill("#password", PASSWORD)
                page.click("#login-form button")
                page.wait_for_selector("#control:has-text('you control'), #control button")
                if page.query_selector("#control button"):
                    page.click("#control button")
                page.wait_for_selector("#start:not([disabled])")
                return page

            for _ in range(args.rounds):
                measure("no page")
                page = login()
                while page.evaluate("window.__live.frames") <= 5:  # (the page's CSP forbids eval)
                    time.sleep(0.05)
                measure("page + live view", page)
                page.close()
                time.sleep(1.0)
            for _ in range(args.closes):
                page = login()
                page.click("#start")
                page.wait_for_selector("#state.armed")
                time.sleep(0.5)
                n0 = len(read_lines(rec))
                t0 = time.monotonic()
                page.close()
                while time.monotonic() - t0 < 5:
                    new = read_lines(rec)[n0:]
                    if any(r.get("state") == "disarmed" and r.get("motor_ns") is not None
                           and r.get("event") in ("stop", "link_lost") for r in new):
                        closes_ms.append((time.monotonic() - t0) * 1e3)
                        break
                    time.sleep(0.002)
                time.sleep(1.0)
            browser.close()
    finally:
        car.send_signal(signal.SIGINT)
        car.wait(30)

    def mean(name: str, key: str) -> float:
        return statistics.mean(p[key] for p in phases[name])

    a, b = "no page", "page + live view"
    result = {
        "conditions": {"model": MODEL.name, "source": "160x120 JPEG folder at 30 fps",
                       "phase_s": args.phase_s, "rounds": args.rounds, "cores": os.cpu_count(),
                       "video_fps": 15, "deadman_ms": DEADMAN_MS},
        "frame_age_p99_ms": {a: round(mean(a, "age_p99_ms"), 2), b: round(mean(b, "age_p99_ms"), 2)},
        "frame_age_p99_ratio": round(mean(b, "age_p99_ms") / mean(a, "age_p99_ms"), 3),
        "cpu_ms_per_frame": {a: round(mean(a, "cpu_ms_per_frame"), 3), b: round(mean(b, "cpu_ms_per_frame"), 3)},
        "cpu_per_frame_ratio": round(mean(b, "cpu_ms_per_frame") / mean(a, "cpu_ms_per_frame"), 3),
        "web_thread_cpu_pct_of_a_core": {a: round(mean(a, "web_cpu_pct"), 3), b: round(mean(b, "web_cpu_pct"), 3)},
        "live_view_staleness_ms": {"p50": round(float(np.percentile(stale_ms, 50)), 1),
                                   "p99": round(float(np.percentile(stale_ms, 99)), 1),
                                   "frames": len(stale_ms)} if stale_ms else None,
        "page_closed_to_neutral_ms": {"p50": round(statistics.median(closes_ms), 1),
                                      "max": round(max(closes_ms), 1), "n": len(closes_ms)}
        if closes_ms else None,
        "phases": phases,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"conditions: {result['conditions']}")
    print(f"frame age p99 (ms): no page {result['frame_age_p99_ms'][a]}, page "
          f"{result['frame_age_p99_ms'][b]} -> ratio {result['frame_age_p99_ratio']} (target <= 1.10)")
    print(f"CPU per frame (ms): no page {result['cpu_ms_per_frame'][a]}, page "
          f"{result['cpu_ms_per_frame'][b]} -> ratio {result['cpu_per_frame_ratio']} (target <= 1.10)")
    print(f"web thread CPU (% of a core): idle {result['web_thread_cpu_pct_of_a_core'][a]} "
          f"(target <= 1), streaming {result['web_thread_cpu_pct_of_a_core'][b]}")
    print(f"live view staleness (capture -> drawn): {result['live_view_staleness_ms']}")
    print(f"page closed while armed -> neutral: {result['page_closed_to_neutral_ms']} "
          f"(target <= {DEADMAN_MS + 100} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
