"""``car-runtime doctor``: check this machine (the car or a laptop) and explain what to fix.

Each check returns a :class:`Check`: ✅ ok, ⚠️ warn, ❌ fail, a one-line summary of what was
found and, unless ok, the fix. The checks are pure functions of facts; the gatherers read the
facts from ``/sys``, ``/dev``, ``/proc`` and ``/etc`` under :class:`Roots` (a fake tree in the
tests, a mounted SD card with ``--root``). Hardware that is missing is ❌ on the car and ⚠️
elsewhere (a laptop has no PWM and may have no camera).

Everything that runs OpenVINO (devices, loading the model, the kernels it selected, the short
bench) runs in a child process (:func:`probe_main`): an OpenVINO that needs a newer CPU dies of
SIGILL there, and the doctor reports it instead of dying with it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Sequence

from car_runtime.config import RunConfig

#: Python versions the wheels are resolved and tested for.
PYTHON_TESTED = ((3, 10), (3, 12))
#: Highest glibc the wheels we depend on need (opencv-python-headless, numpy: manylinux_2_28).
GLIBC_NEEDED = (2, 28)
#: OpenVINO's first release line that needs AVX2 on the CPU (2026.0 release notes).
OPENVINO_AVX2_FROM = 2026
OPENVINO_PIN = "openvino>=2025.4.1,<2026"
STOCK_UNIT = "deepracer-core.service"
SERVICE_UNIT = "car-runtime.service"
SERVICE_USER = "car-runtime"
STOCK_PCI_DEVICE = "0000:00:17.0"
#: Camera mode of the stock camera node (MJPG 640x480 at 30 fps).
CAMERA_MODE = ("MJPG", 640, 480, 30.0)
MODELS_MIN_FREE_MB = (100.0, 500.0)  # fail below, warn below
PROBE_TIMEOUT_S = 600.0


class Level(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"

    @property
    def symbol(self) -> str:
        return {"ok": "✅", "warn": "⚠️", "fail": "❌"}[self.value]


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it went, what to do about it."""

    name: str
    level: Level
    summary: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["level"] = self.level.value
        return out


@dataclass(frozen=True)
class Roots:
    """Where the system trees are: ``/`` on a live system, a fake tree in tests."""

    sys: Path = Path("/sys")
    dev: Path = Path("/dev")
    proc: Path = Path("/proc")
    etc: Path = Path("/etc")

    @classmethod
    def under(cls, root: str | Path) -> "Roots":
        root = Path(root)
        return cls(root / "sys", root / "dev", root / "proc", root / "etc")


@dataclass(frozen=True)
class Identity:
    """A user's uid and groups, for "may this user write that file"."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def current(cls) -> "Identity":
        import pwd

        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, frozenset({os.getegid(), *os.getgroups()}))

    @classmethod
    def service(cls, user: str = SERVICE_USER) -> "Identity | None":
        """The service user (``car-runtime``) with its groups (``video`` comes from the unit's
        SupplementaryGroups), or None if it does not exist yet."""
        import grp
        import pwd

        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return None
        gids = {entry.pw_gid}
        for group in grp.getgrall():
            if user in group.gr_mem or group.gr_name == "video":
                gids.add(group.gr_gid)
        return cls(user, entry.pw_uid, frozenset(gids))


# -- small pure helpers --------------------------------------------------------------------------
def _permits(st: os.stat_result, who: Identity, bits: tuple[int, int, int]) -> bool:
    """The kernel's permission rule: root always (but for search/exec: any x bit); else the
    owner class, the group class or the others class, whichever applies first."""
    if who.uid == 0:
        return bits[0] != stat.S_IXUSR or bool(st.st_mode & 0o111) or stat.S_ISDIR(st.st_mode)
    if st.st_uid == who.uid:
        return bool(st.st_mode & bits[0])
    if st.st_gid in who.gids:
        return bool(st.st_mode & bits[1])
    return bool(st.st_mode & bits[2])


def may_write(st: os.stat_result, who: Identity) -> bool:
    return _permits(st, who, (stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH))


def may_read(st: os.stat_result, who: Identity) -> bool:
    return _permits(st, who, (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH))


def may_search(st: os.stat_result, who: Identity) -> bool:
    """May ``who`` pass through this folder (the x bit of a directory)?"""
    return _permits(st, who, (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH))


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """``(model name, flags)`` of the first CPU in ``/proc/cpuinfo``."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return model or "unknown CPU", flags


def parse_unit_exec(text: str) -> str | None:
    """The executable of a unit's first ``ExecStart=``."""
    for line in text.splitlines():
        if line.strip().startswith("ExecStart="):
            words = shlex.split(line.split("=", 1)[1])
            if words:
                return words[0].lstrip("-@:+!")
    return None


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.0f} MB" if nbytes < 10e9 else f"{nbytes / 1e9:,.1f} GB"


# -- checks (pure) -------------------------------------------------------------------------------
def check_machine(on_car: bool, why: str) -> Check:
    if on_car:
        return Check("machine", Level.OK, f"a DeepRacer ({why}): missing hardware is an error",
                     details={"on_car": True})
    return Check("machine", Level.OK, "not a DeepRacer (no stock PWM chip, no deepracer-core "
                 "unit): missing camera/PWM are only warnings", details={"on_car": False})


