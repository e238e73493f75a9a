"""The cockpit's recorded runs over real HTTP: a real drive loop with the real flight recorder
writing real sessions, listed, downloaded as a .tar (read back with ``tarfile`` and then with
the independent ``mcap`` reader: the same messages as the session on disk), deleted; the
session being recorded is marked and protected; names are only looked up in the listing
(traversal, control characters, symlinks refused); one download at a time per session."""

from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
from pathlib import Path

import pytest

from car_runtime.recording.catalog import list_sessions
from helpers import wait_until as wait_for
from webclient import listing
from helpers import mcap_records
from webclient import Client


def recorder_facts(car) -> dict:
    return car.controls.fact("recording")


def drive_a_session(car, c: Client, frames: int = 15) -> str:
    """Arm, record ``frames`` frames, stop, wait until the session is closed; its name."""
    assert c.post("/api/arm").status == 200
    wait_for(lambda: recorder_facts(car)["state"] == "recording"
             and recorder_facts(car)["frames"] >= frames, what="a recording session")
    name = recorder_facts(car)["session"]
    assert c.post("/api/stop").status == 200
    wait_for(lambda: recorder_facts(car)["state"] == "waiting", what="the session to close")
    return name


@pytest.fixture
def rec_car(car_factory, tmp_path):
    """A car recording into tmp_path/runs (sessions close 1 s after driving stops: long enough
    that a loaded test machine's pause between frames does not split a session; deadman off so
    the tests can arm without heartbeats)."""
    return car_factory(deadman_ms=0, record_dir=tmp_path / "runs", record_idle_close_s=1.0)


def runs(c: Client) -> dict:
    r = c.get("/api/runs")
    assert r.status == 200, r.body
    return r.json


def test_runs_are_listed_with_their_facts_and_the_recording_one_marked(rec_car, tmp_path):
    c = rec_car.client(control=True)
    first = drive_a_session(rec_car, c)
    root = tmp_path / "runs"
    # a torn session: a copy of the first, cut off mid-file, without metadata.yaml (a power cut)
    torn = root / "demo-untrained-deep-ffc-discrete-20200101-120000"
    torn.mkdir()
    data = (root / first / f"{first}.mcap").read_bytes()
    (torn / f"{torn.name}.mcap").write_bytes(data[: int(len(data) * 0.7)])
    # and one being recorded now
    assert c.post("/api/arm").status == 200
    wait_for(lambda: recorder_facts(rec_car)["state"] == "recording", what="recording")
    now = recorder_facts(rec_car)["session"]

    body = runs(c)
    assert body["dir"] == str(root) and body["recorder"]["state"] == "recording"
    by_name = {r["name"]: r for r in body["runs"]}
    assert set(by_name) == {first, torn.name, now}
    assert [by_name[n]["status"] for n in (first, torn.name, now)] == ["complete", "torn", "recording"]
    catalog = {s.name: s for s in list_sessions(root)}  # what `car-runtime runs` shows
    for name in (first, torn.name):
        run, info = by_name[name], catalog[name]
        assert run["model"] == info.model == "demo-untrained-deep-ffc-discrete"
        assert run["frames"] == info.frames and run["dropped"] == info.dropped
        assert run["size_bytes"] == info.size_bytes
        assert run["start_epoch_s"] == (None if info.start_ns is None
                                        else pytest.approx(info.start_ns / 1e9))
        assert run["duration_s"] == pytest.approx(info.duration_s, abs=0.01)
    assert by_name[first]["frames"] >= 15 and by_name[first]["dropped"] == 0
    assert by_name[torn.name]["torn_bytes"] > 0
    assert [r["name"] for r in body["runs"]][:1] == [now]  # newest first
    assert body["total_bytes"] == sum(r["size_bytes"] for r in body["runs"])
    c.post("/api/stop")


