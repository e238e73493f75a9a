"""``car-runtime inspect MODEL``: what a model needs and what it would do, without driving.

Loads the model exactly as ``run`` does (same archive checks, same OpenVINO compile), then
prints sensors, algorithm, network, the input/output tensors with shapes and layout, the action
table (angle/throttle per action at ``--max-speed-pct``) and the load/compile time. ``--image``
runs still images through the very same :class:`~car_runtime.pipeline.Pipeline` the car uses
(decode -> preprocess -> infer -> decide). ``--json`` prints one machine-readable object::

    {"sensors": [...], "training_algorithm": str, "action_space_type": "discrete"|"continuous",
     "inputs": [{"name", "shape", "layout"}], "outputs": [{"name", "shape"}],
     "actions": [{"index", "steering_angle", "speed", "angle", "throttle"}],   # discrete only
     "load_s": float,
     "decisions": [{"image", "output": [floats], "action_index": int|null,
                    "steering_angle", "speed", "angle", "throttle"}]}          # with --image

Example::

    car-runtime inspect models/demo-untrained-deep-ffc-discrete.tar.gz \\
        --image tests/data/footage/sim-demo-stills-640x480/dr-demo-1.jpg
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from car_runtime.config import MAX_SPEED_DEFAULTS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="show a model's sensors, tensors and action table; try it on images",
        description="Load a model (archive, folder, model.pb or model.xml) like `run` does and "
        "describe it. --image runs still images through the car's own decision code.",
    )
    p.add_argument("model", metavar="MODEL", nargs="?",
                   help="model.tar.gz, model folder, model.pb or model.xml (or --model MODEL)")
    p.add_argument("--model", dest="model_flag", metavar="MODEL",
                   help="the same, spelled as in run, bench and replay")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument(
        "--image", action="append", default=[], metavar="PATH",
        help="a JPEG/PNG to decide on (repeatable); stereo models: LEFT,RIGHT",
    )
    p.add_argument(
        "--max-speed-pct", type=float, default=MAX_SPEED_DEFAULTS["inspect"],
        dest="max_speed_pct", metavar="P",
        help="throttle scale 0-100 for the action table and decisions (default 100; "
             "`run` defaults to 50)",
    )
    p.add_argument("--device", default="CPU", help="OpenVINO device: CPU (default), GPU, AUTO")
    p.add_argument("--precision", default="f32", choices=("f32", "f16", "bf16"),
                   help="inference precision (default f32, as on the car)")
    p.add_argument("--preprocess", default="stock", choices=("stock", "training", "fast"),
                   help="stock (default, identical to the car) | training | fast")
    p.add_argument("--sac-squash", action="store_true", dest="sac_squash",
                   help="SAC models: tanh-squash outputs as in training (stock clips)")
    p.set_defaults(func=run)


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _image_set(spec: str, channels: int) -> tuple[bytes, ...]:
    """Read the file(s) of one ``--image`` value: one path, or ``LEFT,RIGHT`` for stereo."""
    from car_runtime.errors import SourceError

    paths = [spec] if channels == 1 else spec.split(",")
    if len(paths) != channels:
        raise SourceError(
            f"--image {spec!r}: this stereo model needs two images per --image, "
            "given as LEFT,RIGHT (left camera first)"
        )
    out = []
    for path in paths:
        try:
            out.append(Path(path).expanduser().read_bytes())
        except OSError as exc:
            raise SourceError(f"cannot read image {path}: {exc.strerror or exc}; check --image") from None
    return tuple(out)


def inspect_model(args: argparse.Namespace) -> dict[str, Any]:
    """Load the model and build the ``--json`` object (plus ``_text`` facts for the summary)."""
    from car_runtime.errors import SourceError
    from car_runtime.model.metadata import DiscreteActionSpace
    from car_runtime.model.policy import load_model
    from car_runtime.pipeline import Pipeline
    from car_runtime.timing import now_s
    from car_runtime.vision.frame import Frame

    loaded = load_model(args.model, device=args.device, precision=args.precision)
    with loaded:
        policy, meta = loaded.policy, loaded.metadata
        pipeline = Pipeline(
            policy, preprocess=args.preprocess, max_speed_pct=args.max_speed_pct,
            sac_squash=args.sac_squash,
        )
        result: dict[str, Any] = {
            "sensors": list(meta.sensors),
            "training_algorithm": meta.training_algorithm,
            "action_space_type": meta.action_space_type,
            "inputs": [{"name": policy.input.name, "shape": list(policy.input.shape),
                        "layout": policy.input.layout}],
            "outputs": [{"name": policy.output.name, "shape": list(policy.output.shape)}],
        }
        if isinstance(meta.action_space, DiscreteActionSpace):
            result["actions"] = [
                {"index": d.action_index, "steering_angle": d.steering_deg, "speed": d.speed_mps,
                 "angle": d.angle, "throttle": d.throttle}
                for d in pipeline.mapper.action_table()
            ]
        result["load_s"] = loaded.load_s
        if args.image:
            decisions = []
            for seq, spec in enumerate(args.image):
                images = _image_set(spec, policy.channels)
                try:
                    step = pipeline.step(Frame(seq=seq, t_capture_s=now_s(), images=images))
                except SourceError as exc:
                    raise SourceError(f"--image {spec}: {exc}") from None
                d = step.decision
                decisions.append({
                    "image": spec,
                    "output": [_finite_or_none(v) for v in step.output.tolist()],
                    "action_index": d.action_index,
                    "steering_angle": d.steering_deg,
                    "speed": d.speed_mps,
                    "angle": d.angle,
                    "throttle": d.throttle,
                })
            result["decisions"] = decisions
        text = {
            "source": str(loaded.bundle.source),
            "member": loaded.bundle.member,
            "kind": loaded.bundle.kind + (
                ", frozen TF graph (.pb)" if loaded.bundle.fmt == "pb" else ", OpenVINO IR"
            ),
            "network": meta.neural_network or "(not given)",
            "version": meta.version or "(not given)",
            "space": meta.action_space,
            "read_s": policy.read_s,
            "compile_s": policy.compile_s,
            "device": f"{args.device}, {args.precision}",
            "nonfinite": pipeline.mapper.nonfinite,
        }
    return {"json": result, "text": text}


def _fmt_shape(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def format_summary(info: dict[str, Any], args: argparse.Namespace) -> str:
    """The human-readable summary."""
    from car_runtime.config import describe_max_speed
    from car_runtime.model.metadata import ContinuousActionSpace

    j, t = info["json"], info["text"]
    loaded_file = "" if t["member"] == Path(t["source"]).name else f": loaded {t['member']}"
    lines = [
        f"model       {t['source']}{loaded_file} ({t['kind']})",
        f"sensors     {', '.join(j['sensors'])}",
        f"algorithm   {j['training_algorithm']}",
        f"network     {t['network']}   (metadata version {t['version']})",
        f"actions     {j['action_space_type']}",
    ]
    for inp in j["inputs"]:
        lines.append(f"input       {inp['name']}  {_fmt_shape(inp['shape'])} {inp['layout']}")
    for out in j["outputs"]:
        lines.append(f"output      {out['name']}  {_fmt_shape(out['shape'])}")
    lines.append(
        f"load        {j['load_s'] * 1e3:.0f} ms archive -> ready "
        f"(read {t['read_s'] * 1e3:.0f} ms, compile {t['compile_s'] * 1e3:.0f} ms; {t['device']})"
    )
    pct = args.max_speed_pct
    lines.append(f"speed       {describe_max_speed(pct, 'inspect')}")
    if "actions" in j:
        lines += ["", f"action table at max speed {pct:g} %:",
                  "  idx  steering_deg  speed_mps    angle  throttle"]
        for a in j["actions"]:
            lines.append(
                f"  {a['index']:>3}  {a['steering_angle']:>12.2f}  {a['speed']:>9.3f}  "
                f"{a['angle']:>7.3f}  {a['throttle']:>8.3f}"
            )
    space = t["space"]
    if isinstance(space, ContinuousActionSpace):
        lines += [
            "",
            f"continuous: steering {space.steering_low_deg:g}..{space.steering_high_deg:g} deg, "
            f"speed {space.speed_low_mps:g}..{space.speed_high_mps:g} m/s "
            f"(outputs clipped to [-1,1]{', tanh-squashed' if args.sac_squash else ''}, "
            f"max speed {pct:g} %)",
        ]
    if "decisions" in j:
        lines += ["", f"decisions ({args.preprocess} preprocessing, max speed {pct:g} %):"]
        for d in j["decisions"]:
            outs = ", ".join("nan" if v is None else f"{v:.4f}" for v in d["output"])
            idx = "-" if d["action_index"] is None else str(d["action_index"])
            lines.append(
                f"  {d['image']}: action {idx}  steering {d['steering_angle']:.2f} deg  "
                f"speed {d['speed']:.3f} m/s  angle {d['angle']:.3f}  throttle {d['throttle']:.3f}"
                f"  [output {outs}]"
            )
        if t["nonfinite"]:
            lines.append(f"  {t['nonfinite']} output(s) were not finite -> neutral (no command)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from car_runtime.errors import ConfigError

    if args.model and args.model_flag and args.model != args.model_flag:
        raise ConfigError(f"two models given ({args.model} and --model {args.model_flag}); "
                          "pass one")
    args.model = args.model or args.model_flag
    if not args.model:
        raise ConfigError("no model given; pass MODEL or --model MODEL (a model.tar.gz, "
                          "model folder, model.pb or model.xml)")
    info = inspect_model(args)
    if args.json:
        json.dump(info["json"], sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        print(format_summary(info, args))
    return 0