def check_python(version: Sequence[int], glibc: str | None) -> Check:
    v = tuple(version[:3])
    text = f"Python {'.'.join(map(str, v))}"
    details = {"python": ".".join(map(str, v)), "glibc": glibc}
    if v[:2] < PYTHON_TESTED[0]:
        return Check("python", Level.FAIL, f"{text} is too old", "use Python 3.10-3.12 (on the "
                     "stock 20.04 image: `uv venv --python 3.11`, see the README)", details)
    if glibc is None:
        level, libc = Level.WARN, "not glibc (musl?)"
        fix = "use a glibc Linux (Ubuntu 20.04+): the OpenVINO wheels need glibc"
    elif _version_tuple(glibc) < GLIBC_NEEDED:
        level, libc = Level.FAIL, f"glibc {glibc}"
        fix = "the wheels need glibc 2.28 or newer: use Ubuntu 20.04 or newer"
    else:
        level, libc, fix = Level.OK, f"glibc {glibc}", ""
    if level is Level.OK and v[:2] > PYTHON_TESTED[1]:
        return Check("python", Level.WARN, f"{text}, {libc}: newer than tested (3.10-3.12)",
                     "if a dependency has no wheel for it, use Python 3.12", details)
    return Check("python", level, f"{text}, {libc}", fix, details)


def check_cpu(model: str, flags: Iterable[str], openvino_version: str | None) -> Check:
    flags = frozenset(flags)
    have = {f: f in flags for f in ("sse4_2", "avx", "avx2", "avx512f")}
    listed = ", ".join(name.upper().replace("_", ".") for name, ok in have.items() if ok) or "none"
    details = {"model": model, **have, "openvino": openvino_version}
    ov = f"OpenVINO {openvino_version}" if openvino_version else "OpenVINO (not installed)"
    major = _version_tuple(openvino_version or "0")[0] if openvino_version else 0
    if not flags:
        return Check("cpu", Level.WARN, f"{model}: cannot read the CPU flags",
                     "check /proc/cpuinfo", details)
    if not have["sse4_2"]:
        return Check("cpu", Level.FAIL, f"{model} ({listed}): no SSE4.2, which OpenVINO's CPU "
                     "plugin needs", "use a CPU with SSE4.2 (every DeepRacer has it)", details)
    if not have["avx2"]:
        if major >= OPENVINO_AVX2_FROM:
            return Check(
                "cpu", Level.WARN,
                f"{model} ({listed}; no AVX2, like the car's Atom): {ov} officially needs AVX2 "
                "(since 2026.0); it may work today but can stop with any release",
                f"pip install '{OPENVINO_PIN}' (2025.4 is the last line that supports SSE4.2 "
                "Atoms)", details)
        return Check("cpu", Level.OK, f"{model} ({listed}; no AVX2, like the car's Atom): "
                     f"supported by {ov} (2025.4 is the last line for SSE4.2; do not upgrade "
                     "to 2026)", details=details)
    return Check("cpu", Level.OK, f"{model} ({listed}): supported by {ov}", details=details)


def check_openvino(probe: dict[str, Any]) -> Check:
    """From the probe child: version, devices, CPU capabilities; or why it failed."""
    if probe.get("crash"):
        return Check("openvino", Level.FAIL, f"OpenVINO crashed: {probe['crash']}",
                     probe.get("crash_fix", f"pip install '{OPENVINO_PIN}'"), probe)
    if probe.get("error"):
        return Check("openvino", Level.FAIL, f"OpenVINO does not load: {probe['error']}",
                     f"pip install '{OPENVINO_PIN}'", probe)
    devices = probe.get("devices") or []
    text = (f"OpenVINO {probe.get('version', '?')}: devices {', '.join(devices) or 'none'}; CPU "
            f"{probe.get('cpu_name', '?')} ({', '.join(probe.get('cpu_capabilities', []))})")
    if "CPU" not in devices:
        return Check("openvino", Level.FAIL, text, "OpenVINO's CPU plugin is missing: "
                     f"pip install --force-reinstall '{OPENVINO_PIN}'", probe)
    return Check("openvino", Level.OK, text, details=probe)


def check_config(path: Path | None, error: str | None) -> Check:
    if error:
        return Check("config", Level.FAIL, f"{path}: {error}",
                     "fix the file (every key is explained in config.example.yaml); the checks "
                     "below use the defaults", {"path": str(path)})
    if path is None:
        return Check("config", Level.OK, "no config file: the defaults (and --model) are checked",
                     details={"path": None})
    return Check("config", Level.OK, f"{path} is valid", details={"path": str(path)})


