"""sd_notify against real unix datagram sockets (a path in tmp_path, and the abstract namespace)."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from car_runtime import sdnotify


def _receive(sock: socket.socket) -> str:
    sock.settimeout(5.0)
    return sock.recv(4096).decode()


@pytest.fixture
def path_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def abstract_socket(monkeypatch):
    name = f"car-runtime-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def test_unset_is_a_noop(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False


def test_messages_on_a_path_socket(path_socket):
    assert sdnotify.ready() is True
    assert _receive(path_socket) == "READY=1"
    assert sdnotify.ready("driving\nmodel x") is True
    assert _receive(path_socket) == "READY=1\nSTATUS=driving model x"
    assert sdnotify.watchdog() is True
    assert _receive(path_socket) == "WATCHDOG=1"
    assert sdnotify.status("armed 29.9 fps\tage 12 ms") is True
    assert _receive(path_socket) == "STATUS=armed 29.9 fps age 12 ms"
    assert sdnotify.extend_timeout(30) is True
    assert _receive(path_socket) == "EXTEND_TIMEOUT_USEC=30000000"
    assert sdnotify.stopping() is True
    assert _receive(path_socket) == "STOPPING=1"


def test_messages_on_an_abstract_socket(abstract_socket):
    assert sdnotify.watchdog() is True
    assert _receive(abstract_socket) == "WATCHDOG=1"


def test_sender_credentials_are_this_process(path_socket):
    """systemd's NotifyAccess=main checks the sender pid: it must be us, not a helper process."""
    path_socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    assert sdnotify.ready()
    path_socket.settimeout(5.0)
    msg, ancdata, _flags, _addr = path_socket.recvmsg(4096, socket.CMSG_SPACE(12))
    assert msg == b"READY=1"
    creds = [data for level, kind, data in ancdata if kind == socket.SCM_CREDENTIALS]
    pid = int.from_bytes(creds[0][:4], "little")
    assert pid == os.getpid()


def test_missing_socket_returns_false_without_raising(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sdnotify.watchdog() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert sdnotify.watchdog() is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("2000000", None, 1.0),
        ("2000000", "self", 1.0),
        ("2000000", "other", None),
        ("500000", None, 0.25),
        (None, None, None),
        ("0", None, None),
        ("abc", None, None),
        ("2000000", "notanumber", None),
    ],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            value = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(value, value)
            monkeypatch.setenv(name, value)
    assert sdnotify.watchdog_interval_s() == expected
