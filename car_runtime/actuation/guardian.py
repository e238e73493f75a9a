"""The guardian: a small second process that puts the car at neutral when the runtime cannot.

The drive loop's own fail-safes (the actuation watchdog, the stall supervisor, the signal
handlers) live inside the runtime process; they freeze with it (SIGSTOP, Ctrl-Z without a
handler, a debugger, a C call holding the GIL, the machine swapping) and die with it (SIGKILL,
the OOM killer, a segfault). The guardian is started next to a real output (sysfs PWM, a serial
servo controller on a device path) and owns the fail-safe for those cases:

- **Heartbeat.** The runtime shares one small memory page with it (a memfd): every actuator
  write stores its time, whether the pulses now drive, and a write counter that is odd while a
  device write is in progress; a thread of the runtime refreshes the time every ``deadline/4``
  between writes ("the process is alive") and reports whether the loop is armed. Stores only:
  no system call per write.
- **Trip.** While the loop is armed or the pulses (may) drive, no heartbeat for ``deadline_s``
  (the whole process is frozen), or one device write running longer than ``deadline_s`` (a hung
  driver), makes the guardian write neutral to every channel itself, count a *trip* in the page
  and log one line. The runtime checks the trip count right before and right after every
  driving write, and the drive loop turns an unseen trip into ``FAULT`` (disarmed) before its
  next driving write: a process that was frozen never drives on by itself. The one write that
  was already inside the kernel when the process froze completes when it resumes; both sides
  then rewrite neutral at once (the runtime right after that write returns, the guardian as soon
  as it sees the write counter move).
- **Runtime gone.** The two processes hold the ends of a socket pair. End of file without a
  clean ``quit`` (kill -9, a crash, any exit that skipped closing the outputs) -> neutral on
  every channel, one log line, exit.
- **Guardian gone.** The runtime's heartbeat thread watches the same socket: the guardian
  ending, or not refreshing its own heartbeat for ``max(1 s, 10 x deadline)``, puts the
  actuator at neutral, refuses every driving write, and the drive loop ends with
  ``ExitCode.GUARDIAN_LOST`` (6).

The guardian only ever writes the neutral payloads it is given at start (it has no other
values), ignores the signals a terminal or ``systemctl stop`` send to the group, runs in its
own session (Ctrl-Z or a lost terminal do not reach it) and imports nothing but the standard
library: it starts in tens of milliseconds with a small RSS. Its writes never block it: files
are opened ``O_NONBLOCK`` per write (a FIFO without a reader fails with ENXIO instead of
waiting), each channel is written on its own bounded thread, motor (ESC) first.

Serial: the runtime keeps its own port open; the guardian opens the same tty device itself
(``O_NOCTTY | O_NONBLOCK``) and writes the neutral command bytes in one ``write()`` (the tty
layer keeps writes of two processes from interleaving). pyserial URLs that are not a device
path (``loop://``, ``rfc2217://``, ``socket://``) cannot be opened by a second process: those
outputs run without a guardian (a warning says so; the in-process watchdog still applies).
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import select
import signal
import socket
import sys
import threading
import time

# Imports are kept to what the guardian process needs (fast start, small RSS): no dataclasses,
# typing or argparse here; subprocess only on the runtime's side (GuardianLink).

# -- the shared page: 16 unsigned 64-bit slots; each is written by one side only ---------------
SLOTS = 16
MAGIC = 0x43524755415244  # "CRGUARD"
S_MAGIC = 0
S_HEARTBEAT_NS = 1  # runtime: CLOCK_MONOTONIC ns of its last sign of life
S_ARMED = 2  # runtime (drive loop): 1 while the loop is armed (it may drive)
S_WRITE_SEQ = 3  # runtime: +1 before and +1 after each device write (odd = in progress)
S_WRITE_START_NS = 4  # runtime: when the write in progress began
S_ACKED = 5  # runtime: trips it has seen (and turned into FAULT)
S_TRIPS = 6  # guardian: trips so far
S_TRIP_NS = 7  # guardian: when the last trip happened
S_TRIP_REASON = 8  # guardian: R_* of the last trip
S_TRIP_GAP_NS = 9  # guardian: how long the runtime had been silent / the write had been stuck
S_GUARDIAN_NS = 10  # guardian: its own heartbeat (every wake-up)
S_NEUTRAL_WRITES = 11  # guardian: neutral writes it made
S_DRIVING = 12  # runtime (device writer): 1 while the pulses last written are not neutral

R_SILENT = 1  # no heartbeat: the runtime process is frozen
R_STUCK = 2  # a device write has not returned
R_EXITED = 3  # the runtime ended without a clean quit
REASONS = {R_SILENT: "frozen", R_STUCK: "write stuck", R_EXITED: "runtime ended"}

QUIT = b"Q"  # runtime -> guardian: clean shutdown, outputs already at neutral
GOING = b"G"  # runtime -> guardian: ending without a confirmed neutral: write it
READY = b"ready\n"  # guardian -> runtime, once its targets are checked

WRITE_TIMEOUT_S = 0.5  # one neutral write may take this long before it counts as stuck


def describe_error(exc: BaseException) -> str:
    """One line for an error: ``ENXIO No such device or address`` rather than a repr."""
    if isinstance(exc, OSError) and exc.errno:
        return f"{errno.errorcode.get(exc.errno, exc.errno)} {exc.strerror or ''}".strip()
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def run_bounded(fn: Callable[[], None], timeout_s: float, name: str) -> str:
    """Run ``fn`` on a daemon thread and wait at most ``timeout_s``.

    Returns ``"ok"``, ``"failed (<reason>)"`` or ``"stuck (no answer within N s)"``: a call that
    blocks in the kernel (a hung driver, a FIFO) cannot hold up the caller (a shutdown path).
    """
    outcome: list[str] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported, never raised
            outcome.append(f"failed ({describe_error(exc)})")
        else:
            outcome.append("ok")

    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    t.join(timeout_s)
    return outcome[0] if outcome else f"stuck (no answer within {timeout_s:g} s)"


class NeutralTarget:
    """One neutral write the guardian may make: ``payload`` to ``path``.

    ``kind`` ``"file"``: opened per write (``O_WRONLY | O_TRUNC | O_NONBLOCK``), like a shell
    ``>`` -- a sysfs ``duty_cycle``. ``kind`` ``"tty"``: a serial device kept open, written in one
    ``write()``."""

    __slots__ = ("name", "kind", "path", "payload")

    def __init__(self, name: str, kind: str, path: str, payload: bytes) -> None:
        self.name, self.kind, self.path, self.payload = name, kind, path, bytes(payload)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NeutralTarget) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"NeutralTarget({self.name!r}, {self.kind!r}, {self.path!r}, {self.payload!r})"

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": self.path, "hex": self.payload.hex()}

    @classmethod
    def from_json(cls, d: dict) -> "NeutralTarget":
        if d.get("kind") not in ("file", "tty"):
            raise ValueError(f"unknown target kind {d.get('kind')!r}")
        return cls(str(d["name"]), d["kind"], str(d["path"]), bytes.fromhex(d["hex"]))


def open_tty(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)


def write_target(t: NeutralTarget, fd: int | None = None) -> None:
    """Write ``t``'s payload once without ever waiting on a reader; raise OSError on failure."""
    if t.kind == "tty":
        own = fd is None
        fd = open_tty(t.path) if own else fd
        try:
            view, end_s = memoryview(t.payload), time.monotonic() + WRITE_TIMEOUT_S
            while view:
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:  # the tty's output buffer is full: retry briefly
                    if time.monotonic() > end_s:
                        raise
                    time.sleep(0.002)
        finally:
            if own:
                os.close(fd)
        return
    fd = os.open(t.path, os.O_WRONLY | os.O_TRUNC | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        n = os.write(fd, t.payload)
    finally:
        os.close(fd)
    if n != len(t.payload):
        raise OSError(errno.EIO, f"wrote {n} of {len(t.payload)} bytes")


def write_targets(targets: list[NeutralTarget], fds: dict[str, int] | None = None,
                  timeout_s: float = WRITE_TIMEOUT_S) -> dict[str, str]:
    """Write every target in parallel, each on its own bounded thread: ``{name: outcome}``.

    A channel that blocks or fails does not keep the others from getting neutral."""
    fds = fds or {}
    results: dict[str, list[str]] = {t.name: [] for t in targets}
    threads = []
    for t in targets:
        def one(t: NeutralTarget = t) -> None:
            results[t.name].append(run_bounded(lambda: write_target(t, fds.get(t.name)),
                                               timeout_s, f"neutral-{t.name}"))
        th = threading.Thread(target=one, daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join(timeout_s + 0.1)
    return {name: (r[0] if r else f"stuck (no answer within {timeout_s:g} s)")
            for name, r in results.items()}


def summarize(results: dict[str, str]) -> str:
    return ", ".join(f"{name} {outcome}" for name, outcome in results.items()) or "no channels"


# -- the runtime's side ------------------------------------------------------------------------
class GuardianError(RuntimeError):
    """The guardian process could not be started (the message names the cause)."""


class GuardianLink:
    """The runtime's end: starts the guardian process, feeds its heartbeat, reads its trips.

    Hot-path methods (:meth:`begin_write`, :meth:`end_write`, :meth:`trip_pending`) are a few
    stores/loads in the shared page. A daemon thread beats every ``deadline/4`` and watches the
    guardian; when it is lost, :attr:`failure` says why and ``on_failure`` callbacks run (on
    that thread). :meth:`close` with ``clean=True`` tells the guardian the outputs are at
    neutral (it exits without writing); otherwise it writes neutral itself when the socket
    closes.
    """

    def __init__(self, targets: list[NeutralTarget], deadline_s: float, *,
                 start_timeout_s: float = 15.0, python: str | None = None) -> None:
        if not targets:
            raise GuardianError("no outputs to guard")
        if not deadline_s > 0:
            raise GuardianError(f"deadline must be > 0 s, got {deadline_s!r}")
        self.targets = list(targets)
        self.deadline_s = float(deadline_s)
        self.failure: str | None = None
        self._on_failure: list[Callable[[str], None]] = []
        self._closing = False
        self._acked = 0
        fd = _shared_fd()
        try:
            os.ftruncate(fd, SLOTS * 8)
            self._mm = mmap.mmap(fd, SLOTS * 8)
        except BaseException:
            os.close(fd)
            raise
        self._slots = memoryview(self._mm).cast("Q")
        self._slots[S_MAGIC] = MAGIC
        self._slots[S_HEARTBEAT_NS] = time.monotonic_ns()
        import subprocess

        self._subprocess = subprocess
        self._sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [python or sys.executable, "-m", "car_runtime.actuation.guardian",
               "--shm-fd", str(fd), "--sock-fd", str(child.fileno()),
               "--deadline-ms", repr(self.deadline_s * 1e3), "--runtime-pid", str(os.getpid()),
               "--targets", json.dumps([t.to_json() for t in self.targets])]
        try:
            self.proc = subprocess.Popen(
                cmd, pass_fds=(fd, child.fileno()), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        except OSError as exc:
            self._release()
            raise GuardianError(f"cannot start {cmd[0]}: {describe_error(exc)}") from None
        finally:
            child.close()
            os.close(fd)
        try:
            self._await_ready(start_timeout_s)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            self._release()
            raise
        self.pid = self.proc.pid
        self.beat()  # the start took a while: be fresh before anyone arms
        self._thread = threading.Thread(target=self._watch, name="guardian-link", daemon=True)
        self._thread.start()

    def _await_ready(self, timeout_s: float) -> None:
        self._sock.settimeout(timeout_s)
        buf = b""
        try:
            while not buf.endswith(b"\n"):
                chunk = self._sock.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except socket.timeout:
            raise GuardianError(f"it did not answer within {timeout_s:g} s") from None
        finally:
            self._sock.settimeout(None)
        if buf != READY:
            code = self.proc.wait(timeout=5)
            text = buf.decode(errors="replace").strip().removeprefix("error ").strip()
            raise GuardianError(text or f"it exited with status {code} before it was ready")
        self._sock.setblocking(False)

    # -- hot path (any thread; stores and loads only) ----------------------------------------
    def beat(self) -> None:
        self._slots[S_HEARTBEAT_NS] = time.monotonic_ns()

    def set_armed(self, armed: bool) -> None:
        self._slots[S_ARMED] = 1 if armed else 0

    def inherit(self, other: "GuardianLink") -> None:
        """Guard what ``other`` guards (the loop armed, pulses that drive): for a hand-over
        between two guardians, with no device write in progress."""
        self._slots[S_ARMED] = other._slots[S_ARMED]
        self._slots[S_DRIVING] = other._slots[S_DRIVING]

    def begin_write(self, driving: bool) -> None:
        s = self._slots
        if driving:  # from now on the pulses may drive (until end_write says otherwise)
            s[S_DRIVING] = 1
        s[S_WRITE_START_NS] = time.monotonic_ns()
        s[S_WRITE_SEQ] += 1  # odd: a device write is in progress (only the writer stores it)

    def end_write(self, driving: bool) -> None:
        s = self._slots
        s[S_DRIVING] = 1 if driving else 0
        s[S_HEARTBEAT_NS] = time.monotonic_ns()
        s[S_WRITE_SEQ] += 1

    def trip_pending(self) -> bool:
        """True while a trip happened that the drive loop has not taken yet (no driving)."""
        return self._slots[S_TRIPS] != self._acked

    def take_trip(self) -> dict | None:
        """Acknowledge an unseen trip: ``{"reason", "gap_ms", "ago_ms", "trips"}``, else None."""
        s = self._slots
        trips = s[S_TRIPS]
        if trips == self._acked:
            return None
        self._acked = trips
        s[S_ACKED] = trips
        now = time.monotonic_ns()
        return {"reason": REASONS.get(s[S_TRIP_REASON], "?"), "trips": trips,
                "gap_ms": round(s[S_TRIP_GAP_NS] / 1e6, 1),
                "ago_ms": round((now - s[S_TRIP_NS]) / 1e6, 1)}

    def status(self) -> dict:
        s = self._slots
        return {"pid": self.pid, "deadline_ms": round(self.deadline_s * 1e3, 1),
                "trips": int(s[S_TRIPS]), "neutral_writes": int(s[S_NEUTRAL_WRITES]),
                "alive": self.failure is None, "failure": self.failure}

    def on_failure(self, fn: Callable[[str], None]) -> None:
        self._on_failure.append(fn)

    # -- the heartbeat / watch thread ---------------------------------------------------------
    def _watch(self) -> None:
        interval_s = self.deadline_s / 4
        silent_limit_ns = int(max(1.0, 10 * self.deadline_s) * 1e9)
        while not self._closing:
            try:
                readable, _, _ = select.select([self._sock], [], [], interval_s)
            except (OSError, ValueError):  # closed under us by close()
                return
            self.beat()
            if self._closing:
                return
            if readable:
                try:
                    data = self._sock.recv(4096)
                except BlockingIOError:
                    data = b"?"
                except OSError:
                    data = b""
                if not data:
                    try:
                        code = self.proc.wait(timeout=0.5)
                    except self._subprocess.TimeoutExpired:
                        code = None
                    how = f"exited with status {code}" if code is not None else "closed its socket"
                    self._fail(f"the guardian process (pid {self.pid}) {how}")
                    return
            elif time.monotonic_ns() - self._slots[S_GUARDIAN_NS] > silent_limit_ns:
                self._fail(f"the guardian process (pid {self.pid}) stopped responding "
                           f"(stopped or starved for {silent_limit_ns / 1e9:g} s)")
                return

    def _fail(self, reason: str) -> None:
        if self.failure is not None or self._closing:
            return
        self.failure = reason
        for fn in list(self._on_failure):
            try:
                fn(reason)
            except Exception:  # noqa: BLE001 - one callback failing must not stop the others
                pass

    # -- shutdown -----------------------------------------------------------------------------
    def abandon(self) -> None:
        """The runtime is about to exit hard: ask the guardian to write neutral (no waiting)."""
        self._closing = True
        try:
            self._sock.send(GOING, socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT)
        except OSError:
            pass

    def close(self, *, clean: bool = True, timeout_s: float = 2.0) -> None:
        """End the guardian. ``clean``: the outputs are at neutral, it exits without writing;
        otherwise it writes neutral itself when it sees the socket close. Idempotent."""
        if self._closing:
            return
        self._closing = True
        try:
            self._sock.send(QUIT if clean else GOING, socket.MSG_NOSIGNAL)
        except OSError:
            pass
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout_s)
        except self._subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
        self._release()

    def _release(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass
        # the watch thread may still read a slot after a timed-out join: keep the mapping (it is
        # one page) rather than risk a read from unmapped memory; it goes with the process.


def _shared_fd() -> int:
    """An anonymous shared memory file: memfd where the kernel has it, else an unlinked temp."""
    if hasattr(os, "memfd_create"):
        try:
            return os.memfd_create("car-runtime-guardian", os.MFD_CLOEXEC)
        except OSError:
            pass
    import tempfile

    f = tempfile.TemporaryFile()
    fd = os.dup(f.fileno())
    f.close()
    return fd


# -- the guardian process ----------------------------------------------------------------------
#: Signals a terminal, a process group or ``systemctl stop`` deliver; the guardian outlives them
#: and goes when the runtime does (quit or end of file).
IGNORED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE",
                   "SIGTSTP", "SIGTTIN", "SIGTTOU")


class _Guardian:
    def __init__(self, slots: memoryview, sock: socket.socket, targets: list[NeutralTarget],
                 deadline_s: float, runtime_pid: int) -> None:
        self.slots = slots
        self.sock = sock
        self.targets = targets
        self.deadline_ns = int(deadline_s * 1e9)
        self.runtime_pid = runtime_pid
        self.fds: dict[str, int] = {}
        self.trip_seq: int | None = None  # write counter when the unacknowledged trip happened
        self.rewrote = False  # neutral rewritten after that trip (logged once)

    def log(self, msg: str) -> None:
        try:
            os.write(2, f"car-runtime guardian[{os.getpid()}]: {msg}\n".encode(errors="replace"))
        except OSError:  # the terminal went away: nothing to tell
            pass

    def start(self) -> str | None:
        """Open the ttys and write neutral once (the car is at neutral now): None if all is well,
        else why not."""
        try:
            for t in self.targets:
                if t.kind == "tty":
                    self.fds[t.name] = open_tty(t.path)
        except OSError as exc:
            return f"cannot open {t.path}: {describe_error(exc)}"
        results = write_targets(self.targets, self.fds)
        bad = {k: v for k, v in results.items() if v != "ok"}
        if bad:
            return "cannot write neutral: " + summarize(bad)
        return None

    def neutral(self) -> str:
        results = write_targets(self.targets, self.fds)
        self.slots[S_NEUTRAL_WRITES] += 1
        return summarize(results)

    def trip(self, reason: int, gap_ns: int, why: str) -> None:
        s = self.slots
        s[S_TRIP_REASON] = reason
        s[S_TRIP_GAP_NS] = gap_ns
        s[S_TRIP_NS] = time.monotonic_ns()
        s[S_TRIPS] += 1  # mark first: the runtime refuses to drive from now on
        self.trip_seq = s[S_WRITE_SEQ]
        self.rewrote = False
        self.log(f"{why}: wrote neutral: {self.neutral()}")

    def check(self, now: int) -> None:
        s = self.slots
        seq = s[S_WRITE_SEQ]
        if s[S_TRIPS] != s[S_ACKED]:  # a trip the runtime has not taken yet
            if seq != self.trip_seq and not seq & 1:  # a write ended after the trip: again
                self.trip_seq = seq
                outcome = self.neutral()
                if not self.rewrote:
                    self.rewrote = True
                    self.log(f"a write ended after the trip: neutral again: {outcome}")
            return
        self.trip_seq = None
        guarding = s[S_ARMED] or s[S_DRIVING]  # at rest and disarmed: nothing to protect
        if seq & 1 and guarding:
            stuck_ns = now - s[S_WRITE_START_NS]
            if stuck_ns > self.deadline_ns:
                self.trip(R_STUCK, stuck_ns, f"a PWM write in car-runtime (pid "
                          f"{self.runtime_pid}) has not returned for {stuck_ns / 1e6:.0f} ms")
                return
        silent_ns = now - s[S_HEARTBEAT_NS]
        if guarding and silent_ns > self.deadline_ns:
            state = "driving" if s[S_DRIVING] else "armed"
            self.trip(R_SILENT, silent_ns, f"no heartbeat from car-runtime (pid "
                      f"{self.runtime_pid}) for {silent_ns / 1e6:.0f} ms while {state} "
                      "(frozen: SIGSTOP, a debugger, starved)")

    def timeout_s(self, now: int) -> float:
        s = self.slots
        if s[S_TRIPS] != s[S_ACKED]:
            return self.deadline_ns / 4e9  # watch for a write after the trip
        due = s[S_HEARTBEAT_NS] + self.deadline_ns
        if s[S_WRITE_SEQ] & 1:
            due = min(due, s[S_WRITE_START_NS] + self.deadline_ns)
        wait_ns = min(max(due - now + 1_000_000, 1_000_000), self.deadline_ns)
        return wait_ns / 1e9

    def run(self) -> int:
        while True:
            now = time.monotonic_ns()
            self.slots[S_GUARDIAN_NS] = now
            try:
                readable, _, _ = select.select([self.sock], [], [], self.timeout_s(now))
            except InterruptedError:  # pragma: no cover - PEP 475 retries select
                continue
            if readable:
                try:
                    data = self.sock.recv(4096)
                except OSError:
                    data = b""
                if QUIT in data:
                    return 0
                if GOING in data:
                    self.log(f"car-runtime (pid {self.runtime_pid}) is ending without a confirmed "
                             f"neutral: wrote neutral: {self.neutral()}")
                    return 0
                if not data:
                    s = self.slots
                    self.trip(R_EXITED, time.monotonic_ns() - s[S_HEARTBEAT_NS],
                              f"car-runtime (pid {self.runtime_pid}) ended without closing its "
                              "outputs (killed or crashed)")
                    return 0
            self.check(time.monotonic_ns())


def main(argv: list[str] | None = None) -> int:
    """``python -m car_runtime.actuation.guardian --shm-fd N --sock-fd N --deadline-ms X
    --runtime-pid N --targets JSON`` (started by :class:`GuardianLink`, not by hand)."""
    for name in IGNORED_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    argv = sys.argv[1:] if argv is None else argv
    args = dict(zip(argv[0::2], argv[1::2]))
    try:
        sock = socket.socket(fileno=int(args["--sock-fd"]))
    except (KeyError, ValueError, OSError) as exc:
        print(f"car-runtime guardian: started by hand? ({describe_error(exc)}); it is started by "
              "car-runtime run and the ROS node", file=sys.stderr)
        return 2
    try:
        shm_fd = int(args["--shm-fd"])
        mm = mmap.mmap(shm_fd, SLOTS * 8)
        os.close(shm_fd)
        slots = memoryview(mm).cast("Q")
        if slots[S_MAGIC] != MAGIC:
            raise ValueError("the shared page is not a car-runtime guardian page")
        targets = [NeutralTarget.from_json(d) for d in json.loads(args["--targets"])]
        deadline_s = float(args["--deadline-ms"]) / 1e3
        runtime_pid = int(args["--runtime-pid"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sock.sendall(f"error bad arguments: {describe_error(exc)}\n".encode())
        return 2
    g = _Guardian(slots, sock, targets, deadline_s, runtime_pid)
    problem = g.start()
    if problem is not None:
        sock.sendall(f"error {problem}\n".encode())
        return 1
    slots[S_GUARDIAN_NS] = time.monotonic_ns()
    sock.sendall(READY)
    return g.run()


if __name__ == "__main__":
    sys.exit(main())
