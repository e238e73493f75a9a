"""The race-day cockpit server: aiohttp in its own thread with its own event loop.

It talks to the car only through :class:`~car_runtime.controls.DriveControls` and one step
hook (:class:`~car_runtime.web.live.LiveFeed`). Blocking control calls (arm and wait, model
loads, calibration hand-over, archive checks) run in executor threads, never on the event
loop, and the event loop never takes a lock the drive loop needs.

Rules enforced here (see docs/web.md for the API table):

- every ``/api/`` endpoint but login/session needs a session (401); every state change needs
  the session's CSRF token in ``X-CSRF-Token`` (403) and a same-origin ``Origin`` if one is
  sent (403); a GET on a state-changing endpoint is 405;
- one controlling client (session + page id): driving, max speed, models and calibration are
  for it alone (409 for others); any logged-in client may STOP; taking control stops the car;
- the deadman: the controller's WebSocket heartbeats (or ``POST /api/heartbeat``) feed
  ``loop.heartbeat()``; when the controller's socket closes the car stops at once;
- bounded everything: sessions, sockets, viewers, message sizes and rates, upload size,
  downloads of recorded runs (:mod:`car_runtime.web.runs`: streamed, two at a time);
- no error carries a traceback or, when unexpected, any detail (that goes to the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError

from car_runtime.actuation.calibration import Calibration, ChannelCalibration, load_calibration
from car_runtime.config import parse_web_address
from car_runtime.controls import block_async_signals
from car_runtime.errors import BusyError, CalibrationError, CarRuntimeError, ConfigError, ModelError
from car_runtime.timing import now_s
from car_runtime.web.auth import (
    COOKIE_NAME, SESSION_IDLE_S, LoginLimiter, PasswordFile, Session, Sessions, csrf_ok)
from car_runtime.web.live import LiveFeed, encode_jpeg
from car_runtime.web.models import MAX_UPLOAD_BYTES, ModelStore, Upload, WebError
from car_runtime.web.runs import MAX_DOWNLOADS, OFF_MESSAGE, RunStore, run_json
from car_runtime.web.telemetry import SystemFacts

if TYPE_CHECKING:
    from car_runtime.config import RunConfig
    from car_runtime.controls import DriveControls

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
TELEMETRY_PERIOD_S = 0.2
SYSTEM_PERIOD_S = 1.0
MAX_SOCKETS = 16
#: Open TCP connections at once (pages, live views, scripts, idle keep-alives); more are
#: answered 503 and closed at once, so no client can use up the process's file descriptors
#: (the recorder, model loads and the camera need them).
MAX_CONNECTIONS = 64
MAX_VIEWERS = 4
MAX_WS_MESSAGE_BYTES = 4096
MAX_WS_MESSAGES_PER_S = 100
MAX_HEARTBEATS_PER_S = 50
MAX_JSON_BYTES = 16 * 1024
CALIBRATION_HEARTBEAT_S = 0.5  # calibration pulses are held only while heartbeats are this fresh
ARM_WAIT_S = 1.0
MODEL_VIEW_FPS = 5.0
CSP = ("default-src 'self'; img-src 'self' blob: data:; connect-src 'self' ws: wss:; "
       "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'")


# -- endpoint policy ----------------------------------------------------------------------------

def endpoint(*, auth: bool = True, control: bool = False) -> Callable:
    """Mark a handler: ``auth`` needs a session (and CSRF for state changes); ``control`` needs
    the caller to be the controlling client."""

    def mark(fn: Callable) -> Callable:
        fn.auth = auth  # type: ignore[attr-defined]
        fn.control = control  # type: ignore[attr-defined]
        return fn

    return mark


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status, headers=headers)


class _Refused(asyncio.Protocol):
    """A connection over :data:`MAX_CONNECTIONS`: one 503 answer, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = b'{"error": "too many connections to the car; close other pages and retry"}'
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"  # type: ignore[attr-defined]
                        b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
                        + b"\r\n\r\n" + body)
        transport.close()


_STATUS_OF = ((WebError, None), (BusyError, 409), (CalibrationError, 400), (ModelError, 400),
              (ConfigError, 400), (CarRuntimeError, 400))


def _status_of(exc: CarRuntimeError) -> int:
    for cls, status in _STATUS_OF:
        if isinstance(exc, cls):
            return status if status is not None else exc.status  # type: ignore[attr-defined]
    return 400


@dataclass
class Client:
    """One page (or script) of one session: ``(session token, client id)``."""

    token: str
    client_id: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.token, self.client_id)


_RequestKey = getattr(web, "RequestKey", None)  # aiohttp >= 3.11; plain strings before
SESSION: Any = _RequestKey("session", Session) if _RequestKey else "session"
CLIENT: Any = _RequestKey("client", Client) if _RequestKey else "client"


@dataclass
class Socket:
    ws: web.WebSocketResponse
    client: Client
    sender: asyncio.Task | None = None
    stamps: list[float] = field(default_factory=list)


