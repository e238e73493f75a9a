"""The cockpit's HTTP rules with a real server, a real HTTP client and a real drive loop:
sessions (401), CSRF and origin (403), no state-changing GET (405), one controller (409),
login rate limit (429), malformed and out-of-range input (400/415): each changes nothing."""

from __future__ import annotations

import threading
import time

import pytest

from car_runtime.control.safety import State
from car_runtime.web.auth import LoginLimiter, write_password_file
from helpers import wait_until as wait_for
from webclient import PASSWORD, Client

PUBLIC = {"/api/login", "/api/session"}


def api_routes(car) -> list[tuple[str, str]]:
    """(method, path) of every /api/ endpoint, read from the server's own router."""
    out = []
    for route in car.cockpit.make_app().router.routes():
        info = route.get_info()
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/api/") and route.method in ("GET", "POST"):
            out.append((route.method, path))
    assert len(out) >= 18
    return sorted(set(out))


def snapshot(car) -> tuple:
    s = car.controls.status()
    return (s["state"], s["max_speed_pct"], s["model"], car.loop.calibrating,
            sorted(p.name for p in car.models_dir.iterdir()))


def test_every_endpoint_but_login_needs_a_session(car):
    anon = Client(car.port)
    before = snapshot(car)
    checked = 0
    for method, path in api_routes(car):
        if path in PUBLIC:
            continue
        r = anon.request(method, path, json_body={} if method == "POST" else None)
        assert r.status == 401, (method, path, r.status, r.body)
        assert "logged in" in r.error
        checked += 1
    assert checked >= 16
    # a forged cookie is no session either
    anon.cookies["car_session"] = "forged"
    assert anon.post("/api/arm").status == 401
    assert snapshot(car) == before


def test_state_changes_need_the_csrf_token(car):
    c = car.client(control=True)
    before = snapshot(car)
    for method, path in api_routes(car):
        if method != "POST" or path == "/api/login":
            continue
        r = c.request("POST", path, json_body={"pct": 10}, csrf=False)
        assert r.status == 403 and "CSRF" in r.error, (path, r.status, r.body)
        r = c.request("POST", path, json_body={"pct": 10}, csrf=False,
                      headers={"X-CSRF-Token": "wrong"})
        assert r.status == 403, path
    assert snapshot(car) == before


def test_get_on_a_state_changing_endpoint_is_405(car):
    c = car.client(control=True)
    posts = {p for m, p in api_routes(car) if m == "POST"}
    gets = {p for m, p in api_routes(car) if m == "GET"}
    before = snapshot(car)
    for path in sorted(posts - gets):
        r = c.get(path)
        assert r.status == 405, (path, r.status)
        assert "POST" in r.headers["Allow"] and "not allowed" in r.error
    assert snapshot(car) == before


def test_cross_site_requests_are_refused(car):
    c = car.client(control=True)
    r = c.post("/api/max_speed", {"pct": 10}, headers={"Origin": "http://evil.example"})
    assert r.status == 403 and "cross-site" in r.error
    r = Client(car.port).post("/api/login", {"password": PASSWORD},
                              headers={"Origin": "http://evil.example"})
    assert r.status == 403
    assert car.controls.status()["max_speed_pct"] == 50.0
    same = c.post("/api/max_speed", {"pct": 10}, headers={"Origin": f"http://127.0.0.1:{car.port}"})
    assert same.status == 200


def test_login_sets_a_strict_httponly_cookie_and_security_headers(car):
    c = Client(car.port)
    r = c.login()
    assert r.status == 200
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    page = c.get("/")
    assert page.status == 200 and b"STOP" in page.body
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert c.get("/api/status").headers["Cache-Control"] == "no-store"
    assert c.get("/api/session").json["csrf"] == c.csrf