def check_cameras(nodes: Sequence[str], cameras: Sequence[Any], on_car: bool) -> Check:
    """``nodes``: the /dev/video* found; ``cameras``: their :class:`~car_runtime.vision.v4l2.CameraInfo`."""
    details = {"nodes": list(nodes), "cameras": [c.to_json() for c in cameras]}
    missing = Level.FAIL if on_car else Level.WARN
    capture = [c for c in cameras if c.captures]
    if not nodes:
        return Check("camera", missing, "no camera (no /dev/video*)",
                     "plug the camera in (USB) and check `lsusb`" if on_car else
                     "fine on a laptop: give frames with --camera VIDEO|FOLDER", details)
    if not capture:
        reasons = "; ".join(f"{c.path}: {c.error or 'not a capture device'}" for c in cameras)
        denied = any("permission" in c.error for c in cameras)
        fix = ("add yourself to group video (`sudo usermod -aG video $USER`, log in again) or use "
               "sudo" if denied else "plug the camera in; another program may hold it")
        return Check("camera", missing, f"no usable camera ({reasons})", fix, details)
    fourcc, w, h, fps = CAMERA_MODE
    parts = []
    for c in capture:
        modes = []
        for f in c.formats:
            sizes = ", ".join(f"{m.width}x{m.height}@{'/'.join(f'{r:g}' for r in m.fps[:3])}"
                              for m in f.modes[:4])
            modes.append(f"{f.fourcc} {sizes}" + (" ..." if len(f.modes) > 4 else ""))
        parts.append(f"{c.path} {c.card}: {'; '.join(modes) or 'no formats listed'}")
    text = " | ".join(parts)
    if not any(c.offers(fourcc, w, h, fps) for c in capture):
        return Check("camera", Level.WARN, text, f"no camera offers {fourcc} {w}x{h} at {fps:g} "
                     "fps (the stock mode): car-runtime falls back to raw frames, which cost "
                     "more CPU; use the DeepRacer camera", details)
    return Check("camera", Level.OK, text, details=details)


def check_output(spec_text: str, facts: dict[str, Any], on_car: bool) -> Check:
    """The configured output: sysfs PWM chip, channels, GPIO and who may write them; a serial
    port; or a record file (no hardware)."""
    kind = facts.get("kind")
    if kind == "record":
        return Check("pwm", Level.OK, f"output {spec_text}: pulses go to a file, no hardware",
                     details=facts)
    missing = Level.FAIL if on_car else Level.WARN
    if kind == "serial":
        port = facts["port"]
        if not facts.get("exists", True):
            return Check("pwm", missing, f"serial port {port} not found",
                         "plug the servo controller in; `ls /dev/ttyACM*`", facts)
        if facts.get("me") is False:
            return Check("pwm", Level.FAIL, f"serial port {port}: {facts['user']} may not write it",
                         "add yourself to group dialout (`sudo usermod -aG dialout $USER`)",
                         facts)
        return Check("pwm", Level.OK, f"serial port {port}", details=facts)
    if facts.get("error"):
        return Check("pwm", missing, facts["error"],
                     "fine on a laptop: use --output record: (or record:FILE)" if not on_car
                     else "check the PWM driver (`ls /sys/class/pwm`)", facts)
    chip, npwm = facts["chip"], facts["npwm"]
    text = f"{chip} ({npwm} channels)"
    bad_channels = [c for c in facts["channels"] if npwm is not None and c["channel"] >= npwm]
    if bad_channels:
        return Check("pwm", Level.FAIL, f"{text}: channel {bad_channels[0]['channel']} does not "
                     "exist", "fix motor=/servo= in the output spec", facts)
    state = ", ".join(f"pwm{c['channel']} ({c['role']}) {'exported' if c['exported'] else 'not exported'}"
                      for c in facts["channels"])
    if facts.get("gpio") is not None:
        g = facts["gpio"]
        state += f", GPIO {g['number']} {'exported' if g['exported'] else 'not exported'}"
    me = all(f["me"] for f in facts["files"])
    service = facts.get("service")
    svc = None if service is None else all(f["service"] for f in facts["files"])
    who = facts["user"]
    if me:
        extra = "" if svc in (None, True) else (
            f"; the service user {SERVICE_USER} may NOT (udev rule missing: sudo car-runtime "
            "install-service)")
        level = Level.OK if svc in (None, True) else Level.WARN
        return Check("pwm", level, f"{text}: {state}; {who} may write them{extra}",
                     "" if level is Level.OK else "sudo car-runtime install-service (installs "
                     "the udev rule and reloads udev)", facts)
    denied = next(f["path"] for f in facts["files"] if not f["me"])
    if svc:
        return Check("pwm", Level.WARN, f"{text}: {state}; {who} may not write {denied} (the "
                     f"service user {SERVICE_USER} may)", "run by hand with sudo, or join the "
                     "group: sudo usermod -aG car-runtime $USER (log in again)", facts)
    return Check("pwm", Level.FAIL, f"{text}: {state}; {who} may not write {denied}",
                 "install the udev rule: sudo car-runtime install-service (or run with sudo)",
                 facts)


def check_calibration(path: str, error: str | None, found: bool, summary: str) -> Check:
    details = {"path": path, "found": found}
    if error:
        return Check("calibration", Level.FAIL, error, "fix or recreate it: sudo car-runtime "
                     f"calibrate --file {path} (or --reset-defaults)", details)
    if not found:
        return Check("calibration", Level.WARN, f"{path} not found: the stock defaults are used",
                     f"calibrate on a stand: sudo car-runtime calibrate --file {path}", details)
    return Check("calibration", Level.OK, f"{path}: {summary}", details=details)


