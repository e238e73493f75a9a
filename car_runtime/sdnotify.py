"""systemd service notifications (``sd_notify(3)``) over a plain unix datagram socket.

No dependency: systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace) to ``Type=notify`` services; every call here is a no-op returning ``False`` when it is
unset (running from a terminal, tests, the laptop).

Typical use in the drive loop::

    sdnotify.extend_timeout(30)          # loading a big model on the Atom may take a while
    ...load model, open camera...
    sdnotify.ready()
    interval_s = sdnotify.watchdog_interval_s()   # None if WatchdogSec= is not set
    ...each loop pass, at most every interval_s: sdnotify.watchdog()
    sdnotify.stopping()
"""

from __future__ import annotations

import os
import socket

__all__ = [
    "notify",
    "ready",
    "watchdog",
    "status",
    "stopping",
    "extend_timeout",
    "watchdog_interval_s",
]


def _address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock:… and other transports are not supported: treat as unset


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``; ``False`` if unset or failed.

    Never raises: a service manager that went away must not stop the car's loop.
    """
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    address = _address(target)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
        return True
    except OSError:
        return False


def ready(status_text: str | None = None) -> bool:
    """Tell systemd the service is up (``READY=1``), optionally with a status line."""
    msg = "READY=1" if status_text is None else f"READY=1\nSTATUS={_one_line(status_text)}"
    return notify(msg)


def watchdog() -> bool:
    """Kick the systemd watchdog (``WATCHDOG=1``); call every :func:`watchdog_interval_s`."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """Set the free-form status shown by ``systemctl status`` (one line)."""
    return notify(f"STATUS={_one_line(text)}")


def stopping() -> bool:
    """Tell systemd the service is shutting down on purpose (``STOPPING=1``)."""
    return notify("STOPPING=1")


def extend_timeout(seconds: float) -> bool:
    """Ask for ``seconds`` more before start-up (or stop) times out; also holds off the watchdog."""
    return notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1e6))}")


def watchdog_interval_s() -> float | None:
    """How often to call :func:`watchdog`: half of ``$WATCHDOG_USEC``, or ``None`` if not watched.

    Follows ``sd_watchdog_enabled(3)``: the variables only apply if ``$WATCHDOG_PID`` is unset or
    equals this process id; a malformed or zero value means no watchdog.
    """
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 2e6


def _one_line(text: str) -> str:
    return " ".join(text.split())