def test_a_download_is_the_session_folder_as_a_tar(rec_car, tmp_path):
    c = rec_car.client(control=True)
    name = drive_a_session(rec_car, c, frames=30)
    folder = tmp_path / "runs" / name
    r = c.get(f"/api/runs/download?name={name}")
    assert r.status == 200, r.body
    assert r.headers["Content-Type"] == "application/x-tar"
    assert r.headers["Content-Disposition"] == f'attachment; filename="{name}.tar"'
    assert int(r.headers["Content-Length"]) == len(r.body)
    with tarfile.open(fileobj=io.BytesIO(r.body)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [name, f"{name}/{name}.mcap", f"{name}/metadata.yaml"]
        assert members[0].isdir() and all(m.isfile() for m in members[1:])
        for m in members[1:]:
            assert tar.extractfile(m).read() == (folder / Path(m.name).name).read_bytes()
        tar.extractall(tmp_path / "unpacked", filter="data")
    # an independent reader sees the same bag: every message, same topic, time and bytes
    got = mcap_records(tmp_path / "unpacked" / name / f"{name}.mcap")
    assert got == mcap_records(folder / f"{name}.mcap")
    frames = [t for t, _, _ in got if t == "/inference_pkg/rl_results"]
    assert len(frames) == runs(c)["runs"][0]["frames"] >= 30
    assert {t for t, _, _ in got} >= {"/inference_pkg/rl_results", "/car_runtime/writes",
                                      "/car_runtime/settings", "/deepracer_navigation_pkg/auto_drive"}
    # the copy on the car is untouched
    assert sorted(os.listdir(folder)) == [f"{name}.mcap", "metadata.yaml"]


def test_delete_is_for_the_controller_and_never_the_session_being_recorded(rec_car, tmp_path):
    root = tmp_path / "runs"
    c = rec_car.client(control=True)
    watcher = rec_car.client()
    first = drive_a_session(rec_car, c)
    assert c.post("/api/arm").status == 200
    wait_for(lambda: recorder_facts(rec_car)["state"] == "recording", what="recording")
    now = recorder_facts(rec_car)["session"]

    r = watcher.post("/api/runs/delete", {"name": first})
    assert r.status == 409 and "controls the car" in r.error
    r = c.post("/api/runs/delete", {"name": first}, csrf=False)
    assert r.status == 403 and "CSRF" in r.error
    assert c.get(f"/api/runs/delete?name={first}").status == 405
    r = c.post("/api/runs/delete", {"name": now})
    assert r.status == 409 and "being recorded" in r.error
    r = c.get(f"/api/runs/download?name={now}")
    assert r.status == 409 and "being recorded" in r.error
    assert listing(root) == sorted([first, now])

    r = c.post("/api/runs/delete", {"name": first})
    assert r.status == 200 and r.json["message"] == f"{first} deleted"
    assert listing(root) == [now]
    assert [x["name"] for x in runs(c)["runs"]] == [now]
    r = c.post("/api/runs/delete", {"name": first})
    assert r.status == 404 and "no recorded run" in r.error
    c.post("/api/stop")


@pytest.mark.parametrize("name,status", [
    ("../runs", 400), ("..", 400), ("a/b", 400), ("/etc", 400), ("..%2F..%2Fetc", 400),
    ("x%00y", 400), ("x%0Ay", 400), ("%1B%5B31m", 400), (".hidden", 400), ("", 400),
    ("nope-20200101-000000", 404), ("metadata.yaml", 404),
])
def test_names_are_only_looked_up_in_the_listing(rec_car, tmp_path, name, status):
    c = rec_car.client(control=True)
    first = drive_a_session(rec_car, c, frames=5)
    before = listing(tmp_path / "runs")
    r = c.get(f"/api/runs/download?name={name}")
    assert r.status == status, (name, r.status, r.body)
    assert r.headers["Content-Type"].startswith("application/json") and r.error
    from urllib.parse import unquote

    r = c.post("/api/runs/delete", {"name": unquote(name)})
    assert r.status == status, (name, r.status, r.body)
    assert listing(tmp_path / "runs") == before and first in before


def test_symlinks_are_not_followed(rec_car, tmp_path):
    root = tmp_path / "runs"
    c = rec_car.client(control=True)
    first = drive_a_session(rec_car, c, frames=5)
    # a linked session folder (pointing at a bag elsewhere) is not listed, sent or deleted
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(root / first, elsewhere / "other-20200101-000000")
    (root / "linked-20200101-000000").symlink_to(elsewhere / "other-20200101-000000")
    assert "linked-20200101-000000" not in {r["name"] for r in runs(c)["runs"]}
    assert c.get("/api/runs/download?name=linked-20200101-000000").status == 404
    assert c.post("/api/runs/delete", {"name": "linked-20200101-000000"}).status == 404
    assert (elsewhere / "other-20200101-000000" / "metadata.yaml").is_file()
    # a session holding a linked file is listed but not sent (it could point anywhere)
    (root / first / "extra.yaml").symlink_to("/etc/passwd")
    r = c.get(f"/api/runs/download?name={first}")
    assert r.status == 403 and "symbolic link" in r.error and "extra.yaml" in r.error
    assert b"root:" not in r.body


def raw_download(port: int, cookie: str, name: str) -> socket.socket:
    """Start a download and stop reading after the response head (a stalled client)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(f"GET /api/runs/download?name={name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              f"Cookie: car_session={cookie}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def test_one_download_at_a_time_per_session_and_a_stalled_client_holds_no_thread(rec_car, tmp_path):
    root = tmp_path / "runs"
    c = rec_car.client(control=True)
    a = drive_a_session(rec_car, c, frames=5)
    b = drive_a_session(rec_car, c, frames=5)
    third = root / "demo-untrained-deep-ffc-discrete-20200101-000000"
    shutil.copytree(root / a, third)
    for folder in (root / a, root / b):  # large enough that the socket buffers fill up
        with open(folder / "zz-padding.bin", "wb") as fh:
            fh.truncate(64 * 2**20)  # sparse: no disk used
    cookie = c.cookies["car_session"]
    stalled = raw_download(rec_car.port, cookie, a)
    try:
        r = c.get(f"/api/runs/download?name={a}")
        assert r.status == 409 and "being downloaded" in r.error
        assert c.post("/api/runs/delete", {"name": a}).status == 409
        assert {x["name"]: x["downloading"] for x in runs(c)["runs"]}[a] is True
        stalled_b = raw_download(rec_car.port, cookie, b)  # another session: fine (2 at a time)
        try:
            r = c.get(f"/api/runs/download?name={third.name}")
            assert r.status == 503 and "downloads are running" in r.error
            # the stalled clients hold no worker thread: the listing and the car carry on
            frames = rec_car.loop.stats.frames
            assert len(runs(c)["runs"]) == 3
            wait_for(lambda: rec_car.loop.stats.frames > frames + 10, what="the loop driving on")
        finally:
            stalled_b.close()
    finally:
        stalled.close()
    wait_for(lambda: not rec_car.cockpit.runs.downloading(a)
             and not rec_car.cockpit.runs.downloading(b), what="the slots to free")
    r = c.get(f"/api/runs/download?name={third.name}")
    assert r.status == 200 and int(r.headers["Content-Length"]) == len(r.body)


def test_recording_off_says_how_to_turn_it_on(car):
    c = car.client()
    body = runs(c)
    assert body["dir"] is None and body["runs"] == []
    assert "record_dir" in body["message"] and "--record" in body["message"]
    r = c.get("/api/runs/download?name=x-20200101-000000")
    assert r.status == 404 and "record_dir" in r.error


def test_runs_need_a_session(rec_car):
    anon = Client(rec_car.port)
    assert anon.get("/api/runs").status == 401
    assert anon.get("/api/runs/download?name=x").status == 401
    assert anon.post("/api/runs/delete", {"name": "x"}).status == 401
