"""The guardian: how fast it puts the car at neutral, what it costs, and whether a long run leaks.

    python benchmarks/guardian.py                     # all parts, a 1-minute soak
    python benchmarks/guardian.py --soak-minutes 10   # the 10-minute soak
    python benchmarks/guardian.py --only cost --json

Parts (``--only``):

- ``neutral``: ``car-runtime run --arm`` on a sysfs-shaped tree in a temp dir (real model, real
  frames at 30 fps, 100 ms deadline), then SIGSTOP or SIGKILL; the time from the signal to both
  duty files at mid, polled every 0.5 ms from outside. ``--tries`` runs of each (default 20):
  p50 / max. Only the guardian can act there (the process is frozen / gone).
- ``footprint``: the guardian's RSS and CPU per second (from /proc) while a run drives for
  ``--footprint-s`` seconds.
- ``cost``: the drive loop's per-frame cost with and without a guardian, in the same process,
  blocks taking turns (A B A B ...) on the same frames, real model, real sysfs-shaped files:
  ratio of the mean per-frame time (apply_pending + drive_one, i.e. decode -> PWM write) and of
  the actuate stage alone. Target <= 1.02x for the whole frame.
- ``soak``: two runs side by side for ``--soak-minutes`` (record: to a JSONL file, and sysfs
  with the guardian): RSS of the runtime (and the guardian) every 5 s; the slope of a least
  squares line (MB per 10 min) and the change from the first to the last minute. Target: flat
  within 1 MB.

Figures are measured on this machine as it is (other processes included): read them as ratios
and orders of magnitude, not as the car's absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "actuation"))

from actuation_fakes import FakeSysfs  # noqa: E402
from failsafe_helpers import long_frames  # noqa: E402

from car_runtime.actuation.calibration import Calibration  # noqa: E402

FOOTAGE = ROOT / "tests/data/footage/car-event-track-seq-160x120"
MODEL = ROOT / "models/demo-untrained-deep-ffc-discrete.tar.gz"
SERVO_MID, MOTOR_MID = Calibration.defaults().neutral_ns()
CLI = [sys.executable, "-m", "car_runtime.cli.main"]


def frames_dir(root: Path, repeat: int) -> Path:
    d = root / f"frames{repeat}"
    return d if d.exists() else long_frames(FOOTAGE, d, repeat)


def read_int(p: Path) -> int | None:
    try:
        return int(p.read_text())
    except (OSError, ValueError):
        return None


class Run:
    """One ``car-runtime run --arm`` on a fresh sysfs-shaped tree."""

    def __init__(self, root: Path, frames: Path, output: str = "sysfs", fps: float = 30) -> None:
        self.root = root
        # in memory (tmpfs) like the kernel's sysfs: a disk-backed O_TRUNC write can stall
        shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else root
        self.sys_dir = Path(tempfile.mkdtemp(prefix="guardian-bench-sysfs-", dir=shm))
        self.sys = FakeSysfs(self.sys_dir / "root", exported=(0, 1))
        chip = self.sys.chip()
        self.motor, self.servo = chip / "pwm0/duty_cycle", chip / "pwm1/duty_cycle"
        out = f"sysfs:{self.sys.pwm}" if output == "sysfs" else output
        self.err = open(root / "stderr.txt", "w")
        self.proc = subprocess.Popen(
            [*CLI, "run", "--model", str(MODEL), "--camera", str(frames), "--fps", str(fps),
             "--output", out, "--calibration", str(root / "none.json"), "--arm",
             "--status-interval", "0", "--max-frame-age-ms", "1000"],
            stdout=subprocess.DEVNULL, stderr=self.err)

    def driving(self) -> bool:
        m = read_int(self.motor)
        return m not in (None, 0, MOTOR_MID)

    def at_mid(self) -> bool:
        return (read_int(self.motor), read_int(self.servo)) == (MOTOR_MID, SERVO_MID)

    def wait_driving(self, timeout_s: float = 120) -> None:
        end = time.monotonic() + timeout_s
        while not self.driving():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("run did not drive: " + (self.root / "stderr.txt").read_text())
            time.sleep(0.005)
        time.sleep(0.3)

    def guardian_pid(self) -> int | None:
        for line in (self.root / "stderr.txt").read_text().splitlines():
            if "guardian pid " in line:
                return int(line.split("guardian pid ")[1].split()[0])
        return None

    def end(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()
        self.err.close()
        shutil.rmtree(self.sys_dir, ignore_errors=True)
        pid = self.guardian_pid()
        if pid is not None:  # it leaves by itself; make sure before the next try
            end = time.monotonic() + 5
            while _alive_guardian(pid) and time.monotonic() < end:
                time.sleep(0.01)


def _alive_guardian(pid: int) -> bool:
    try:
        return b"car_runtime.actuation.guardian" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def pctl(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


# -- parts -------------------------------------------------------------------------------------
def part_neutral(tmp: Path, tries: int) -> dict:
    frames = frames_dir(tmp, 4)
    out = {}
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        times = []
        for i in range(tries):
            root = tmp / f"{sig.name}-{i}"
            root.mkdir()
            run = Run(root, frames)
            try:
                run.wait_driving()
                t = time.monotonic()
                os.kill(run.proc.pid, sig)
                while not run.at_mid():
                    if time.monotonic() - t > 10:
                        raise RuntimeError(f"{sig.name}: not at mid after 10 s")
                    time.sleep(0.0005)
                times.append((time.monotonic() - t) * 1e3)
            finally:
                run.end()
        out[sig.name] = {"tries": tries, "p50_ms": round(statistics.median(times), 1),
                         "max_ms": round(max(times), 1), "min_ms": round(min(times), 1)}
        print(f"{sig.name} -> both duty files at mid: p50 {out[sig.name]['p50_ms']} ms, "
              f"max {out[sig.name]['max_ms']} ms over {tries} tries (deadline 100 ms)", flush=True)
    return out


def part_footprint(tmp: Path, seconds: float) -> dict:
    root = tmp / "footprint"
    root.mkdir()
    run = Run(root, frames_dir(tmp, 20))
    try:
        run.wait_driving()
        pid = run.guardian_pid()
        tck = os.sysconf("SC_CLK_TCK")

        def cpu_ticks(p: int) -> int:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime

        def rss_kb(p: int) -> int:
            return int(Path(f"/proc/{p}/status").read_text().split("VmRSS:")[1].split()[0])

        g0, m0, t0 = cpu_ticks(pid), cpu_ticks(run.proc.pid), time.monotonic()
        time.sleep(seconds)
        g1, m1, t1 = cpu_ticks(pid), cpu_ticks(run.proc.pid), time.monotonic()
        res = {"guardian_rss_mb": round(rss_kb(pid) / 1024, 1),
               "runtime_rss_mb": round(rss_kb(run.proc.pid) / 1024, 1),
               "guardian_cpu_ms_per_s": round((g1 - g0) / tck * 1e3 / (t1 - t0), 2),
               "runtime_cpu_ms_per_s": round((m1 - m0) / tck * 1e3 / (t1 - t0), 1),
               "seconds": round(t1 - t0, 1), "clock_tick_ms": round(1e3 / tck, 1)}
    finally:
        run.end()
    print(f"guardian: RSS {res['guardian_rss_mb']} MB (runtime {res['runtime_rss_mb']} MB), CPU "
          f"{res['guardian_cpu_ms_per_s']} ms/s (runtime {res['runtime_cpu_ms_per_s']} ms/s) "
          f"over {res['seconds']} s; /proc counts CPU in {res['clock_tick_ms']} ms ticks", flush=True)
    return res


def part_cost(tmp: Path, blocks: int, frames_per_block: int, model: Path = MODEL) -> dict:
    import cv2

    from car_runtime.actuation.guardian import GuardianLink
    from car_runtime.actuation.output import Actuator, open_output
    from car_runtime.model.policy import load_model
    from car_runtime.pipeline import Pipeline
    from car_runtime.runtime import DriveLoop
    from car_runtime.timing import now_s
    from car_runtime.vision.frame import Frame
    from car_runtime.vision.sources import ImageFolderSource

    cv2.setNumThreads(1)
    cal = Calibration.defaults()
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else tmp
    fs = FakeSysfs(Path(tempfile.mkdtemp(prefix="guardian-bench-cost-", dir=shm)) / "root",
                   exported=(0, 1))
    blobs = [p.read_bytes() for p in sorted(FOOTAGE.glob("*.jpg"))]
    per_frame = {"with": [], "without": []}
    block_p50 = {"with": [], "without": []}
    actuate = {"with": [], "without": []}
    with load_model(model) as loaded, \
            Actuator(open_output(f"sysfs:{fs.pwm}", cal), cal, deadline_s=0.1) as act, \
            ImageFolderSource(FOOTAGE) as source:
        loop = DriveLoop(source, Pipeline(loaded.policy), act, armed=True, max_frame_age_s=1.0)
        loop.apply_pending()
        seq = 0
        for b in range(blocks * 2):
            kind = "with" if b % 2 == 0 else "without"
            link = None
            if kind == "with":
                link = GuardianLink(act.output.guardian_targets(), 0.1)
                act.attach_guardian(link)
            timer = loop.pipeline.timer
            n0 = timer.frames
            block: list[int] = []
            for i in range(frames_per_block):
                seq += 1
                frame = Frame(seq=seq, t_capture_s=now_s(), images=(blobs[seq % len(blobs)],))
                t = time.perf_counter_ns()
                loop.apply_pending()
                loop.drive_one(frame)
                block.append(time.perf_counter_ns() - t)
            per_frame[kind].extend(block)
            block_p50[kind].append(statistics.median(block))
            actuate[kind].extend(timer.samples_ms("actuate")[-(timer.frames - n0):].tolist())
            if link is not None:
                act.guardian = None
                link.close()
            assert loop.state.value == "armed", "a trip during the benchmark"
    shutil.rmtree(fs.root.parent, ignore_errors=True)
    mean = {k: statistics.fmean(v) / 1e6 for k, v in per_frame.items()}
    med = {k: statistics.median(v) / 1e6 for k, v in per_frame.items()}
    act_mean = {k: statistics.fmean(v) for k, v in actuate.items()}
    # each "with" block against the "without" block right after it: drift cancels in the pair
    pair = sorted(w / wo for w, wo in zip(block_p50["with"], block_p50["without"]))
    res = {"model": model.name, "frames_each": len(per_frame["with"]), "blocks_each": blocks,
           "frame_mean_ms": {k: round(v, 4) for k, v in mean.items()},
           "frame_p50_ms": {k: round(v, 4) for k, v in med.items()},
           "ratio_frame_mean": round(mean["with"] / mean["without"], 4),
           "ratio_frame_p50": round(med["with"] / med["without"], 4),
           "ratio_block_pairs_median": round(statistics.median(pair), 4),
           "ratio_block_pairs_min_max": [round(pair[0], 4), round(pair[-1], 4)],
           "actuate_mean_ms": {k: round(v, 4) for k, v in act_mean.items()},
           "ratio_actuate_mean": round(act_mean["with"] / act_mean["without"], 4)}
    print(f"per-frame cost with/without guardian ({model.name}): mean {res['ratio_frame_mean']}x, p50 "
          f"{res['ratio_frame_p50']}x, median of {blocks} block pairs "
          f"{res['ratio_block_pairs_median']}x (pairs {pair[0]:.3f}..{pair[-1]:.3f}x) ({mean['with']:.3f} vs {mean['without']:.3f} ms, "
          f"{res['frames_each']} frames each in {blocks} alternating blocks); actuate stage alone "
          f"{res['ratio_actuate_mean']}x ({act_mean['with'] * 1e3:.1f} vs "
          f"{act_mean['without'] * 1e3:.1f} us)", flush=True)
    return res


def part_soak(tmp: Path, minutes: float) -> dict:
    repeat = int(minutes * 60 * 30 / 100) + 20  # enough frames at 30 fps
    frames = frames_dir(tmp, repeat)
    runs = {}
    for name, output in (("record", None), ("sysfs", "sysfs")):
        root = tmp / f"soak-{name}"
        root.mkdir()
        spec = f"record:{root / 'drive.jsonl'}" if name == "record" else "sysfs"
        runs[name] = Run(root, frames, output=spec)
    samples: dict[str, list[tuple[float, float]]] = {"record": [], "sysfs": [], "guardian": []}
    try:
        for r in runs.values():
            end = time.monotonic() + 120
            while "state disarmed -> armed" not in (r.root / "stderr.txt").read_text():
                if r.proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("soak run did not start")
                time.sleep(0.05)
        t0 = time.monotonic()
        gpid = runs["sysfs"].guardian_pid()
        while time.monotonic() - t0 < minutes * 60:
            t = (time.monotonic() - t0) / 60
            for name, r in runs.items():
                if r.proc.poll() is not None:
                    raise RuntimeError(f"soak run {name} ended early ({r.proc.returncode})")
                samples[name].append((t, _rss_mb(r.proc.pid)))
            samples["guardian"].append((t, _rss_mb(gpid)))
            time.sleep(5)
    finally:
        for r in runs.values():
            r.end()
    res = {}
    for name, pts in samples.items():
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        slope = _slope(xs, ys)
        first = [y for x, y in pts if x <= 1.0] or ys[:1]
        last = [y for x, y in pts if x >= xs[-1] - 1.0] or ys[-1:]
        res[name] = {"minutes": round(xs[-1], 2), "samples": len(pts),
                     "rss_start_mb": round(ys[0], 1), "rss_end_mb": round(ys[-1], 1),
                     "slope_mb_per_10min": round(slope * 10, 3),
                     "first_to_last_minute_mb": round(statistics.fmean(last)
                                                      - statistics.fmean(first), 3)}
        print(f"soak {name}: RSS {res[name]['rss_start_mb']} -> {res[name]['rss_end_mb']} MB over "
              f"{res[name]['minutes']} min; slope {res[name]['slope_mb_per_10min']} MB/10 min; "
              f"last minute - first minute {res[name]['first_to_last_minute_mb']} MB", flush=True)
    return res


def _rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def _slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("neutral", "footprint", "cost", "soak"), action="append")
    ap.add_argument("--tries", type=int, default=20)
    ap.add_argument("--footprint-s", type=float, default=10.0)
    ap.add_argument("--blocks", type=int, default=20)
    ap.add_argument("--frames-per-block", type=int, default=150)
    ap.add_argument("--soak-minutes", type=float, default=1.0)
    ap.add_argument("--cost-model", type=Path, default=MODEL,
                    help="model for the cost part (default: the bundled demo model)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    parts = args.only or ["neutral", "footprint", "cost", "soak"]
    results = {"machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="guardian-bench-") as d:
        tmp = Path(d)
        if "neutral" in parts:
            results["neutral"] = part_neutral(tmp, args.tries)
        if "footprint" in parts:
            results["footprint"] = part_footprint(tmp, args.footprint_s)
        if "cost" in parts:
            results["cost"] = part_cost(tmp, args.blocks, args.frames_per_block, args.cost_model)
        if "soak" in parts:
            results["soak"] = part_soak(tmp, args.soak_minutes)
    results["machine"]["loadavg_end"] = os.getloadavg()
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
