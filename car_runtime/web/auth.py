"""Cockpit authentication: the password file, sessions with CSRF tokens, the login rate limit.

Password file (``web_password_file``, mode 0600, written atomically), one line::

    scrypt$16384$8$1$<salt base64>$<key base64>

Sessions live in memory (a restart logs everyone out); a password change ends every session
(each session remembers the salt of the password it was opened with). The cookie is HttpOnly
and SameSite=Strict; every state-changing request must carry the session's CSRF token in the
``X-CSRF-Token`` header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from car_runtime.errors import ConfigError
from car_runtime.timing import now_s

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # ~16 MiB and tens of ms per check
MIN_PASSWORD_CHARS = 8
GENERATED_PASSWORD_BYTES = 12  # 16 URL-safe characters
SESSION_IDLE_S = 12 * 3600.0
MAX_SESSIONS = 32
COOKIE_NAME = "car_session"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The password-file line for ``password`` (scrypt, 16-byte random salt)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                         maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


@dataclass(frozen=True)
class PasswordRecord:
    """A parsed password-file line."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, line: str, source: str) -> "PasswordRecord":
        parts = line.strip().split("$")
        try:
            if len(parts) != 6 or parts[0] != "scrypt":
                raise ValueError
            n, r, p = (int(x) for x in parts[1:4])
            salt, key = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
            if n < 2 or n & (n - 1) or not (1 <= r <= 64 and 1 <= p <= 16) or len(salt) < 8 or not key:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"web password file {source} is not a car-runtime password file; reset it with "
                f"`car-runtime web-password --file {source}`") from None
        return cls(n, r, p, salt, key)

    def verify(self, password: str) -> bool:
        """Constant-time check of ``password``."""
        try:
            candidate = hashlib.scrypt(password.encode("utf-8"), salt=self.salt, n=self.n, r=self.r,
                                       p=self.p, maxmem=256 * 1024 * 1024, dklen=len(self.key))
        except (ValueError, MemoryError):
            return False
        return hmac.compare_digest(candidate, self.key)