class Cockpit:
    """The web cockpit over one :class:`DriveControls` (see the module docstring)."""

    def __init__(
        self,
        controls: "DriveControls",
        cfg: "RunConfig",
        *,
        address: tuple[str, int] | None = None,
        extra_model_dirs: dict[str, str | Path] | None = None,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        system: SystemFacts | None = None,
        login_limiter: LoginLimiter | None = None,
    ) -> None:
        if address is None:
            if cfg.web is None:
                raise ConfigError("the web cockpit needs an address: --web [HOST:]PORT")
            address = parse_web_address(cfg.web)
        self.controls = controls
        self.loop = controls.loop
        self.cfg = cfg
        self.address = address
        self.password = PasswordFile(cfg.web_password_file)
        self.sessions = Sessions()
        self.limiter = login_limiter or LoginLimiter()
        self.store = ModelStore(cfg.models_dir, extra_dirs=extra_model_dirs,
                                max_upload_bytes=max_upload_bytes)
        self.system = system or SystemFacts(disk_paths={"models": cfg.models_dir, "root": "/"})
        self.feed = LiveFeed(self.loop, model_fps=min(MODEL_VIEW_FPS, cfg.web_video_fps or MODEL_VIEW_FPS),
                             video_fps=cfg.web_video_fps)
        self.deadman_s = cfg.web_deadman_ms / 1e3 if cfg.web_deadman_ms > 0 else None
        self.video_period_s = 1.0 / cfg.web_video_fps if cfg.web_video_fps > 0 else None
        self.controller: Client | None = None
        self.controller_since_s = 0.0
        self.sockets: list[Socket] = []
        self.viewers = 0
        self.refused_connections = 0
        self.last_load: dict[str, Any] | None = None
        self.warnings: list[str] = []
        self.port = address[1]
        self._heartbeat_stamps: dict[str, list[float]] = {}
        self._aio: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tick: asyncio.Event | None = None
        self._telemetry_json = "{}"
        self._system_facts: dict[str, Any] = {}
        self._slow_status = "{}"
        self._slow_rest = '{"frame_age_ms":null,"system":{}}'
        self._slow_at_s = -1e9
        self._background: list[asyncio.Task] = []
        self._streams: set[asyncio.Task] = set()
        self._watchers = 0
        self._frame_tick: asyncio.Event | None = None
        self._calibration_wanted: asyncio.Event | None = None
        self._blocking = ThreadPoolExecutor(4, "web-blocking", initializer=block_async_signals)
        self._archive_worker = ThreadPoolExecutor(1, "web-archives", initializer=functools.partial(
            _background_thread, "car-web-files"))
        self.runs = RunStore(cfg.record_dir)
        self._runs_worker = ThreadPoolExecutor(MAX_DOWNLOADS + 1, "web-runs", initializer=functools.partial(
            _background_thread, "car-web-runs"))
        self._login_worker = ThreadPoolExecutor(1, "web-login", initializer=functools.partial(
            _background_thread, "car-web-login"))

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Check the password file, take over the deadman, bind, serve from a new thread.

        ConfigError (one line naming the fix) if the password file is missing or the address
        cannot be bound; the car has not been touched then."""
        self.password.current()
        if self.password.insecure_mode():
            log.warning("web password file %s is readable by others; chmod 600 it", self.password.path)
        self.store.clean_stale_uploads()
        started: "asyncio.Future | Any" = _ThreadResult()
        self._thread = threading.Thread(target=self._thread_main, args=(started,),
                                        name="web-cockpit", daemon=True)
        self._thread.start()
        started.wait()  # raises the bind error here
        if self.deadman_s is not None:
            self.loop.set_deadman(self.deadman_s)
            if self.controls.want_armed:
                self.controls.disarm()
                self.warnings.append("arm: true is ignored with the deadman on: press START")
                log.warning("arm: true ignored: with the cockpit's deadman on, the car arms only "
                            "from START on the controlling page")
        else:
            self.warnings.append("deadman OFF (web_deadman_ms: 0): the car keeps driving if this "
                                 "page or the Wi-Fi drops")
            log.warning("web_deadman_ms is 0: the deadman is OFF; the car keeps driving when the "
                        "controlling page or the Wi-Fi drops")
        self.loop.add_step_hook(self.feed)
        host, port = self.address[0], self.port
        shown = "localhost" if host in ("127.0.0.1", "::1") else (host if host != "0.0.0.0" else "<car-ip>")
        log.info("web cockpit on http://%s:%d/ (deadman %s)", shown, port,
                 f"{self.deadman_s * 1e3:.0f} ms" if self.deadman_s else "OFF")

    def close(self) -> None:
        """End calibration (neutral), stop serving, remove the hook. Idempotent."""
        self.loop.remove_step_hook(self.feed)
        if self.loop.calibrating:
            self.controls.end_calibration(wait_s=0.5)
        aio = self._aio
        if aio is not None and aio.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), aio)
            with contextlib.suppress(Exception):
                fut.result(5.0)
            aio.call_soon_threadsafe(aio.stop)
        if self._thread is not None:
            self._thread.join(5.0)
        self._blocking.shutdown(wait=False, cancel_futures=True)
        self._archive_worker.shutdown(wait=False, cancel_futures=True)
        self._runs_worker.shutdown(wait=False, cancel_futures=True)
        self._login_worker.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "Cockpit":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _thread_main(self, started: "_ThreadResult") -> None:
        _name_thread("car-web")
        block_async_signals()
        aio = asyncio.new_event_loop()
        asyncio.set_event_loop(aio)
        try:
            try:
                aio.run_until_complete(self._startup())
            except OSError as exc:
                host, port = self.address
                started.fail(ConfigError(
                    f"cannot serve the web cockpit on {host}:{port}: "
                    f"{os.strerror(exc.errno) if exc.errno else exc}; pick "
                    "another port (--web PORT, e.g. 8081) or stop the program using it"))
                return
            except BaseException as exc:  # pragma: no cover - reported to start()
                started.fail(exc)
                return
            self._aio = aio
            started.ok()
            aio.run_forever()
        except Exception:  # the car keeps its deadman: no heartbeat -> neutral
            log.exception("web cockpit failed; the car stays under its deadman")
        finally:
            self._aio = None
            with contextlib.suppress(Exception):
                aio.run_until_complete(aio.shutdown_asyncgens())
            aio.close()

    async def _startup(self) -> None:
        self._tick = asyncio.Event()
        self._frame_tick = asyncio.Event()
        self._calibration_wanted = asyncio.Event()
        app = self.make_app()
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        # aiohttp's low-level server is the protocol factory (as TCPSite uses it), behind a gate
        # that refuses connections beyond MAX_CONNECTIONS
        http = self._runner.server
        assert http is not None

        def protocol() -> asyncio.BaseProtocol:
            if len(http.connections) >= MAX_CONNECTIONS:
                self.refused_connections += 1
                return _Refused()
            return http()

        self._listener = await asyncio.get_running_loop().create_server(
            protocol, self.address[0] or None, self.address[1], backlog=32, reuse_address=True)
        if self._listener.sockets:
            self.port = self._listener.sockets[0].getsockname()[1]
        self._background.append(asyncio.get_running_loop().create_task(self._telemetry_task()))
        self._background.append(asyncio.get_running_loop().create_task(self._calibration_task()))

    async def _shutdown(self) -> None:
        for task in self._background:
            task.cancel()
        for task in list(self._streams):
            task.cancel()
        for s in list(self.sockets):
            with contextlib.suppress(Exception):
                await s.ws.close(code=1001, message=b"car-runtime is stopping")
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the app ----------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_JSON_BYTES)
        app.on_response_prepare.append(_security_headers)
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/favicon.ico", self.no_icon)
        r.add_static("/static/", STATIC_DIR, follow_symlinks=False)
        r.add_post("/api/login", self.login)
        r.add_post("/api/logout", self.logout)
        r.add_get("/api/session", self.session_info)
        r.add_get("/api/status", self.status)
        r.add_post("/api/control", self.take_control)
        r.add_post("/api/arm", self.arm)
        r.add_post("/api/stop", self.stop)
        r.add_post("/api/max_speed", self.max_speed)
        r.add_post("/api/heartbeat", self.heartbeat)
        r.add_get("/api/models", self.models)
        r.add_post("/api/models", self.upload)
        r.add_post("/api/models/load", self.load)
        r.add_post("/api/models/delete", self.delete)
        r.add_get("/api/calibration", self.calibration)
        r.add_post("/api/calibration", self.save_calibration)
        r.add_post("/api/calibration/begin", self.calibration_begin)
        r.add_post("/api/calibration/pulse", self.calibration_pulse)
        r.add_post("/api/calibration/end", self.calibration_end)
        r.add_get("/api/live.mjpg", self.live)
        r.add_get("/api/runs", self.runs_list)
        r.add_get("/api/runs/download", self.run_download)
        r.add_post("/api/runs/delete", self.run_delete)
        r.add_get("/api/ws", self.websocket)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        try:
            if request.path.startswith("/api/"):
                match = request.match_info
                if match.http_exception is not None:
                    raise match.http_exception
                refusal = self._refuse(request, handler)
                if refusal is not None:
                    return refusal
            return await handler(request)
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods))
            return _error(405, f"{request.method} is not allowed on {request.path}; use {allowed}",
                          headers={"Allow": allowed})
        except web.HTTPNotFound:
            if request.path.startswith("/api/"):
                return _error(404, f"no endpoint {request.path}; see docs/web.md for the API")
            raise
        except CarRuntimeError as exc:
            return _error(_status_of(exc), str(exc))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except web.HTTPException as exc:  # aiohttp's own refusals (body too large, not a WebSocket)
            if request.path.startswith("/api/") and exc.status >= 400:
                text = (exc.text or "").strip() if exc.text != f"{exc.status}: {exc.reason}" else ""
                return _error(exc.status, (text.splitlines() or [exc.reason])[0])
            raise
        except Exception:  # details (paths, values) go to the car's log, not to the client
            log.exception("web request %s %s failed", request.method, request.path)
            return _error(500, "internal error (details in the car's log); the car is unaffected")

    def _refuse(self, request: web.Request, handler: Callable) -> web.Response | None:
        if not getattr(handler, "auth", True):
            if request.method == "POST" and not _same_origin(request):
                return _error(403, "cross-site request refused (Origin does not match the car)")
            return None
        session = self._session(request)
        if session is None:
            return _error(401, "not logged in: POST /api/login with the cockpit password")
        request[SESSION] = session
        request[CLIENT] = Client(session.token, _client_id(request))
        if request.method not in ("GET", "HEAD"):
            if not _same_origin(request):
                return _error(403, "cross-site request refused (Origin does not match the car)")
            if not csrf_ok(session, request.headers.get("X-CSRF-Token")):
                return _error(403, "missing or wrong CSRF token: send the X-CSRF-Token header "
                                   "from GET /api/session")
        if getattr(handler, "control", False) and not self._is_controller(request[CLIENT]):
            return _error(409, "another client controls the car: take control first (the car "
                               "stops when control changes hands)" if self.controller else
                               "take control first: POST /api/control")
        return None

    def _session(self, request: web.Request) -> Session | None:
        try:
            record = self.password.current()
        except ConfigError:
            return None
        return self.sessions.get(request.cookies.get(COOKIE_NAME), record)

    def _controller_active(self) -> bool:
        """A controller that is still there: an open page, or heartbeats within 2 s (scripts).
        A new page takes control by itself only when there is none."""
        c = self.controller
        if c is None:
            return False
        return (any(s.client.key == c.key for s in self.sockets)
                or self.loop.heartbeat_age_s() < 2.0)

    def _is_controller(self, client: Client) -> bool:
        return self.controller is not None and self.controller.key == client.key

    async def _blocking_call(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._blocking, fn, *args)

    # -- pages and session --------------------------------------------------------------------------
    @endpoint(auth=False)
    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    @endpoint(auth=False)
    async def no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    @endpoint(auth=False)
    async def login(self, request: web.Request) -> web.Response:
        peer = request.remote or "?"
        wait_s = self.limiter.retry_after_s(peer)
        if wait_s > 0:
            return _error(429, f"too many login attempts; wait {math.ceil(wait_s)} s",
                          headers={"Retry-After": str(math.ceil(wait_s))})
        # Counted as a failure before any await: concurrent guesses cannot all slip past the
        # limit while the first ones are being checked. Forgiven if it was not a wrong password.
        self.limiter.failed(peer)
        ok = False
        guessed = False
        try:
            body = await _json(request)
            password = body.get("password")
            if not isinstance(password, str) or not password or len(password) > 1024:
                raise WebError(400, 'send {"password": "..."}')
            try:
                record = self.password.current()
            except ConfigError as exc:  # its path and state are for the car's log only
                log.error("web login refused: %s", exc)
                raise WebError(503, "the cockpit's password file is missing or unreadable; set "
                                    "it on the car: sudo car-runtime web-password") from None
            guessed = True
            # scrypt on its own low-priority thread: a login flood never delays STOP or arming
            ok = await asyncio.get_running_loop().run_in_executor(
                self._login_worker, record.verify, password)
        finally:
            if ok or not guessed:
                self.limiter.forgive(peer)
        if not ok:
            log.warning("web login failed from %s", peer)
            return _error(401, "wrong password")
        session = self.sessions.open(record, peer)
        log.info("web login from %s", peer)
        resp = web.json_response({"ok": True, "csrf": session.csrf})
        resp.set_cookie(COOKIE_NAME, session.token, httponly=True, samesite="Strict", path="/",
                        secure=request.secure, max_age=int(SESSION_IDLE_S))
        return resp

    @endpoint()
    async def logout(self, request: web.Request) -> web.Response:
        session: Session = request[SESSION]
        if self.controller is not None and self.controller.token == session.token:
            await self._release_control("logged out")
        self.sessions.close(session.token)
        resp = web.json_response({"ok": True})
        resp.del_cookie(COOKIE_NAME, path="/")
        return resp

    @endpoint(auth=False)
    async def session_info(self, request: web.Request) -> web.Response:
        session = self._session(request)
        info: dict[str, Any] = {"ok": True, "logged_in": session is not None}
        if session is not None:
            client = Client(session.token, _client_id(request))
            info.update(csrf=session.csrf, you_control=self._is_controller(client),
                        controlled=self._controller_active(), **self._static_facts())
        return web.json_response(info)

    def _static_facts(self) -> dict[str, Any]:
        return {"deadman_ms": None if self.deadman_s is None else round(self.deadman_s * 1e3),
                "video_fps": self.cfg.web_video_fps, "max_upload_bytes": self.store.max_upload_bytes,
                "warnings": self.warnings}

    # -- driving ----------------------------------------------------------------------------------
    @endpoint()
    async def status(self, request: web.Request) -> web.Response:
        return web.Response(text=self._telemetry_text(request[CLIENT]), content_type="application/json")

    @endpoint()
    async def take_control(self, request: web.Request) -> web.Response:
        client: Client = request[CLIENT]
        previous = self.controller
        if previous is not None and previous.key != client.key:
            # Hand over with the car stopped: nobody inherits a moving car.
            self.controls.stop()
            if self.loop.calibrating:
                await self._blocking_call(self.controls.end_calibration)
            log.warning("web control taken over by %s: car stopped", request.remote)
        self.controller = client
        self.controller_since_s = now_s()
        return web.json_response({"ok": True, "you_control": True,
                                  "message": "you control the car" + (
                                      " (the car was stopped for the hand-over)"
                                      if previous is not None and previous.key != client.key else "")})

    @endpoint(control=True)
    async def arm(self, request: web.Request) -> web.Response:
        ok, message = await self._blocking_call(functools.partial(self.controls.arm, wait_s=ARM_WAIT_S))
        if not ok:
            self.controls.disarm()  # a refused START must not arm later by surprise
            return _error(409, message)
        return web.json_response({"ok": True, "message": message, "state": self.loop.state.value})

    @endpoint()
    async def stop(self, request: web.Request) -> web.Response:
        # Any logged-in client may stop the car. Posted here at once (a non-blocking call), so a
        # STOP never queues behind busy worker threads; the wait for neutral runs in one.
        self.controls.stop()
        ok, message = await self._blocking_call(functools.partial(self.controls.stop, wait_s=ARM_WAIT_S))
        return web.json_response({"ok": ok, "message": message, "state": self.loop.state.value},
                                 status=200 if ok else 503)

    @endpoint(control=True)
    async def max_speed(self, request: web.Request) -> web.Response:
        body = await _json(request)
        if "pct" not in body:
            raise WebError(400, 'send {"pct": 0..100}')
        pct = self.controls.set_max_speed_pct(body["pct"])
        return web.json_response({"ok": True, "max_speed_pct": pct})

    @endpoint(control=True)
    async def heartbeat(self, request: web.Request) -> web.Response:
        if len(self._heartbeat_stamps) > 2 * MAX_SOCKETS:  # bounded: sessions come and go
            self._heartbeat_stamps.clear()
        if not _within_rate(self._heartbeat_stamps.setdefault(request[CLIENT].token, []),
                            MAX_HEARTBEATS_PER_S):
            return _error(429, f"more than {MAX_HEARTBEATS_PER_S} heartbeats per second; "
                               "send one every 100 ms")
        self.controls.heartbeat()
        return web.json_response({"ok": True, "deadman_ms": None if self.deadman_s is None
                                  else round(self.deadman_s * 1e3)})

    async def _release_control(self, why: str) -> None:
        """The controlling client is gone: stop the car now."""
        self.controls.stop()
        if self.loop.calibrating:
            await self._blocking_call(self.controls.end_calibration)
        log.warning("web: %s: car stopped", why)

    # -- models -----------------------------------------------------------------------------------
    @endpoint()
    async def models(self, request: web.Request) -> web.Response:
        entries = await asyncio.get_running_loop().run_in_executor(self._archive_worker, self.store.list)
        current = os.path.realpath(self.controls.model.path)
        loading = self.controls.loading
        return web.json_response({"ok": True, "models": [
            {**e.as_json(), "current": os.path.realpath(e.path) == current} for e in entries],
            "loading": None if loading is None else loading.name,
            "max_upload_bytes": self.store.max_upload_bytes}, dumps=_dumps)

    @endpoint(control=True)
    async def upload(self, request: web.Request) -> web.Response:
        cap = self.store.max_upload_bytes
        if request.content_length is not None and request.content_length > cap + 64 * 1024:
            raise WebError(413, f"the upload is {request.content_length / 2**20:.1f} MiB; the "
                                f"limit is {cap / 2**20:.0f} MiB")
        if not request.content_type.startswith("multipart/form-data"):
            raise WebError(400, "upload the model as multipart/form-data, field 'file'")
        try:
            reader = await request.multipart()
            part = await reader.next()
        except HttpProcessingError:
            raise WebError(400, "the upload's part headers are malformed (control characters in "
                                "the file name?); rename the file (letters, digits, . _ - + only) "
                                "and upload it again") from None
        except (ValueError, AssertionError) as exc:
            raise WebError(400, f"malformed multipart upload ({exc})") from None
        if part is None or getattr(part, "name", None) != "file":
            raise WebError(400, "upload the model as multipart/form-data, field 'file'")
        from car_runtime.web.models import check_upload_name

        name = check_upload_name(part.filename)  # type: ignore[union-attr]
        upload: Upload = await self._on_archive_worker(self.store.begin_upload, name)
        try:
            size = 0
            fd = os.open(upload.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                while True:
                    chunk = await part.read_chunk(256 * 1024)  # type: ignore[union-attr]
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > cap:
                        raise WebError(413, f"{name} is larger than the {cap / 2**20:.0f} MiB "
                                            "limit: not a DeepRacer model archive")
                    try:
                        os.write(fd, chunk)
                    except OSError as exc:
                        raise WebError(507, f"cannot store {name}: {exc.strerror}; free some "
                                            "space on the car") from None
                await self._on_archive_worker(os.fsync, fd)
            finally:
                os.close(fd)
            if size == 0:
                raise WebError(400, f"{name} is empty; upload the model.tar.gz again")
            entry = await self._on_archive_worker(self.store.finish_upload, upload)
        finally:
            await self._on_archive_worker(self.store.end_upload, upload)
        return web.json_response({"ok": True, "model": entry.as_json(),
                                  "message": f"{entry.name} uploaded"}, dumps=_dumps)

    async def _on_archive_worker(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._archive_worker, fn, *args)

    @endpoint(control=True)
    async def load(self, request: web.Request) -> web.Response:
        body = await _json(request)
        entry = await self._on_archive_worker(self.store.find, body.get("id"))
        if self.controls.loading is not None:
            raise BusyError(f"model {self.controls.loading.name} is loading; wait until it is ready")
        if entry.problem:
            raise WebError(400, f"{entry.name} cannot run here: {entry.problem}")
        task = asyncio.get_running_loop().create_task(self._load(entry.path, entry.name))
        await asyncio.sleep(0)
        if body.get("wait"):
            result = await task
            return web.json_response(result, status=200 if result["ok"] else 400)
        return web.json_response({"ok": True, "loading": entry.name,
                                  "message": f"loading {entry.name} (the car waits at neutral)"},
                                 status=202)

    async def _load(self, path: str, name: str) -> dict[str, Any]:
        t0 = now_s()
        try:
            info = await self._blocking_call(self.controls.load_model, path)
        except CarRuntimeError as exc:
            result = {"ok": False, "name": name, "error": str(exc),
                      "message": f"{name} refused; still driving with {self.controls.model.name}"}
        else:
            result = {"ok": True, "name": info.name, "message": f"{info.name} ready in {info.load_s:.1f} s"}
        result["elapsed_s"] = round(now_s() - t0, 2)
        result["at"] = time.time()
        self.last_load = result
        return result

    @endpoint(control=True)
    async def delete(self, request: web.Request) -> web.Response:
        body = await _json(request)
        entry = await self._on_archive_worker(self.store.find, body.get("id"))
        if os.path.realpath(entry.path) == os.path.realpath(self.controls.model.path):
            raise WebError(409, f"{entry.name} is the model the car runs; load another one first")
        loading = self.controls.loading
        if loading is not None and loading.name == entry.name:
            raise BusyError(f"{entry.name} is loading; delete it when the load is done")
        await self._on_archive_worker(self.store.delete, entry)
        return web.json_response({"ok": True, "message": f"{entry.name} deleted"})

    # -- recorded runs ---------------------------------------------------------------------------------
    async def _on_runs_worker(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._runs_worker, fn, *args)

    def _recorder(self) -> dict[str, Any] | None:
        """The flight recorder's facts when it records into the listed folder (else None)."""
        facts = self.controls.fact("recording")
        root = self.runs.root
        if not isinstance(facts, dict) or root is None:
            return None
        with contextlib.suppress(OSError, TypeError):
            if os.path.samefile(str(facts.get("dir")), root):
                return facts
        return None

    def _recording_now(self) -> str | None:
        facts = self._recorder()
        return facts.get("session") if facts and facts.get("state") == "recording" else None

    def _runs_listing(self) -> dict[str, Any]:
        if self.runs.root is None:
            return {"ok": True, "dir": None, "runs": [], "message": OFF_MESSAGE}
        recorder = self._recorder()
        now = self._recording_now()
        sessions = sorted(self.runs.list(), key=lambda s: s.name != now)  # (stable) recording first
        return {"ok": True, "dir": str(self.runs.root),
                "recorder": None if recorder is None else {
                    k: recorder.get(k) for k in ("state", "session", "frames", "dropped", "error",
                                                 "free_mb")},
                "total_bytes": sum(s.size_bytes for s in sessions),
                "runs": [run_json(s, recording=s.name == now, downloading=self.runs.downloading(s.name),
                                  live=recorder if s.name == now else None)
                         for s in sessions]}

    @endpoint()
    async def runs_list(self, request: web.Request) -> web.Response:
        return web.json_response(await self._on_runs_worker(self._runs_listing), dumps=_dumps)

    def _plan_download(self, name: Any) -> Any:
        info = self.runs.find(name)
        if info.name == self._recording_now():
            raise WebError(409, f"{info.name} is being recorded; it closes 15 s after the car "
                                "stops driving: download it then")
        plan = self.runs.plan(info)
        self.runs.begin_download(info)
        return plan

    @endpoint()
    async def run_download(self, request: web.Request) -> web.StreamResponse:
        plan = await self._on_runs_worker(self._plan_download, request.query.get("name"))
        chunks = self.runs.chunks(plan)
        resp = web.StreamResponse(headers={
            "Content-Type": "application/x-tar", "Content-Length": str(plan.size_bytes),
            "Content-Disposition": f'attachment; filename="{plan.filename}"'})
        sent = 0
        try:
            await resp.prepare(request)
            while True:  # one chunk at a time: read in a low-priority thread, written here
                chunk = await self._on_runs_worker(next, chunks, None)
                if chunk is None:
                    break
                await resp.write(chunk)
                sent += len(chunk)
            await resp.write_eof()
            log.info("recorded run %s downloaded by %s (%.1f MB)", plan.info.name, request.remote,
                     sent / 1e6)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away
        except OSError as exc:  # a file changed under us: the client sees a short download
            log.warning("download of %s cut off: %s", plan.info.name, exc)
            if request.transport is not None:
                request.transport.close()
        finally:
            with contextlib.suppress(ValueError):  # (still running in a worker: GC closes it)
                chunks.close()
            self.runs.end_download(plan.info)
        return resp

    def _delete_run(self, name: Any) -> str:
        info = self.runs.find(name)
        if info.name == self._recording_now():
            raise WebError(409, f"{info.name} is being recorded; it closes 15 s after the car "
                                "stops driving: delete it then")
        self.runs.delete(info)
        return info.name

    @endpoint(control=True)
    async def run_delete(self, request: web.Request) -> web.Response:
        body = await _json(request)
        name = await self._on_runs_worker(self._delete_run, body.get("name"))
        return web.json_response({"ok": True, "message": f"{name} deleted"})

    # -- calibration ----------------------------------------------------------------------------------
    @endpoint()
    async def calibration(self, request: web.Request) -> web.Response:
        return web.json_response(self._calibration_json())

    def _calibration_json(self) -> dict[str, Any]:
        from car_runtime.cli.calibrate import NUDGE_LIMITS_NS

        cal = self.loop.actuator.calibration
        held = self.controls.calibration_pulse_ns
        return {"ok": True, "file": self.cfg.calibration, "calibrating": self.loop.calibrating,
                "servo": cal.servo.as_stock(), "motor": cal.motor.as_stock(),
                "pulse": None if held is None else {"servo": held[0], "motor": held[1]},
                "limits_ns": list(NUDGE_LIMITS_NS)}

    @endpoint(control=True)
    async def calibration_begin(self, request: web.Request) -> web.Response:
        await self._blocking_call(self.controls.begin_calibration)
        assert self._calibration_wanted is not None
        self._calibration_wanted.set()  # the pulse-holding task starts at once
        return web.json_response(self._calibration_json())

    @endpoint(control=True)
    async def calibration_pulse(self, request: web.Request) -> web.Response:
        body = await _json(request)
        channel, ns = body.get("channel"), body.get("ns")
        if channel not in ("servo", "motor"):
            raise WebError(400, 'send {"channel": "servo"|"motor", "ns": PULSE}')
        w = self.controls.calibration_pulse(**{f"{channel}_ns": ns})
        return web.json_response({"ok": True, "servo": w.servo_ns, "motor": w.motor_ns})

    @endpoint(control=True)
    async def calibration_end(self, request: web.Request) -> web.Response:
        await self._blocking_call(self.controls.end_calibration)
        return web.json_response(self._calibration_json())

    @endpoint(control=True)
    async def save_calibration(self, request: web.Request) -> web.Response:
        body = await _json(request)
        channels = {}
        for name in ("servo", "motor"):
            ch = body.get(name)
            if not isinstance(ch, dict) or set(ch) - {"min", "mid", "max", "polarity"} or len(ch) != 4:
                raise WebError(400, f'send {{"{name}": {{"min", "mid", "max", "polarity"}}, ...}} '
                                    "for servo and motor (pulses in ns, polarity 1 or -1)")
            try:
                channels[name] = ChannelCalibration(ch["min"], ch["mid"], ch["max"], ch["polarity"])
            except CalibrationError as exc:
                raise CalibrationError(f"{name}: {exc}") from None
        cal = Calibration(servo=channels["servo"], motor=channels["motor"])
        written = await self._blocking_call(self.controls.save_calibration, cal)
        # read back what is on disk: the page shows the file, not our intention
        saved = await self._blocking_call(load_calibration, written)
        return web.json_response({**self._calibration_json(), "saved": str(written),
                                  "message": f"saved {written} (previous version kept) and applied",
                                  "servo": saved.servo.as_stock(), "motor": saved.motor.as_stock()})

    async def _calibration_task(self) -> None:
        """Hold the calibration pulse (faster than the actuator deadline) while the
        controller's heartbeats are fresh; when they stop, the watchdog writes neutral."""
        deadline_s = self.loop.actuator.deadline_s or 0.1
        period_s = min(0.04, deadline_s / 3)
        max_age_s = self.deadman_s or CALIBRATION_HEARTBEAT_S
        assert self._calibration_wanted is not None
        while True:
            if self.loop.calibrating:
                self.controls.hold_calibration(max_age_s)
                await asyncio.sleep(period_s)
            else:  # no wake-ups while nobody calibrates (begin sets the event)
                self._calibration_wanted.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._calibration_wanted.wait(), 5.0)
                await asyncio.sleep(0)

    # -- live view --------------------------------------------------------------------------------
    @endpoint()
    async def live(self, request: web.Request) -> web.StreamResponse:
        view = request.query.get("view", "camera")
        if view not in ("camera", "model"):
            raise WebError(400, "view must be camera or model")
        if self.video_period_s is None:
            raise WebError(404, "the live view is off (web_video_fps: 0)")
        if self.viewers >= MAX_VIEWERS:
            raise WebError(503, f"at most {MAX_VIEWERS} live views at a time; close one")
        boundary = "carframe"
        resp = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={boundary}",
            "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self.viewers += 1
        self._count_viewer(view, +1)
        me = asyncio.current_task()
        if me is not None:
            self._streams.add(me)
        try:
            await resp.prepare(request)
            # The step hook applies the rate cap (LiveFeed.shown, model_view) and wakes us only
            # for a frame to send; and the telemetry task every 0.2 s, so a gone client is noticed
            # even without frames.
            last_seq = 0
            while True:
                frame_tick = self._frame_tick
                assert frame_tick is not None
                await frame_tick.wait()
                if request.transport is None or request.transport.is_closing():
                    break
                item = self.feed.shown if view == "camera" else self.feed.model_view
                if item is None or item.seq == last_seq:
                    continue
                last_seq = item.seq
                if view == "camera":
                    image = item.image
                    jpeg = (image if isinstance(image, bytes) and image[:2] == b"\xff\xd8"
                            else await self._blocking_call(encode_jpeg, image))
                else:
                    jpeg = await self._blocking_call(encode_jpeg, item.pixels)
                await resp.write(_mjpeg_part(boundary, item, jpeg, camera=view == "camera"))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.viewers -= 1
            self._count_viewer(view, -1)
            self._streams.discard(me)  # type: ignore[arg-type]
        return resp

    def _count_viewer(self, view: str, delta: int) -> None:
        """Count live viewers; the step hook wakes us only while there are some."""
        if view == "model":
            self.feed.model_viewers += delta
        else:
            self.feed.camera_viewers += delta
        self._watchers += delta
        aio = asyncio.get_running_loop()
        self.feed.notify = (functools.partial(aio.call_soon_threadsafe, self._new_frame)
                            if self._watchers > 0 else None)

    def _new_frame(self) -> None:
        tick, self._frame_tick = self._frame_tick, asyncio.Event()
        if tick is not None:
            tick.set()

    # -- WebSocket: telemetry out, heartbeats in ------------------------------------------------------
    @endpoint()
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if not _same_origin(request):
            raise WebError(403, "cross-site WebSocket refused")
        if len(self.sockets) >= MAX_SOCKETS:
            raise WebError(503, f"at most {MAX_SOCKETS} pages at a time; close one")
        # No permessage-deflate: telemetry is a few kB a few times a second on a local link;
        # compressing it (and inflating every heartbeat) would cost the car's CPU for nothing.
        ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE_BYTES, heartbeat=None,
                                   autoping=True, compress=False)
        await ws.prepare(request)
        sock = Socket(ws, request[CLIENT])
        self.sockets.append(sock)
        sock.sender = asyncio.get_running_loop().create_task(self._send_telemetry(sock))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                if not _within_rate(sock.stamps, MAX_WS_MESSAGES_PER_S):
                    await ws.close(code=1008, message=b"message flood")
                    break
                if msg.data == "hb" or msg.data == '{"t":"hb"}':
                    if self._is_controller(sock.client):
                        self.controls.heartbeat()
        finally:
            self.sockets.remove(sock)
            sock.sender.cancel()
            if self._is_controller(sock.client) and not any(
                    s.client.key == sock.client.key for s in self.sockets):
                await self._release_control("the controlling page closed its connection")
        return ws

    async def _send_telemetry(self, sock: Socket) -> None:
        assert self._tick is not None
        last = ""
        while not sock.ws.closed:
            tick = self._tick
            await tick.wait()
            text = self._telemetry_json
            if text is last:
                continue
            last = text
            you = self._is_controller(sock.client)
            await sock.ws.send_str(text[:-1] + f',"you_control":{json.dumps(you)}}}')

    async def _telemetry_task(self) -> None:
        while True:
            await asyncio.sleep(TELEMETRY_PERIOD_S)
            if self._watchers:
                self._new_frame()  # live views notice a gone client even without frames
            if not self.sockets:
                continue
            try:
                self._telemetry_json = self._telemetry_text(None)
            except Exception:
                log.exception("telemetry failed")
                continue
            tick, self._tick = self._tick, asyncio.Event()
            assert tick is not None
            tick.set()

    def _telemetry_text(self, client: Client | None) -> str:
        """The telemetry message as JSON text (``you_control`` added for ``client``).

        The slow part -- the full status (stage percentiles over thousands of samples, facts),
        system facts, frame-age percentiles -- is built and serialized once a second (at every
        call for ``/api/status``); the fast-changing fields at every tick, spliced in as text."""
        t = now_s()
        if client is not None or t - self._slow_at_s >= SYSTEM_PERIOD_S:
            if client is None:  # CPU % is over the time between samples: the ticker's alone
                self._system_facts = self.system.sample()
            full = self.controls.status()
            for key in _FAST_STATUS_KEYS:
                full.pop(key, None)
            self._slow_status = _dumps(full)
            self._slow_rest = _dumps({"frame_age_ms": self.feed.frame_age_ms(),
                                      "system": self._system_facts})
            self._slow_at_s = t
        loop, controls = self.loop, self.controls
        loading = controls.loading
        stats = loop.stats
        fast = {"state": loop.state.value, "fps": round(loop.rate.fps(), 2), "frames": stats.frames,
                "driven": stats.driven, "stale": stats.stale, "skipped": stats.skipped,
                "calibrating": loop.calibrating, "deadman_trips": loop.deadman_trips,
                "model": controls.model.name, "max_speed_pct": loop.max_speed_pct,
                "armed_requested": controls.want_armed,
                "loading": None if loading is None else {
                    "name": loading.name, "phase": loading.phase,
                    "elapsed_s": round(t - loading.started_s, 2)}}
        frame = self.feed.frame
        hb_age = loop.heartbeat_age_s()
        live = None if frame is None else {
            "seq": frame.seq, "action": frame.action, "steering_deg": frame.steering_deg,
            "speed_mps": frame.speed_mps, "angle": frame.angle, "throttle": frame.throttle,
            "age_ms": round((t - frame.t_capture_s) * 1e3, 1)}
        web_facts = {"controlled": self._controller_active(), "pages": len(self.sockets),
                     "viewers": self.viewers, "refused_connections": self.refused_connections,
                     "heartbeat_age_ms": round(hb_age * 1e3) if math.isfinite(hb_age) else None,
                     "last_load": self.last_load, **self._static_facts()}
        parts = ['{"t":"telemetry","status":', _join_objects(_dumps(fast), self._slow_status),
                 ',"live":', _dumps(live), ",", self._slow_rest[1:-1], ',"web":', _dumps(web_facts)]
        if client is not None:
            parts += [',"you_control":', json.dumps(self._is_controller(client))]
        parts.append("}")
        return "".join(parts)


