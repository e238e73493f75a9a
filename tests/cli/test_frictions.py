"""The frictions an owner hit walking through the README (issue 13), each through the real
console script in a subprocess: one spelling of the model argument, ``-v`` after the
subcommand, the max speed in force, zips, swapped arguments, closed pipes, ``--plot`` without
matplotlib, ``run`` disarmed, and third-party log noise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from helpers import car_runtime_cmd, extract_all

from car_runtime import data
from car_runtime.cli.main import EXIT_BROKEN_PIPE, build_parser

CALIBRATION = data.CALIBRATION / "calibration.json"


def cli(*args: object, env: dict | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*car_runtime_cmd(), *map(str, args)], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}, **kw,
    )


def one_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, exactly one ``error: ...`` line on stderr (nothing else), no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# -- the model argument --------------------------------------------------------------------------
def test_inspect_takes_model_as_flag_too(demo_model):
    positional = json.loads(cli("inspect", demo_model, "--json").stdout)
    flag = json.loads(cli("inspect", "--model", demo_model, "--json").stdout)
    positional.pop("load_s"), flag.pop("load_s")
    assert positional == flag and flag["action_space_type"] == "discrete"
    both_same = cli("inspect", demo_model, "--model", demo_model, "--json")
    assert both_same.returncode == 0, both_same.stderr


def test_inspect_model_argument_errors(demo_model, realsize_shallow_dir):
    one_error(cli("inspect"), "no model given", "--model")
    one_error(cli("inspect", demo_model, "--model", realsize_shallow_dir), "two models given")


def test_inspect_folder_names_the_file_it_loaded(realsize_shallow_dir, demo_model, tmp_path):
    first = cli("inspect", realsize_shallow_dir).stdout.splitlines()[0]
    assert first.startswith(f"model       {realsize_shallow_dir}: loaded model.pb (folder"), first
    first = cli("inspect", demo_model).stdout.splitlines()[0]
    assert ": loaded agent/model.pb (archive" in first, first
    # A folder with the model one level down: the relative path is named.
    nested = tmp_path / "export"
    shutil.copytree(realsize_shallow_dir, nested / "agent")
    shutil.move(nested / "agent" / "model_metadata.json", nested / "model_metadata.json")
    first = cli("inspect", nested).stdout.splitlines()[0]
    assert f"{nested}: loaded agent/model.pb (folder" in first, first


# -- -v after the subcommand ---------------------------------------------------------------------
@pytest.mark.parametrize("argv, verbose", [
    (["neutral"], False),
    (["-v", "neutral"], True),
    (["neutral", "-v"], True),
    (["neutral", "--verbose"], True),
    (["--verbose", "inspect", "m", "-v"], True),
])
def test_verbose_before_or_after_the_subcommand(argv, verbose):
    assert build_parser().parse_args(argv).verbose is verbose


def test_verbose_after_the_subcommand_shows_debug(demo_model):
    quiet = cli("inspect", demo_model)
    loud = cli("inspect", demo_model, "-v")
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    assert "DEBUG" not in quiet.stderr
    assert "DEBUG car_runtime.model.policy: compiled model.pb for CPU" in loud.stderr, loud.stderr


# -- third-party INFO does not leak ----------------------------------------------------------------
LOGS = """
import logging, sys
from car_runtime.cli.main import setup_logging
setup_logging(sys.argv[1] == "-v")
logging.getLogger("aiohttp.access").info("third-party info")
logging.getLogger("matplotlib.font_manager").debug("third-party debug")
logging.getLogger("rosbags").warning("third-party warning")
logging.getLogger("car_runtime.x").info("our info")
logging.getLogger("car_runtime.x").debug("our debug")
"""


def test_third_party_info_stays_quiet_unless_verbose():
    quiet = subprocess.run([sys.executable, "-c", LOGS, "-"], capture_output=True, text=True)
    assert quiet.stderr.splitlines() == [
        "WARNING rosbags: third-party warning", "INFO car_runtime.x: our info"]
    loud = subprocess.run([sys.executable, "-c", LOGS, "-v"], capture_output=True, text=True)
    assert loud.stderr.splitlines() == [
        "INFO aiohttp.access: third-party info", "WARNING rosbags: third-party warning",
        "INFO car_runtime.x: our info", "DEBUG car_runtime.x: our debug"]


# -- the max speed in force, and how to arm ---------------------------------------------------------
def test_every_command_says_which_max_speed_is_in_force(demo_model, footage_seq_dir, tmp_path):
    run = cli("run", "--model", demo_model, "--camera", footage_seq_dir, "--fps", 200,
              "--output", f"record:{tmp_path / 'r.jsonl'}", "--calibration", CALIBRATION,
              "--status-interval", 0)
    assert run.returncode == 0, run.stderr
    assert "max speed 50 % (run's default, like the stock slider" in run.stdout
    assert "disarmed: the wheels stay at neutral; to drive, start with --arm" in run.stdout
    armed = cli("run", "--model", demo_model, "--camera", footage_seq_dir, "--fps", 200,
                "--output", f"record:{tmp_path / 'a.jsonl'}", "--calibration", CALIBRATION,
                "--status-interval", 0, "--arm", "--max-speed-pct", 30)
    assert "max speed 30 %, deadline" in armed.stdout and "ARMED: the car drives" in armed.stdout
    assert "to drive" not in armed.stdout

    replay = cli("replay", "--model", demo_model, footage_seq_dir, "--end", 3)
    assert "max speed 100 % (replay's default, the model's full speed" in replay.stdout
    inspect = cli("inspect", demo_model)
    assert "max speed 100 % (inspect's default, the model's full speed" in inspect.stdout
    bench = cli("bench", "--model", demo_model, "--frames-count", 3, "--warmup", 1)
    assert "max speed 0 % (bench's default, the motor stays at neutral" in bench.stdout
    bench = cli("bench", "--model", demo_model, "--frames-count", 3, "--warmup", 1,
                "--max-speed-pct", 20)
    assert "max speed 20 %\n" in bench.stdout


# -- zips ---------------------------------------------------------------------------------------------
def _zip_of(archive: Path, dest: Path) -> Path:
    unpacked = dest.with_suffix(".d")
    with tarfile.open(archive) as tar:
        extract_all(tar, unpacked)
    with zipfile.ZipFile(dest, "w") as z:
        for f in sorted(unpacked.rglob("*")):
            if f.is_file():
                z.writestr(f.relative_to(unpacked).as_posix(), f.read_bytes())
    return dest


@pytest.mark.parametrize("name", ["model.zip", "model.tar.gz"])
def test_a_zip_says_it_is_a_zip(demo_model, tmp_path, name):
    model = _zip_of(demo_model, tmp_path / name)
    line = one_error(cli("inspect", model), f"{name} is a zip, not a tar.gz", "unzip")
    assert "pass the folder" in line
    # ...and the advice works: the unzipped folder loads.
    folder = tmp_path / "unzipped"
    zipfile.ZipFile(model).extractall(folder)
    assert cli("inspect", folder).returncode == 0


# -- swapped arguments -----------------------------------------------------------------------------
def test_swapped_model_and_input_get_a_hint(demo_model, footage_seq_dir, tmp_path):
    one_error(cli("replay", "--model", footage_seq_dir, demo_model),
              "is a folder of images, not a model", "swapped")
    video = tmp_path / "lap.mp4"
    video.write_bytes(b"\0" * 64)
    one_error(cli("run", "--model", video, "--camera", demo_model, "--output", "record:",
                  "--calibration", CALIBRATION), "is a video, not a model", "swapped")
    one_error(cli("bench", "--model", footage_seq_dir / "000000.jpg"), "is an image", "swapped")


# -- closed pipes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["calibrate", "--show", "--file", CALIBRATION],
    ["calibrate", "--show", "--json", "--file", CALIBRATION],
    ["inspect", "--json", "MODEL"],
    ["inspect", "MODEL"],
])
def test_a_closed_stdout_ends_quietly(args, demo_model):
    """``... | head`` where head has already gone: no BrokenPipeError traceback, SIGPIPE's code."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write: EPIPE for sure
    try:
        proc = subprocess.run(
            [*car_runtime_cmd(), *[str(demo_model) if a == "MODEL" else str(a) for a in args]],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    finally:
        os.close(write_end)
    assert proc.stderr == "" and proc.returncode == EXIT_BROKEN_PIPE, proc.stderr


# -- --plot without matplotlib -----------------------------------------------------------------------
def test_plot_without_matplotlib_is_the_same_error_everywhere(demo_model, footage_seq_dir, tmp_path):
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = {"PYTHONPATH": str(shadow.parent)}
    png = tmp_path / "p.png"
    bench = one_error(cli("bench", "--model", demo_model, "--frames-count", 3, "--plot", png,
                          env=env), "--plot needs matplotlib", "pip install matplotlib")
    replay = one_error(cli("replay", "--model", demo_model, footage_seq_dir, "--plot", png,
                           env=env))
    assert replay == bench and not png.exists()