def check_stock(enabled: bool, running: Sequence[str]) -> Check:
    details = {"enabled": enabled, "running": list(running)}
    if running:
        return Check("stock", Level.FAIL, f"the stock stack ({STOCK_UNIT}) is running "
                     f"({running[0]}): it holds the camera and the PWM",
                     "sudo systemctl disable --now deepracer-core", details)
    if enabled:
        return Check("stock", Level.WARN, f"the stock stack ({STOCK_UNIT}) is enabled at boot "
                     "(not running now): it will take the camera and the PWM",
                     "sudo systemctl disable deepracer-core", details)
    return Check("stock", Level.OK, "the stock stack (deepracer-core) is not running or enabled",
                 details=details)


def check_service(unit_text: str | None, enabled: bool, running: Sequence[str], this_exe: str,
                  on_car: bool) -> Check:
    details = {"installed": unit_text is not None, "enabled": enabled, "running": list(running)}
    if unit_text is None:
        if on_car:
            return Check("service", Level.WARN, "car-runtime.service is not installed",
                         "sudo car-runtime install-service (to start at boot)", details)
        return Check("service", Level.OK, "car-runtime.service is not installed (not needed "
                     "off the car)", details=details)
    exe = parse_unit_exec(unit_text)
    details["exec"] = exe
    state = (f"installed, {'enabled' if enabled else 'not enabled'}, "
             f"{'running (' + running[0] + ')' if running else 'not running'}")
    if not exe or not os.access(exe, os.X_OK):
        return Check("service", Level.FAIL, f"car-runtime.service {state}, but its ExecStart "
                     f"{exe} does not exist", "re-run: sudo car-runtime install-service", details)
    if this_exe and os.path.realpath(exe) != os.path.realpath(this_exe):
        return Check("service", Level.WARN, f"car-runtime.service {state}; it runs {exe}, not "
                     f"this {this_exe}", "re-run install-service from the car-runtime you want "
                     "the service to use", details)
    return Check("service", Level.OK, f"car-runtime.service {state}", details=details)


def check_access(facts: Sequence[dict[str, Any]], user: str | None) -> Check:
    """May the service user write what its config makes it write, and read its password
    file? ``facts``: from :func:`access_facts`; ``user``: None when there is no service user.
    ❌ when the service cannot start (recordings folder, password file), ⚠️ when only a
    cockpit action would fail (upload, calibration save)."""
    details = {"user": user, "paths": list(facts)}
    if user is None:
        return Check("access", Level.OK, f"no {SERVICE_USER} user (install-service creates it): "
                     "its file access is not checked", details=details)
    if not facts:
        return Check("access", Level.OK, f"the config makes {user} write nothing but its state "
                     "folder", details=details)
    bad = [f for f in facts if not f["ok"]]
    if not bad:
        names = ", ".join(f"{f['what']} {f['path']}" for f in facts)
        return Check("access", Level.OK, f"{user} may write/read what it needs: {names}",
                     details=details)
    level = Level.FAIL if any(f["fatal"] for f in bad) else Level.WARN
    fixable = [f["by_hand"] for f in bad if f["install_fixes"]]
    other = [f["by_hand"] for f in bad if not f["install_fixes"]]
    fix = "; ".join(other)
    if fixable:
        fix = ("sudo car-runtime install-service (creates and grants what the config needs), "
               "or by hand: " + "; ".join(fixable) + (f"; and {fix}" if fix else ""))
    return Check("access", level, f"{user}: " + "; ".join(
        f"{f['what']} {f['path']}: {f['problem']}" for f in bad), fix, details)


def check_sandbox(unit_text: str | None, needed: Sequence[Any]) -> Check:
    """Does the installed unit's ReadWritePaths (and StateDirectory) cover every path the
    config makes the service write (``needed``: :class:`~car_runtime.service_access.WritePath`)?"""
    from car_runtime.service_access import path_problem, uncovered, unit_writable_paths

    if unit_text is None:
        return Check("sandbox", Level.OK, f"{SERVICE_UNIT} is not installed: nothing to compare")
    allowed = unit_writable_paths(unit_text)
    details = {"allowed": allowed, "needed": [wp.path for wp in needed]}
    unusable = [p for p in (path_problem(wp) for wp in needed) if p]
    if unusable:
        return Check("sandbox", Level.WARN, "; ".join(unusable), "fix the config, then re-run: "
                     "sudo car-runtime install-service", details)
    missing = uncovered(needed, allowed)
    if missing:
        names = ", ".join(f"{wp.key} {wp.path}" for wp in missing)
        return Check("sandbox", Level.WARN, f"{SERVICE_UNIT} may not write {names} (it may "
                     f"write {' '.join(allowed) or 'nothing'}): the config changed since "
                     "install-service rendered the unit",
                     "re-run: sudo car-runtime install-service (then sudo systemctl restart "
                     "car-runtime)", details)
    return Check("sandbox", Level.OK, f"{SERVICE_UNIT} may write every path its config needs "
                 f"({' '.join(allowed)})", details=details)