#: Status fields the telemetry refreshes at every tick (the rest once a second).
_FAST_STATUS_KEYS = ("state", "fps", "frames", "driven", "stale", "skipped", "calibrating",
                     "deadman_trips", "model", "max_speed_pct", "armed_requested", "loading")


def _join_objects(a: str, b: str) -> str:
    """Two serialized JSON objects with distinct keys as one."""
    if a == "{}":
        return b
    if b == "{}":
        return a
    return a[:-1] + "," + b[1:]


# -- helpers ----------------------------------------------------------------------------------------

class _ThreadResult:
    """start() waits here for the server thread to bind (or fail)."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._error: BaseException | None = None

    def ok(self) -> None:
        self._done.set()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._done.set()

    def wait(self) -> None:
        if not self._done.wait(30.0):
            raise ConfigError("the web cockpit did not start within 30 s")
        if self._error is not None:
            raise self._error


def _name_thread(name: str) -> None:
    """Set the OS thread name (``top -H``, ``/proc/PID/task/*/comm``); Linux only, best effort."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def _background_thread(name: str) -> None:
    """Archive checks, listings, downloads: lower CPU priority than the drive loop, no signals."""
    block_async_signals()
    _name_thread(name)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _within_rate(stamps: list[float], per_s: int) -> bool:
    """Sliding one-second window; bounded list. False if the rate is exceeded."""
    t = now_s()
    while stamps and t - stamps[0] > 1.0:
        stamps.pop(0)
    if len(stamps) >= per_s:
        return False
    stamps.append(t)
    return True


def _mjpeg_part(boundary: str, item: Any, jpeg: bytes, *, camera: bool) -> bytes:
    """One multipart/x-mixed-replace part: headers (frame, age, overlay values) and the JPEG."""
    t = now_s()
    age_s = t - item.t_capture_s
    head = (f"--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
            f"X-Frame-Seq: {item.seq}\r\nX-Frame-Age-Ms: {age_s * 1e3:.1f}\r\n"
            f"X-Capture-Epoch-Ms: {(time.time() - age_s) * 1e3:.1f}\r\n")
    if camera:
        head += (f"X-Action: {'' if item.action is None else item.action}\r\n"
                 f"X-Steering-Deg: {item.steering_deg:.2f}\r\nX-Speed-Mps: {item.speed_mps:.3f}\r\n"
                 f"X-Angle: {item.angle:.3f}\r\nX-Throttle: {item.throttle:.3f}\r\n"
                 f"X-State: {item.state}\r\n")
    return b"".join((head.encode("ascii"), b"\r\n", jpeg, b"\r\n"))


def _client_id(request: web.Request) -> str:
    raw = request.headers.get("X-Client-Id") or request.query.get("client") or ""
    return raw[:64] if raw.isascii() and raw.replace("-", "").isalnum() else ""


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser cross-site request (curl, scripts); CSRF still applies
    host = request.headers.get("Host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def _json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; WebError 400/413/415 naming the problem."""
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise WebError(413, f"request body larger than {MAX_JSON_BYTES} bytes")
    raw = await request.read()
    if not raw:
        return {}
    if request.content_type != "application/json":
        raise WebError(415, "send JSON with Content-Type: application/json")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise WebError(400, f"malformed JSON ({exc})") from None
    except RecursionError:
        raise WebError(400, "malformed JSON (nested too deeply)") from None
    if not isinstance(body, dict):
        raise WebError(400, "send a JSON object")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _dumps(obj: Any) -> str:
    """Strict JSON (non-finite numbers become null)."""
    return json.dumps(_sanitize(obj), separators=(",", ":"), default=str, allow_nan=False)


def _sanitize(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 3) if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _sanitize(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_sanitize(x) for x in v]
    return v


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/api/"):
        h.setdefault("Cache-Control", "no-store")


@contextlib.contextmanager
def serve(controls: "DriveControls", cfg: "RunConfig", **kwargs: Any) -> Iterator[Cockpit]:
    """Serve the cockpit while the ``with`` block runs (see :class:`Cockpit` for ``kwargs``).

    Raises ConfigError before serving if the password file is missing or the address is taken.
    """
    cockpit = Cockpit(controls, cfg, **kwargs)
    cockpit.start()
    try:
        yield cockpit
    finally:
        cockpit.close()