def write_password_file(path: str | Path, password: str, *, owner: str | None = None) -> Path:
    """Hash ``password`` into ``path`` atomically, mode 0600 (``owner``: chown to that user,
    needs root; without it, root replacing an existing file keeps that file's owner and group,
    so ``sudo car-runtime web-password`` leaves the service able to read it). Refuses passwords
    shorter than :data:`MIN_PASSWORD_CHARS`."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConfigError(f"the web password needs at least {MIN_PASSWORD_CHARS} characters")
    if any(c in password for c in "\r\n"):
        raise ConfigError("the web password must be one line")
    p = Path(path)
    uid = gid = -1
    if owner is not None:
        import pwd

        try:
            entry = pwd.getpwnam(owner)
        except KeyError:
            raise ConfigError(f"user {owner!r} does not exist; create it or leave out --owner") from None
        uid, gid = entry.pw_uid, entry.pw_gid
    elif os.geteuid() == 0:
        try:
            st = p.stat()
        except OSError:
            pass
        else:
            uid, gid = st.st_uid, st.st_gid
    line = hash_password(password) + "\n"
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.parent / f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.write(fd, line.encode("ascii"))
                os.fchmod(fd, 0o600)
                if (uid, gid) != (-1, -1):
                    os.fchown(fd, uid, gid)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, p)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dfd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise ConfigError(f"cannot write the web password file {p}: {exc.strerror or exc}; "
                          "run as a user who may write there (sudo)") from None
    return p


def create_password_file(path: str | Path, *, owner: str | None = None) -> str:
    """Generate a random password, write its hash to ``path`` (0600, atomic, chown to
    ``owner``), and return the password (show it to the user once)."""
    password = secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
    write_password_file(path, password, owner=owner)
    return password


class PasswordFile:
    """Reads ``path`` when it changes (a reset with ``car-runtime web-password`` needs no
    restart, and ends the sessions opened with the old password)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple | None = None
        self._record: PasswordRecord | None = None
        self._lock = threading.Lock()

    def missing_error(self) -> ConfigError:
        return ConfigError(
            f"the web cockpit needs a password: no password file {self.path}; set one with "
            f"`car-runtime web-password --file {self.path}`")

    def current(self) -> PasswordRecord:
        """The current record; ConfigError naming the fix if the file is missing or bad."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise self.missing_error() from None
        except OSError as exc:
            raise ConfigError(f"cannot read the web password file {self.path}: "
                              f"{exc.strerror}; check its permissions") from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp or self._record is None:
                try:
                    text = self.path.read_text(encoding="ascii", errors="replace")
                except OSError as exc:
                    raise ConfigError(f"cannot read the web password file {self.path}: "
                                      f"{exc.strerror}; check its permissions") from None
                self._record = PasswordRecord.parse(text, str(self.path))
                self._stamp = stamp
            return self._record

    def insecure_mode(self) -> bool:
        """True if others than the owner may read the file."""
        try:
            return bool(self.path.stat().st_mode & 0o077)
        except OSError:
            return False


@dataclass
class Session:
    token: str
    csrf: str
    salt: bytes  # of the password this session was opened with
    created_s: float
    seen_s: float
    peer: str


class Sessions:
    """In-memory sessions, at most :data:`MAX_SESSIONS` (the least recently used goes)."""

    def __init__(self, idle_s: float = SESSION_IDLE_S, max_sessions: int = MAX_SESSIONS) -> None:
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._by_token: dict[str, Session] = {}

    def open(self, record: PasswordRecord, peer: str) -> Session:
        now = now_s()
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), record.salt, now, now, peer)
        self._by_token[s.token] = s
        while len(self._by_token) > self.max_sessions:
            oldest = min(self._by_token.values(), key=lambda x: x.seen_s)
            del self._by_token[oldest.token]
        return s

    def get(self, token: str | None, record: PasswordRecord) -> Session | None:
        """The live session for ``token`` (None if unknown, idle too long, or the password
        changed since it was opened)."""
        if not token:
            return None
        s = self._by_token.get(token)
        if s is None:
            return None
        now = now_s()
        if now - s.seen_s > self.idle_s or not hmac.compare_digest(s.salt, record.salt):
            del self._by_token[token]
            return None
        s.seen_s = now
        return s

    def close(self, token: str) -> None:
        self._by_token.pop(token, None)

    def __len__(self) -> int:
        return len(self._by_token)


def csrf_ok(session: Session, token: str | None) -> bool:
    """Constant-time check; any header text (non-ASCII included) is just a wrong token."""
    return bool(token) and hmac.compare_digest(session.csrf.encode(),
                                               token.encode("utf-8", "surrogateescape"))


@dataclass
class LoginLimiter:
    """At most ``per_peer`` failed logins per ``window_s`` from one address, ``total`` from all.

    While limited, every login from there is refused (even a right password) until the window
    has passed, so guessing costs real time.
    """

    per_peer: int = 5
    total: int = 30
    window_s: float = 60.0
    _failures: dict[str, deque] = field(default_factory=dict)
    _all: deque = field(default_factory=deque)

    def _trim(self, q: deque, now: float) -> None:
        while q and now - q[0] > self.window_s:
            q.popleft()

    def retry_after_s(self, peer: str) -> float:
        """0 if ``peer`` may try now, else seconds to wait."""
        now = now_s()
        self._trim(self._all, now)
        q = self._failures.get(peer)
        if q is not None:
            self._trim(q, now)
            if not q:
                del self._failures[peer]
        waits = []
        if q is not None and len(q) >= self.per_peer:
            waits.append(self.window_s - (now - q[0]))
        if len(self._all) >= self.total:
            waits.append(self.window_s - (now - self._all[0]))
        return max(waits, default=0.0)

    def failed(self, peer: str) -> None:
        now = now_s()
        if len(self._failures) > 1024:  # bounded memory under a spray of addresses
            self._failures.clear()
        self._failures.setdefault(peer, deque(maxlen=self.per_peer)).append(now)
        self._all.append(now)
        while len(self._all) > self.total:
            self._all.popleft()

    def forgive(self, peer: str) -> None:
        """Take back the latest :meth:`failed` of ``peer`` (an attempt counted in advance that
        turned out right, or was no password guess)."""
        q = self._failures.get(peer)
        if q:
            q.pop()
            if self._all:
                self._all.pop()