def check_disk(items: Sequence[tuple[str, str, float | None, float, float]]) -> Check:
    """``items``: (what, path, free bytes or None if unknown, fail below MB, warn below MB)."""
    level, parts, fixes = Level.OK, [], []
    for what, path, free, fail_mb, warn_mb in items:
        if free is None:
            parts.append(f"{what} {path}: unknown")
            continue
        parts.append(f"{what} {path}: {_mb(free)} free")
        if free < fail_mb * 1e6:
            level = Level.FAIL
            fixes.append(f"free space for {what} (needs {fail_mb:g} MB)")
        elif free < warn_mb * 1e6 and level is Level.OK:
            level = Level.WARN
            fixes.append(f"{what}: less than {warn_mb:g} MB left, delete old files")
    return Check("disk", level, "; ".join(parts), "; ".join(fixes),
                 {"items": [dict(zip(("what", "path", "free_bytes", "fail_mb", "warn_mb"), i))
                            for i in items]})


def check_model(model: str | None, probe: dict[str, Any]) -> Check:
    if not model:
        return Check("model", Level.WARN, "no model configured",
                     "set model: in /etc/car-runtime/config.yaml, or pass --model PATH")
    if probe.get("crash"):
        return Check("model", Level.FAIL, f"{model}: OpenVINO crashed loading it ({probe['crash']})",
                     probe.get("crash_fix", f"pip install '{OPENVINO_PIN}'"), probe)
    if probe.get("model_error"):
        return Check("model", Level.FAIL, probe["model_error"], "see the message; `car-runtime "
                     "inspect MODEL` shows what the model needs", probe)
    info = probe.get("model") or {}
    if not info:
        return Check("model", Level.FAIL, f"{model}: not checked ({probe.get('error', '?')})",
                     "see the openvino line", probe)
    kernels = "; ".join(f"{op} {'/'.join(k)}" for op, k in info.get("kernels", {}).items())
    return Check("model", Level.OK,
                 f"{info['name']} ({info['source']}): {info['action_space']}, {info['outputs']} "
                 f"outputs, ready in {info['load_s']:.2f} s; kernels: {kernels or 'not reported'}",
                 details=info)


def check_speed(probe: dict[str, Any], camera_fps: float) -> Check:
    bench = probe.get("bench")
    if not bench:
        return Check("speed", Level.WARN, f"not measured ({probe.get('bench_skipped', 'no model')})",
                     "car-runtime bench --model MODEL")
    pct = 100.0 * bench["p99_total_ms"] / (1e3 / camera_fps)
    text = (f"{bench['verdict']} (p50 {bench['p50_total_ms']:.2f} ms, infer p50 "
            f"{bench['p50_infer_ms']:.2f} ms, {bench['frames']} frames)")
    if pct >= 100:
        return Check("speed", Level.WARN, text, "frames will be skipped: try `car-runtime bench "
                     "--sweep` for a faster setting, or a smaller model", bench)
    if pct >= 50:
        return Check("speed", Level.WARN, text, "little headroom: close other programs; "
                     "`car-runtime bench --sweep` finds the fastest setting", bench)
    return Check("speed", Level.OK, text, details=bench)


# -- gatherers (read the system under Roots) -----------------------------------------------------
def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def stock_pwm_chip(roots: Roots) -> Path | None:
    pwm = roots.sys / "class" / "pwm"
    try:
        for p in sorted(pwm.iterdir()):
            if p.is_symlink() and STOCK_PCI_DEVICE in os.readlink(p):
                return p
    except OSError:
        pass
    return None


def detect_car(roots: Roots) -> tuple[bool, str]:
    if stock_pwm_chip(roots) is not None:
        return True, f"PWM chip on PCI {STOCK_PCI_DEVICE}"
    if unit_file(roots, STOCK_UNIT) is not None:
        return True, f"{STOCK_UNIT} is installed"
    return False, ""


def unit_file(roots: Roots, unit: str) -> Path | None:
    for folder in (roots.etc / "systemd" / "system", roots.etc.parent / "lib" / "systemd" / "system",
                   roots.etc.parent / "usr" / "lib" / "systemd" / "system"):
        if (folder / unit).is_file():
            return folder / unit
    return None


def unit_enabled(roots: Roots, unit: str) -> bool:
    """``systemctl enable`` links the unit into a ``*.wants`` folder under /etc/systemd/system
    (the link may point outside a mounted tree: its presence is what counts)."""
    try:
        folders = list((roots.etc / "systemd" / "system").iterdir())
    except OSError:
        return False
    return any(d.name.endswith(".wants") and os.path.lexists(d / unit) for d in folders)


def processes(roots: Roots) -> list[tuple[int, list[str]]]:
    found = []
    try:
        entries = list(roots.proc.iterdir())
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        if argv:
            found.append((int(entry.name), argv))
    return sorted(found)


def stock_processes(procs: Sequence[tuple[int, list[str]]]) -> list[str]:
    return [f"pid {pid}: {' '.join(argv)[:120]}" for pid, argv in procs
            if any("/opt/aws/deepracer" in a or "deepracer_launcher" in a for a in argv)]


def service_processes(procs: Sequence[tuple[int, list[str]]]) -> list[str]:
    own = os.getpid()
    return [f"pid {pid}" for pid, argv in procs if pid != own
            and any(Path(a).name == "car-runtime" for a in argv[:2]) and "run" in argv
            and "/etc/car-runtime/config.yaml" in argv]


