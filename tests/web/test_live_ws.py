"""Live view and WebSocket with a real server and real clients: the camera's own JPEG bytes
(no re-encode), the rate cap, the model input view, telemetry pushed to every page, heartbeats
that hold the deadman, and a closed or flooding socket that stops the car at once."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import cv2
import numpy as np
import psutil

from car_runtime.control.safety import State
from car_runtime.timing import now_s
from car_runtime.web.live import encode_jpeg
from helpers import wait_until as wait_for


def read_parts(port: int, cookies: dict, view: str, seconds: float, max_parts: int = 1000):
    """(headers, jpeg) of the MJPEG parts received within ``seconds``."""

    async def go():
        parts = []
        async with aiohttp.ClientSession(cookies=cookies) as s:
            async with s.get(f"http://127.0.0.1:{port}/api/live.mjpg?view={view}") as r:
                assert r.status == 200, await r.text()
                assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
                reader = aiohttp.MultipartReader.from_response(r)
                end = time.monotonic() + seconds
                while time.monotonic() < end and len(parts) < max_parts:
                    try:
                        part = await asyncio.wait_for(reader.next(), end - time.monotonic())
                    except asyncio.TimeoutError:
                        break
                    if part is None:
                        break
                    parts.append((dict(part.headers), bytes(await part.read())))
        return parts

    return asyncio.run(go())


def test_live_view_sends_the_cameras_own_jpeg_bytes(car, footage_seq_dir):
    c = car.client()
    parts = read_parts(car.port, c.cookies, "camera", 1.5)
    assert len(parts) >= 5
    originals = {p.read_bytes() for p in footage_seq_dir.glob("*.jpg")}
    assert all(jpeg in originals for _, jpeg in parts)  # byte for byte: never re-encoded
    seqs = [int(h["X-Frame-Seq"]) for h, _ in parts]
    assert seqs == sorted(set(seqs))  # newest only, never the same frame twice
    h = parts[-1][0]
    assert h["X-State"] == "disarmed" and float(h["X-Throttle"]) == 0.0
    assert h["X-Action"].isdigit() and float(h["X-Frame-Age-Ms"]) >= 0


def test_live_view_rate_is_capped(car_factory):
    car = car_factory(video_fps=5)  # the source runs at 30 fps
    c = car.client()
    t0 = now_s()
    parts = read_parts(car.port, c.cookies, "camera", 2.0)
    elapsed = now_s() - t0
    assert 3 <= len(parts) <= 5 * elapsed + 2, len(parts)
    ages = [float(h["X-Frame-Age-Ms"]) for h, _ in parts]
    print(f"live view at 5 fps from 30 fps: {len(parts)} parts in {elapsed:.2f} s, "
          f"age when sent p50 {np.median(ages):.1f} ms")


def test_model_input_view_is_the_160x120_grey_input(car):
    c = car.client()
    parts = read_parts(car.port, c.cookies, "model", 1.5)
    assert parts
    img = cv2.imdecode(np.frombuffer(parts[-1][1], np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.shape == (120, 160)
    assert car.cockpit.feed.model_viewers == 0 or wait_for(
        lambda: car.cockpit.feed.model_viewers == 0, what="viewer count back to 0")


def test_live_view_needs_a_session_and_a_known_view(car):
    c = car.client()
    assert c.get("/api/live.mjpg?view=../etc").status == 400
    from webclient import Client

    assert Client(car.port).get("/api/live.mjpg").status == 401


def test_encode_only_arrays_and_non_jpeg_bytes(footage_seq_dir):
    jpeg = next(footage_seq_dir.glob("*.jpg")).read_bytes()
    assert encode_jpeg(jpeg) == jpeg
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    out = encode_jpeg(bgr)
    assert out[:2] == b"\xff\xd8" and cv2.imdecode(np.frombuffer(out, np.uint8), 1).shape == bgr.shape
    png = cv2.imencode(".png", bgr)[1].tobytes()
    assert encode_jpeg(png)[:2] == b"\xff\xd8"


def ws_session(car, client, script):
    """Run ``script(ws)`` on a WebSocket of ``client`` (async), return its result."""

    async def go():
        async with aiohttp.ClientSession(cookies=client.cookies) as s:
            async with s.ws_connect(f"http://127.0.0.1:{car.port}/api/ws?client={client.client_id}",
                                    headers={"Origin": f"http://127.0.0.1:{car.port}"}) as ws:
                return await script(ws)

    return asyncio.run(go())


def test_telemetry_reaches_every_page(car):
    a, b = car.client(control=True), car.client()

    async def first(ws):
        while True:
            msg = await asyncio.wait_for(ws.receive(), 5)
            data = json.loads(msg.data)
            if data["t"] == "telemetry" and data["live"]:
                return data

    ta = ws_session(car, a, first)
    tb = ws_session(car, b, first)
    assert ta["you_control"] is True and tb["you_control"] is False
    s = ta["status"]
    for key in ("state", "model", "fps", "stale", "skipped", "deadline_misses", "clamped",
                "nonfinite", "stages", "deadman_ms", "max_speed_pct"):
        assert key in s, key
    assert ta["frame_age_ms"]["p99"] >= ta["frame_age_ms"]["p50"] >= 0
    sysf = ta["system"]
    assert set(sysf) >= {"cpu_pct", "cpu_temp_c", "cpu_freq_mhz", "memory", "disk_free_mb",
                         "battery_pct"}
    assert sysf["memory"]["total_mb"] > 0  # this machine has /proc/meminfo
    assert ta["web"]["deadman_ms"] == 500


def test_heartbeats_hold_and_closing_the_socket_stops_at_once(car):
    c = car.client(control=True)
    result = {}

    async def drive(ws):
        await ws.send_str("hb")
        await asyncio.sleep(0.05)
        r = await asyncio.get_running_loop().run_in_executor(None, c.post, "/api/arm")
        assert r.status == 200, r.body
        end = time.monotonic() + 1.5  # three deadman periods of driving on heartbeats
        while time.monotonic() < end:
            await ws.send_str("hb")
            await asyncio.sleep(0.1)
        result["armed"] = car.loop.state is State.ARMED
        result["t_close"] = now_s()

    ws_session(car, c, drive)
    wait_for(lambda: car.loop.state is State.DISARMED, timeout_s=2, what="stop on close")
    stop = next(w for w in reversed(car.writes) if w.context.get("event") == "stop")
    print(f"socket closed -> neutral write in {(now_s() - result['t_close']) * 1e3:.0f} ms "
          "(upper bound, polled)")
    assert result["armed"] and car.loop.deadman_trips == 0
    assert stop.throttle == 0.0


def test_silent_socket_trips_the_deadman(car):
    c = car.client(control=True)

    async def arm_then_go_quiet(ws):
        await ws.send_str("hb")
        await asyncio.sleep(0.05)
        r = await asyncio.get_running_loop().run_in_executor(None, c.post, "/api/arm")
        assert r.status == 200
        t = now_s()
        while car.loop.state is State.ARMED and now_s() - t < 3:
            await asyncio.sleep(0.01)  # the socket stays open, no heartbeats (a frozen page)
        return now_s() - t

    quiet_s = ws_session(car, c, arm_then_go_quiet)
    assert car.loop.deadman_trips == 1 and 0.4 < quiet_s < 1.5
    print(f"deadman 500 ms: disarmed {quiet_s * 1e3:.0f} ms after arming on the last heartbeat")


def test_message_flood_closes_the_socket_and_stops(car):
    c = car.client(control=True)
    frames = car.loop.stats.frames

    async def flood(ws):
        for _ in range(2000):
            if ws.closed:
                break
            await ws.send_str("hb")
        msg = await asyncio.wait_for(ws.receive(), 5)
        return msg.type, ws.close_code

    kind, code = ws_session(car, c, flood)
    assert kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert code == 1008
    wait_for(lambda: car.loop.stats.frames > frames + 10, what="the loop kept running")


def test_a_client_that_never_reads_grows_nothing(car):
    c = car.client()
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    socks = []
    for _ in range(3):  # slow clients: ask for the stream, never read it
        s = socket.create_connection(("127.0.0.1", car.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
        s.sendall(f"GET /api/live.mjpg HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode())
        socks.append(s)
    frames = car.loop.stats.frames
    time.sleep(3.0)
    grown_mb = (proc.memory_info().rss - rss0) / 2**20
    assert car.loop.stats.frames > frames + 60  # 30 fps source: the loop never waited
    assert grown_mb < 30, grown_mb
    for s in socks:
        s.close()
    wait_for(lambda: car.cockpit.viewers == 0, timeout_s=5, what="slow viewers dropped")
    print(f"3 clients not reading for 3 s: RSS +{grown_mb:.1f} MB")
