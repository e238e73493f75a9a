"""Cockpit hardening with a real server, real HTTP and a real drive loop: concurrent password
guesses are limited before they are checked, a broken password file leaks no path, odd
headers and bodies get JSON errors (never a 500 or a traceback), internal errors say nothing
about the car's files, STOP is applied even when every worker thread is busy, and static files
do not escape their folder."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest

from car_runtime.control.safety import State
from car_runtime.web.auth import LoginLimiter
from helpers import wait_until as wait_for
from webclient import Client


def raw(port: int, method: str, path: str, *, body=None, headers: dict | None = None,
        chunked: bool = False) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def test_concurrent_guesses_are_limited_before_they_are_checked(car_factory):
    car = car_factory(limiter=LoginLimiter(per_peer=3, total=30, window_s=60))

    def guess(_):
        return Client(car.port).login("not the password").status

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(guess, range(20)))
    assert codes.count(401) <= 3 and codes.count(429) >= 17, codes  # at most 3 were checked
    assert Client(car.port).login().status == 429  # now even the right one waits


def test_right_passwords_and_bad_bodies_do_not_count_as_failures(car_factory):
    car = car_factory(limiter=LoginLimiter(per_peer=2, total=30, window_s=60))
    for _ in range(4):
        assert Client(car.port).login().status == 200
    c = Client(car.port)
    for _ in range(4):
        assert c.post("/api/login", {"pass": "x"}).status == 400
    assert c.login("wrong password").status == 401
    assert c.login().status == 200  # one failure of two allowed


def test_a_missing_password_file_refuses_login_without_naming_the_file(car, password_file):
    c = car.client()
    password_file.unlink()
    r = Client(car.port).login()
    assert r.status == 503 and "web-password" in r.error
    assert str(password_file) not in r.body.decode() and "secret" not in r.body.decode()
    assert c.get("/api/status").status == 401  # sessions end with the file
    password_file.write_text("garbage\n")
    r = Client(car.port).login()
    assert r.status == 503 and str(password_file) not in r.body.decode()


@pytest.mark.parametrize("value", ["\xff\xfe", "\u00e9t\u00e9", "x" * 5000])
def test_odd_csrf_headers_are_just_wrong_tokens(car, value):
    c = car.client(control=True)
    status, _, body = raw(car.port, "POST", "/api/max_speed", body=b'{"pct": 5}',
                          headers={"Cookie": f"car_session={c.cookies['car_session']}",
                                   "X-Client-Id": c.client_id, "X-CSRF-Token": value,
                                   "Content-Type": "application/json"})
    assert status == 403 and "CSRF" in json.loads(body)["error"]
    assert car.controls.status()["max_speed_pct"] == 50.0


def test_a_chunked_body_over_the_limit_is_a_json_413(car):
    c = car.client(control=True)
    status, headers, body = raw(
        car.port, "POST", "/api/max_speed", body=iter([b'{"pct": 5' + b" " * 40_000, b"}"]),
        chunked=True, headers={"Cookie": f"car_session={c.cookies['car_session']}",
                               "X-Client-Id": c.client_id, "X-CSRF-Token": c.csrf,
                               "Content-Type": "application/json"})
    assert status == 413 and headers["Content-Type"].startswith("application/json"), body
    assert json.loads(body)["ok"] is False
    assert car.controls.status()["max_speed_pct"] == 50.0


def test_deeply_nested_json_is_a_400(car):
    c = car.client(control=True)
    r = c.request("POST", "/api/max_speed", body=b"[" * 15000 + b"]" * 15000,
                  headers={"Content-Type": "application/json"})
    assert r.status in (400, 413) and r.json["ok"] is False, r.body
    r = c.request("POST", "/api/max_speed", body=b'{"pct":' + b"[" * 5000 + b"]" * 5000 + b"}",
                  headers={"Content-Type": "application/json"})
    assert r.status == 400 and "malformed JSON" in r.error


def test_a_plain_get_on_the_websocket_is_a_json_error(car):
    c = car.client()
    r = c.get("/api/ws")
    assert r.status == 400 and r.json["ok"] is False and r.error


def test_internal_errors_leak_nothing(car):
    """The cockpit's own app and middleware, served for real, with one route that fails the
    way a bug would (an exception carrying a path and a secret)."""
    from aiohttp.test_utils import TestClient, TestServer

    from car_runtime.web.server import endpoint

    @endpoint(auth=False)
    async def boom(request):
        raise RuntimeError("cannot open /var/lib/car-runtime/web-password: token=hunter2")

    async def go():
        app = car.cockpit.make_app()
        app.router.add_get("/api/boom", boom)
        async with TestClient(TestServer(app)) as client:
            r = await client.get("/api/boom")
            return r.status, await r.text()

    status, text = asyncio.run(go())
    assert status == 500
    assert json.loads(text) == {"ok": False, "error": "internal error (details in the car's "
                                                     "log); the car is unaffected"}
    assert "hunter2" not in text and "/var/lib" not in text and "Traceback" not in text


def test_stop_is_applied_even_when_every_worker_thread_is_busy(car_factory):
    car = car_factory(deadman_ms=0)
    c = car.client(control=True)
    watcher = car.client()
    assert c.post("/api/arm").status == 200
    wait_for(lambda: car.loop.state is State.ARMED and car.loop.stats.driven > 3, what="driving")
    busy = threading.Event()
    workers = car.cockpit._blocking  # the pool that arm/stop/calibration/model loads wait in
    for _ in range(workers._max_workers):
        workers.submit(busy.wait)
    answer = []
    t = threading.Thread(target=lambda: answer.append(watcher.post("/api/stop")))
    t.start()
    try:
        wait_for(lambda: car.loop.state is State.DISARMED, timeout_s=5,
                 what="STOP applied while every worker is busy")
    finally:
        busy.set()
        t.join(10)
    assert answer and answer[0].status == 200


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/%2e%2e/server.py",
                                  "/static/..%2fserver.py", "/static/%2e%2e%2fauth.py",
                                  "/static//etc/passwd", "/static/"])
def test_static_files_stay_in_their_folder(car, path):
    status, _, body = raw(car.port, "GET", path)
    assert status in (403, 404), (path, status)
    assert b"import" not in body and b"root:" not in body


def test_cookies_are_strict_and_errors_carry_the_security_headers(car):
    r = Client(car.port).post("/api/arm")
    assert r.status == 401
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["Cache-Control"] == "no-store"

    async def ws_without_origin_check():
        c = car.client()
        async with aiohttp.ClientSession(cookies=c.cookies) as s:
            try:
                async with s.ws_connect(f"http://127.0.0.1:{car.port}/api/ws",
                                        headers={"Origin": "http://evil.example"}):
                    return "connected"
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(ws_without_origin_check()) == 403


def test_idle_connections_beyond_the_cap_are_refused_and_the_car_drives_on(car):
    """A client that opens connections and sends nothing (slowloris, a port scan): beyond
    MAX_CONNECTIONS each new one gets a JSON 503 and is closed, the process keeps its file
    descriptors, the drive loop keeps deciding, and once they close the cockpit serves again."""
    import socket

    from car_runtime.web.server import MAX_CONNECTIONS

    fds_before = len(os.listdir("/proc/self/fd"))
    idle = [socket.create_connection(("127.0.0.1", car.port), timeout=10)
            for _ in range(MAX_CONNECTIONS)]
    try:
        wait_for(lambda: len(car.cockpit._runner.server.connections) == MAX_CONNECTIONS,
                 what="every idle connection accepted")
        frames = car.loop.stats.frames
        status, headers, body = raw(car.port, "GET", "/api/session")
        assert status == 503 and headers["Connection"] == "close"
        assert "too many connections" in json.loads(body)["error"]
        assert car.cockpit.refused_connections >= 1
        # the server holds one descriptor per accepted connection, no more
        assert len(os.listdir("/proc/self/fd")) - fds_before < 2 * MAX_CONNECTIONS + 16
        wait_for(lambda: car.loop.stats.frames > frames + 5, what="the loop still deciding")
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: not car.cockpit._runner.server.connections, what="the idle ones gone")
    c = car.client()
    assert c.get("/api/status").status == 200
    assert c.get("/api/status").json["web"]["refused_connections"] >= 1
