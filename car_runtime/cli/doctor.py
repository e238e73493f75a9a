"""``car-runtime doctor``: check this machine and say what to fix, one line per check.

Run it first on the car (and on a laptop, to try a model)::

    car-runtime doctor                      # reads /etc/car-runtime/config.yaml if present
    car-runtime doctor --model my-model.tar.gz
    car-runtime doctor --json               # for scripts

Each line is ✅ ok, ⚠️ a warning or ❌ a problem, with the fix. Exit status 0 when nothing is ❌,
1 otherwise. The checks live in :mod:`car_runtime.doctor`.
"""

from __future__ import annotations

import argparse

EXIT_PROBLEMS = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check Python, CPU, OpenVINO, camera, PWM, calibration, services, the service's "
             "file access, disk and the model",
        description=__doc__.split("\n\n")[0] + " Exit 0 when nothing is ❌, else 1.",
    )
    p.add_argument("--config", metavar="FILE",
                   help="run config to check (default /etc/car-runtime/config.yaml if present)")
    p.add_argument("--model", metavar="PATH",
                   help="model to load and bench (default: the config's model)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-bench", action="store_true", dest="no_bench",
                   help="load the model but do not measure its speed")
    p.add_argument("--camera-fps", type=float, default=30.0, dest="camera_fps", metavar="FPS",
                   help="camera rate for the speed verdict (default 30)")
    p.add_argument("--root", metavar="DIR",
                   help="read sys/, dev/, proc/ and etc/ under DIR instead of / (a mounted car "
                        "SD card, a test tree)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import os
    import shutil
    import sys
    from pathlib import Path

    from car_runtime import doctor
    from car_runtime.errors import ConfigError

    if not 0 < args.camera_fps <= 1000:
        raise ConfigError(f"--camera-fps must be within 0..1000, got {args.camera_fps:g}")
    exe = Path(sys.executable).parent / "car-runtime"
    opts = doctor.DoctorOptions(
        roots=doctor.Roots.under(args.root) if args.root else doctor.Roots(),
        config=args.config,
        model=args.model,
        bench_frames=0 if args.no_bench else 60,
        camera_fps=args.camera_fps,
        service=doctor.Identity.service(),
        exe=str(exe) if exe.exists() else (shutil.which("car-runtime") or ""),
    )
    if args.config and not os.path.isfile(args.config):
        raise ConfigError(f"config file {args.config} not found; pass --config PATH")
    checks = doctor.run_doctor(opts)
    if args.json:
        print(json.dumps(doctor.to_json(checks), indent=2))
    else:
        print(doctor.format_text(checks))
    return EXIT_PROBLEMS if any(c.level is doctor.Level.FAIL for c in checks) else 0