def video_nodes(roots: Roots) -> list[str]:
    try:
        names = [p.name for p in roots.dev.iterdir() if re.fullmatch(r"video\d+", p.name)]
    except OSError:
        return []
    return [str(roots.dev / n) for n in sorted(names, key=lambda n: int(n[5:]))]


def _file_access(path: Path, me: Identity, service: Identity | None) -> dict[str, Any]:
    try:
        st = path.stat()
    except OSError:
        return {"path": str(path), "me": False, "service": False if service else None}
    return {"path": str(path), "me": may_write(st, me),
            "service": may_write(st, service) if service else None}


def _blocked_ancestor(path: Path, who: Identity) -> Path | None:
    """The first folder above ``path`` that ``who`` may not pass through, if any."""
    for parent in reversed(path.parents):
        try:
            if not may_search(parent.stat(), who):
                return parent
        except OSError:
            return None
    return None


def access_facts(cfg: RunConfig, who: Identity) -> list[dict[str, Any]]:
    """For each path the config makes the service write (and its password file): may ``who``
    use it; if not, why, whether ``install-service`` fixes it, and the command by hand."""
    from car_runtime.service_access import write_paths

    user = who.name
    out = []
    items = [(wp.what, wp.path, wp.kind) for wp in write_paths(cfg)]
    if cfg.web is not None:
        items.append(("web password file", cfg.web_password_file, "secret"))
    for what, text, kind in items:
        path = Path(text)
        fact: dict[str, Any] = {"what": what, "path": text, "kind": kind, "ok": False,
                                "fatal": kind == "secret" or what == "recordings",
                                "install_fixes": True, "problem": "", "by_hand": ""}
        try:
            st = path.stat()
        except FileNotFoundError:
            st = None
        except OSError as exc:
            fact.update(problem=f"cannot look at it ({exc.strerror})", install_fixes=False,
                        by_hand=f"check the folders above it: ls -ld {path.parent}")
            out.append(fact)
            continue
        blocked = _blocked_ancestor(path, who)
        if blocked is not None:
            fact.update(problem=f"{user} may not enter {blocked}", install_fixes=False,
                        by_hand=f"sudo chmod o+x {blocked}")
        elif st is None and kind == "dir":
            fact.update(problem="does not exist",
                        by_hand=f"sudo install -d -o {user} -g {user} {path}")
        elif st is None and kind == "file":
            parent_ok = path.parent.is_dir() and may_write(path.parent.stat(), who)
            fact.update(ok=parent_ok, problem="does not exist, and the cockpit may not create it",
                        by_hand=f"sudo car-runtime calibrate --file {path} --reset-defaults "
                        f"&& sudo chgrp {user} {path} && sudo chmod g+rw {path}")
        elif st is None:
            fact.update(problem="does not exist: the service cannot start with the cockpit on",
                        by_hand=f"sudo car-runtime web-password --owner {user}")
        elif kind == "dir" and not stat.S_ISDIR(st.st_mode):
            fact.update(problem="is not a folder", install_fixes=False,
                        by_hand=f"move {path} away")
        elif kind == "dir" and not (may_write(st, who) and may_search(st, who)):
            fact.update(problem=f"{user} may not write it", by_hand=f"sudo chown {user}:{user} {path}")
        elif kind == "file" and not (may_write(st, who) and may_read(st, who)):
            fact.update(problem=f"{user} may not rewrite it (the cockpit cannot save)",
                        by_hand=f"sudo chgrp {user} {path} && sudo chmod g+rw {path}")
        elif kind == "secret" and not may_read(st, who):
            fact.update(problem=f"{user} may not read it: the service cannot start",
                        by_hand=f"sudo chown {user}:{user} {path}")
        else:
            fact["ok"] = True
        out.append(fact)
    return out


def output_facts(spec_text: str, roots: Roots, me: Identity,
                 service: Identity | None) -> dict[str, Any]:
    """What the output spec needs on this machine and who may write it."""
    from car_runtime.actuation.output import parse_output_spec

    spec = parse_output_spec(spec_text)
    opts = dict(spec.options)
    if spec.kind == "record":
        return {"kind": "record"}
    if spec.kind == "serial":
        port = spec.target
        if "://" in port:  # loop://, socket:// ...: nothing to check on this machine
            return {"kind": "serial", "port": port, "user": me.name}
        p = Path(port)
        facts: dict[str, Any] = {"kind": "serial", "port": port, "user": me.name,
                                 "exists": p.exists()}
        if p.exists():
            facts["me"] = may_write(p.stat(), me)
        return facts
    from car_runtime.actuation.sysfs_pwm import find_chip
    from car_runtime.errors import HardwareError

    default_root = "/sys/class/pwm"
    root = Path(spec.target)
    if str(root) == default_root:
        root = roots.sys / "class" / "pwm"
    facts = {"kind": "sysfs", "root": str(root), "user": me.name,
             "service": service.name if service else None}
    try:
        chip = find_chip(root, opts.get("chip"))
    except HardwareError as exc:
        facts["error"] = str(exc).split(";")[0]
        return facts
    npwm_text = read_text(chip / "npwm")
    npwm = int(npwm_text) if npwm_text and npwm_text.strip().isdigit() else None
    facts.update(chip=str(chip), npwm=npwm, channels=[], files=[])
    for role, key, default in (("motor", "motor", 0), ("servo", "servo", 1)):
        ch = int(opts.get(key, default))
        d = chip / f"pwm{ch}"
        exported = d.is_dir()
        facts["channels"].append({"role": role, "channel": ch, "exported": exported})
        targets = [d / a for a in ("period", "duty_cycle", "enable")] if exported else [chip / "export"]
        facts["files"] += [_file_access(t, me, service) for t in targets]
    if "gpio" in opts:
        n = int(opts["gpio"])
        gpio_root = roots.sys / "class" / "gpio"
        d = gpio_root / f"gpio{n}"
        facts["gpio"] = {"number": n, "exported": d.is_dir()}
        targets = [d / "direction", d / "value"] if d.is_dir() else [gpio_root / "export"]
        facts["files"] += [_file_access(t, me, service) for t in targets]
    facts["files"] = list({f["path"]: f for f in facts["files"]}.values())
    return facts


