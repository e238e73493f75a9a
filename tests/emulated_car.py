"""The car's CPU check for CI: run the bundled and test models natively and under
``qemu-x86_64 -cpu Denverton-v2`` (a Goldmont Atom like the car's: SSE4.2, no AVX), then compare.

    python tests/emulated_car.py dump native.npz
    qemu-x86_64 -cpu Denverton-v2 python tests/emulated_car.py dump car.npz
    python tests/emulated_car.py compare native.npz car.npz

``dump`` loads every model as ``run`` does (archive/folder -> OpenVINO, f32), feeds it real car
frames through the stock preprocessing (stereo models: the frame on both cameras) and the
TensorFlow reference inputs where a model has them, and saves every output, the action chosen
and the kernels OpenVINO selected. ``compare`` fails (exit 1) on an output difference above
1e-5, a different action, an emulated run that used any AVX kernel or no SSE4.2 kernel (the
emulation was not real), or a missing model. An illegal instruction kills the emulated
``dump`` with SIGILL, which fails the CI step by itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "demo (bundled)": ROOT / "models" / "demo-untrained-deep-ffc-discrete.tar.gz",
    "shallow realsize (bundled)": ROOT / "models" / "shallow_ffc_discrete_realsize",
    "deep discrete archive": ROOT / "tests" / "data" / "models" / "deep_ffc_discrete.tar.gz",
    "continuous": ROOT / "tests" / "data" / "models" / "shallow_ffc_continuous_slim",
    "stereo": ROOT / "tests" / "data" / "models" / "shallow_stereo_discrete_slim",
    "legacy observation": ROOT / "tests" / "data" / "models" / "shallow_legacy_observation_slim",
}
FRAMES = 12
TOL = 1e-5


def dump(out_path: str) -> int:
    from car_runtime.data import FOOTAGE
    from car_runtime.model.policy import load_model
    from car_runtime.pipeline import Pipeline
    from car_runtime.timing import now_s
    from car_runtime.vision.frame import Frame

    jpegs = [p.read_bytes() for p in sorted(FOOTAGE.glob("*.jpg"))[::100 // FRAMES][:FRAMES]]
    arrays: dict[str, np.ndarray] = {}
    kernels: dict[str, dict] = {}
    for name, path in MODELS.items():
        loaded = load_model(path, precision="f32")
        with loaded:
            pipeline = Pipeline(loaded.policy, preprocess="stock", max_speed_pct=100.0)
            channels = loaded.policy.channels
            outputs, actions = [], []
            for seq, jpeg in enumerate(jpegs):
                step = pipeline.step(Frame(seq=seq, t_capture_s=now_s(), images=(jpeg,) * channels))
                outputs.append(np.array(step.output, dtype=np.float64))
                actions.append(-1 if step.decision.action_index is None
                               else step.decision.action_index)
            reference = path / "reference_io.npz" if path.is_dir() else None
            if reference is not None and reference.is_file():
                x = np.load(reference)["x"]
                loaded.policy.input_buffer[...] = x.reshape(loaded.policy.input_buffer.shape)
                outputs.append(np.array(loaded.policy.infer(), dtype=np.float64))
                actions.append(-2)
            arrays[f"{name}/outputs"] = np.stack(outputs)
            arrays[f"{name}/actions"] = np.array(actions)
            kernels[name] = loaded.policy.kernels()
        print(f"{name}: {len(outputs)} outputs, kernels {kernels[name]}", flush=True)
    np.savez(out_path, kernels=json.dumps(kernels), **arrays)
    return 0


def compare(native_path: str, car_path: str) -> int:
    native, car = np.load(native_path), np.load(car_path)
    problems = []
    car_kernels = json.loads(str(car["kernels"]))
    for name in MODELS:
        missing = [k for k in (f"{name}/outputs", f"{name}/actions") if k not in native or k not in car]
        if missing:
            problems.append(f"{name}: missing {', '.join(missing)}")
            continue
        diff = float(np.max(np.abs(native[f"{name}/outputs"] - car[f"{name}/outputs"])))
        same = bool(np.array_equal(native[f"{name}/actions"], car[f"{name}/actions"]))
        prims = sorted({p for ps in car_kernels.get(name, {}).values() for p in ps})
        print(f"{name}: max |native - car| = {diff:.2e}, actions {'equal' if same else 'DIFFER'}; "
              f"car kernels {', '.join(prims)}")
        if diff > TOL:
            problems.append(f"{name}: outputs differ by {diff:.2e} (> {TOL:g})")
        if not same:
            problems.append(f"{name}: a different action was chosen")
        if any("avx" in p for p in prims):
            problems.append(f"{name}: the emulated run used AVX kernels ({prims}): not a Goldmont")
        if not any("sse42" in p for p in prims):
            problems.append(f"{name}: no SSE4.2 kernel in the emulated run ({prims})")
    for problem in problems:
        print(f"FAIL {problem}")
    bad = len({p.split(":")[0] for p in problems})
    print(f"emulated car: {len(MODELS) - bad} model(s) identical to the native run, {bad} not")
    return 1 if problems else 0


if __name__ == "__main__":
    command, *paths = sys.argv[1:]
    sys.exit(dump(*paths) if command == "dump" else compare(*paths))
