"""A small real HTTP client for the cockpit tests (http.client: raw control over every header),
plus helpers to build model archives, hostile ones included."""

from __future__ import annotations

import http.client
import io
import json
import os
import secrets
import tarfile
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

PASSWORD = "correct horse battery"


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return self.json.get("error", "")


class Client:
    """One browser-like client: its own cookies, CSRF token and page id."""

    def __init__(self, port: int, *, client_id: str | None = None) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.csrf: str | None = None
        self.client_id = client_id or secrets.token_hex(6)

    def request(self, method: str, path: str, *, json_body: Any = None, body: bytes | None = None,
                headers: dict[str, str] | None = None, csrf: bool = True,
                timeout_s: float = 30.0) -> Response:
        h = {"X-Client-Id": self.client_id}
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if csrf and self.csrf:
            h["X-CSRF-Token"] = self.csrf
        if json_body is not None:
            body = json.dumps(json_body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        for value in resp.headers.get_all("Set-Cookie") or []:
            c = SimpleCookie()
            c.load(value)
            for k, morsel in c.items():
                if morsel.value:
                    self.cookies[k] = morsel.value
                else:
                    self.cookies.pop(k, None)
        return Response(resp.status, resp.headers, data)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, json_body=body, **kw)

    def login(self, password: str = PASSWORD) -> Response:
        r = self.post("/api/login", {"password": password})
        if r.status == 200:
            self.csrf = r.json["csrf"]
        return r

    def take_control(self) -> Response:
        r = self.post("/api/control")
        assert r.status == 200, r.body
        return r

    def upload(self, filename: str, data: bytes, *, field: str = "file") -> Response:
        boundary = "----testboundary" + secrets.token_hex(8)
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: application/gzip\r\n\r\n").encode(
                    "utf-8", "surrogateescape") + data + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", "/api/models", body=body,
                            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def tar_gz(members: list[tuple[str, bytes | None, str]]) -> bytes:
    """A .tar.gz from ``(name, data, kind)``; kind: file | symlink | hardlink | dir."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, (data or b"/etc/passwd").decode()
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, (data or b"/etc/passwd").decode()
                tar.addfile(info)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
    return buf.getvalue()


def model_archive(model_dir: Path) -> bytes:
    """A console-layout archive (agent/model.pb + model_metadata.json) of a model folder."""
    return tar_gz([("agent/model.pb", (model_dir / "model.pb").read_bytes(), "file"),
                   ("model_metadata.json", (model_dir / "model_metadata.json").read_bytes(), "file")])


def zero_bomb(size_bytes: int) -> bytes:
    """A small .tar.gz that expands to ``size_bytes`` of zeros."""

    class Zeros:
        def __init__(self, n: int) -> None:
            self.left = n

        def read(self, size: int = -1) -> bytes:
            n = self.left if size < 0 else min(size, self.left)
            self.left -= n
            return bytes(n)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("agent/model.pb")
        info.size = size_bytes
        tar.addfile(info, Zeros(size_bytes))  # type: ignore[arg-type]
    return buf.getvalue()


def listing(folder: Path) -> list[str]:
    """The names in ``folder``, sorted."""
    return sorted(os.listdir(folder))