def free_bytes(path: str | Path) -> float | None:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return float(shutil.disk_usage(p).free)
    except OSError:
        return None


def glibc_version() -> str | None:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        text = None
    if text and text.startswith("glibc "):
        return text.split()[1]
    name, version = platform.libc_ver()
    return version if name == "glibc" and version else None


def installed_openvino() -> str | None:
    """OpenVINO's version from its package metadata (no import: it may not run on this CPU)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openvino")
    except PackageNotFoundError:
        return None


# -- the OpenVINO probe (a child process) --------------------------------------------------------
def probe_main(request: dict[str, Any]) -> dict[str, Any]:
    """Runs in the child: OpenVINO's devices, and with a model, load it as ``run`` does, list
    the kernels OpenVINO selected, and bench it on the bundled footage."""
    import logging

    logging.getLogger("car_runtime").setLevel(logging.WARNING)
    out: dict[str, Any] = {}
    try:
        from car_runtime.model.policy import import_openvino, shared_core

        ov = import_openvino()
    except Exception as exc:  # noqa: BLE001 - report any import failure
        return {"error": f"{type(exc).__name__}: {exc}"}

    c = shared_core()
    out["version"] = ov.get_version().split("-")[0]
    out["devices"] = list(c.available_devices)
    try:
        out["cpu_name"] = str(c.get_property("CPU", "FULL_DEVICE_NAME"))
        out["cpu_capabilities"] = [str(x) for x in c.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception:  # noqa: BLE001
        pass
    model = request.get("model")
    if not model:
        return out
    from car_runtime import bench
    from car_runtime.errors import CarRuntimeError

    settings = bench.BenchSettings(model=model, device=request["device"],
                                   precision=request["precision"], threads=request.get("threads"),
                                   frames_count=max(1, request["bench_frames"]),
                                   warmup=request.get("warmup", 10))
    try:
        loaded = bench.load(settings)
    except CarRuntimeError as exc:
        out["model_error"] = str(exc)
        return out
    try:
        meta = loaded.metadata
        out["model"] = {
            "name": loaded.bundle.name, "source": f"{loaded.bundle.kind}: {loaded.bundle.member}",
            "action_space": meta.action_space_type, "outputs": meta.action_space.size,
            "load_s": loaded.load_s, "kernels": loaded.policy.kernels(),
            "compiled": loaded.policy.compiled_properties(),
        }
        if request["bench_frames"] <= 0:
            out["bench_skipped"] = "--no-bench"
            return out
        try:
            supply = bench.open_supply(None, None, channels=loaded.policy.channels,
                                       camera_fps=request["camera_fps"])
        except CarRuntimeError as exc:
            out["bench_skipped"] = str(exc)
            return out
        try:
            result = bench.measure(loaded, settings, supply)
        finally:
            supply.close()
        out["bench"] = {
            "frames": settings.frames_count,
            "p50_total_ms": result.stages["total"]["p50_ms"],
            "p99_total_ms": result.p99_total_ms(),
            "p50_infer_ms": result.stages["infer"]["p50_ms"],
            "verdict": bench.verdict(result, request["camera_fps"]),
        }
    finally:
        loaded.close()
    return out


def run_probe(request: dict[str, Any], timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Run :func:`probe_main` in a child Python; a crash (SIGILL...) or a hang becomes
    ``{"crash": ...}`` instead of taking the doctor down."""
    cmd = [sys.executable, "-m", "car_runtime.doctor", json.dumps(request)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"crash": f"no answer within {timeout_s:g} s", "crash_fix": "run `car-runtime "
                "bench --model MODEL` to see where it hangs"}
    return probe_outcome(proc.returncode, proc.stdout, proc.stderr)