def test_wrong_password_and_bad_login_bodies(car):
    c = Client(car.port)
    assert c.login("not the password").status == 401
    assert c.post("/api/login", {"pass": "x"}).status == 400
    r = c.request("POST", "/api/login", body=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and "malformed JSON" in r.error
    assert c.get("/api/status").status == 401


def test_login_rate_limit_refuses_even_the_right_password(car_factory):
    car = car_factory(limiter=LoginLimiter(per_peer=3, total=30, window_s=60))
    c = Client(car.port)
    for _ in range(3):
        assert c.login("guess-guess").status == 401
    r = c.login()
    assert r.status == 429 and "too many login attempts" in r.error
    assert int(r.headers["Retry-After"]) > 0
    assert c.get("/api/status").status == 401


def test_a_password_change_ends_the_sessions(car, password_file):
    c = car.client()
    assert c.get("/api/status").status == 200
    write_password_file(password_file, "another long password")
    assert c.get("/api/status").status == 401
    assert c.login().status == 401
    assert c.login("another long password").status == 200


def test_one_controller_others_watch_and_may_stop(car):
    a = car.client(control=True)
    b = car.client()
    assert b.get("/api/session").json["you_control"] is False
    for path, body in (("/api/arm", None), ("/api/max_speed", {"pct": 5}),
                       ("/api/heartbeat", None), ("/api/calibration/begin", None),
                       ("/api/models/load", {"id": "models/x"})):
        r = b.post(path, body)
        assert r.status == 409 and "another client controls" in r.error, (path, r.body)
    assert car.controls.status()["max_speed_pct"] == 50.0
    # the controller drives (heartbeats first: the deadman)
    beat = threading.Event()

    def beats():
        while not beat.is_set():
            a.post("/api/heartbeat")
            time.sleep(0.1)

    t = threading.Thread(target=beats)
    t.start()
    try:
        time.sleep(0.15)
        assert a.post("/api/arm").status == 200
        wait_for(lambda: car.loop.stats.driven > 0, what="driving")
        # a watcher may STOP
        r = b.post("/api/stop")
        assert r.status == 200 and car.loop.state is State.DISARMED
        assert a.post("/api/arm").status == 200
        # taking control hands over with the car stopped
        r = b.take_control()
        assert "stopped" in r.json["message"]
        assert car.controls.wait_state(State.DISARMED, 2.0)
        assert a.post("/api/arm").status == 409
        assert b.get("/api/session").json["you_control"] is True
    finally:
        beat.set()
        t.join()


def test_arm_without_heartbeat_is_refused_with_the_reason(car):
    c = car.client(control=True)
    r = c.post("/api/arm")
    assert r.status == 409 and "heartbeat" in r.error
    time.sleep(0.2)
    assert car.loop.state is State.DISARMED and car.loop.stats.driven == 0


@pytest.mark.parametrize("body,content_type,status,words", [
    (b"{not json", "application/json", 400, "malformed JSON"),
    (b"[1, 2]", "application/json", 400, "JSON object"),
    (b'{"pct": NaN}', "application/json", 400, "malformed JSON"),
    (b'{"pct": 101}', "application/json", 400, "0 to 100"),
    (b'{"pct": -1}', "application/json", 400, "0 to 100"),
    (b'{"pct": "50"}', "application/json", 400, "0 to 100"),
    (b'{"pct": true}', "application/json", 400, "0 to 100"),
    (b'{}', "application/json", 400, "pct"),
    (b'pct=50', "application/x-www-form-urlencoded", 415, "application/json"),
    (b'{"pct": 1}' + b" " * 20000, "application/json", 413, "larger than"),
])
def test_bad_max_speed_requests_change_nothing(car, body, content_type, status, words):
    c = car.client(control=True)
    r = c.request("POST", "/api/max_speed", body=body, headers={"Content-Type": content_type})
    assert r.status == status and words in r.error, r.body
    assert car.controls.status()["max_speed_pct"] == 50.0
    assert c.post("/api/max_speed", {"pct": 12.5}).json["max_speed_pct"] == 12.5


def test_unknown_endpoint_is_a_json_404(car):
    c = car.client()
    r = c.get("/api/nothing-here")
    assert r.status == 404 and "no endpoint" in r.error


def test_heartbeat_flood_is_limited_and_the_loop_keeps_driving(car):
    c = car.client(control=True)
    frames = car.loop.stats.frames
    codes = [c.post("/api/heartbeat").status for _ in range(120)]
    assert 429 in codes and codes.count(200) >= 40
    wait_for(lambda: car.loop.stats.frames > frames + 5, what="frames during the flood")