def probe_outcome(returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The child's JSON, or what its death means (pure: tested for every way it can end)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if name == "SIGILL":
            return {"crash": "SIGILL, an illegal instruction: this OpenVINO needs a newer CPU "
                    "than this one", "crash_fix": f"pip install '{OPENVINO_PIN}' (the last line "
                    "that supports SSE4.2 Atoms)"}
        return {"crash": f"killed by {name}", "crash_fix": "run `car-runtime -v bench --model "
                "MODEL` to see the error"}
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    return {"crash": f"exit {returncode}: {last[:200]}", "crash_fix": "run `car-runtime -v bench "
            "--model MODEL` to see the whole error"}


# -- the whole report ------------------------------------------------------------------------------
@dataclass
class DoctorOptions:
    roots: Roots = field(default_factory=Roots)
    config: str | None = None  # None: /etc/car-runtime/config.yaml under roots.etc if present
    model: str | None = None  # overrides the config's model
    bench_frames: int = 60  # 0 = no bench
    camera_fps: float = 30.0
    me: Identity | None = None
    service: Identity | None = None
    exe: str = ""  # this car-runtime (for the service's ExecStart check)


def load_config(opts: DoctorOptions) -> tuple[RunConfig, Path | None, str | None]:
    from car_runtime.config import from_mapping, load_yaml
    from car_runtime.errors import CarRuntimeError

    path = Path(opts.config) if opts.config else opts.roots.etc / "car-runtime" / "config.yaml"
    if not opts.config and not path.is_file():
        return RunConfig(), None, None
    try:
        cfg = from_mapping(load_yaml(path))
    except CarRuntimeError as exc:
        return RunConfig(), path, str(exc)
    return cfg, path, None


def calibration_facts(path: str) -> tuple[str | None, bool, str]:
    from car_runtime.actuation.calibration import load_calibration
    from car_runtime.errors import CalibrationError

    if not Path(path).exists():
        return None, False, ""
    try:
        cal = load_calibration(path)
    except CalibrationError as exc:
        return str(exc), True, ""
    s, m = cal.servo, cal.motor
    return None, True, (f"servo {s.min_ns}/{s.mid_ns}/{s.max_ns} ({s.polarity:+d}), motor "
                        f"{m.min_ns}/{m.mid_ns}/{m.max_ns} ({m.polarity:+d}) ns")


def run_doctor(opts: DoctorOptions) -> list[Check]:
    """Every check, in the order an owner fixes things."""
    roots = opts.roots
    me = opts.me or Identity.current()
    on_car, why = detect_car(roots)
    checks = [check_machine(on_car, why), check_python(sys.version_info, glibc_version())]
    model_name, flags = parse_cpuinfo(read_text(roots.proc / "cpuinfo") or "")
    checks.append(check_cpu(model_name, flags, installed_openvino()))

    cfg, cfg_path, cfg_error = load_config(opts)
    model = opts.model or cfg.model
    request = {"model": model, "device": cfg.device, "precision": cfg.precision,
               "threads": cfg.threads, "bench_frames": opts.bench_frames,
               "camera_fps": opts.camera_fps}
    probe = run_probe(request)
    checks.append(check_openvino(probe))
    checks.append(check_config(cfg_path, cfg_error))

    from car_runtime.vision.v4l2 import describe

    nodes = video_nodes(roots)
    checks.append(check_cameras(nodes, [describe(n) for n in nodes], on_car))
    try:
        facts = output_facts(cfg.output, roots, me, opts.service)
    except Exception as exc:  # noqa: BLE001 - a bad spec is reported by the config line
        facts = {"kind": "sysfs", "error": f"output {cfg.output}: {exc}"}
    checks.append(check_output(cfg.output, facts, on_car))
    checks.append(check_calibration(cfg.calibration, *calibration_facts(cfg.calibration)))

    procs = processes(roots)
    checks.append(check_stock(unit_enabled(roots, STOCK_UNIT), stock_processes(procs)))
    unit = unit_file(roots, SERVICE_UNIT)
    unit_text = read_text(unit) if unit else None
    checks.append(check_service(unit_text, unit_enabled(roots, SERVICE_UNIT),
                                service_processes(procs), opts.exe, on_car))
    from car_runtime.service_access import write_paths

    service = opts.service
    checks.append(check_access(access_facts(cfg, service) if service else [],
                               service.name if service else None))
    checks.append(check_sandbox(unit_text, write_paths(cfg)))
    disk = [("models", cfg.models_dir, free_bytes(cfg.models_dir), *MODELS_MIN_FREE_MB)]
    if cfg.record_dir:
        disk.append(("recordings", cfg.record_dir, free_bytes(cfg.record_dir),
                     cfg.record_min_free_mb, cfg.record_min_free_mb * 5))
    checks.append(check_disk(disk))
    checks.append(check_model(model, probe))
    if model and "model" in probe:
        checks.append(check_speed(probe, opts.camera_fps))
    return checks


def format_text(checks: Sequence[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        line = f"{c.level.symbol} {c.name:<{width}}  {c.summary}"
        if c.fix and c.level is not Level.OK:
            line += f" -> {c.fix}"
        lines.append(line)
    fails = sum(c.level is Level.FAIL for c in checks)
    warns = sum(c.level is Level.WARN for c in checks)
    lines.append(f"{fails} problem(s), {warns} warning(s)" if fails or warns else "all good")
    return "\n".join(lines)


def to_json(checks: Sequence[Check]) -> dict[str, Any]:
    return {
        "ok": not any(c.level is Level.FAIL for c in checks),
        "counts": {lvl.value: sum(c.level is lvl for c in checks) for lvl in Level},
        "checks": [c.to_json() for c in checks],
    }


if __name__ == "__main__":  # the probe child: python -m car_runtime.doctor '{"model": ...}'
    print(json.dumps(probe_main(json.loads(sys.argv[1]))), flush=True)
