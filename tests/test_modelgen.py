"""The test-data generators do what they claim, and the bundled fixtures are intact.

OpenVINO (f32) must reproduce the numpy reference of every generated .pb and IR, and the
TensorFlow reference of every copied fixture; every archive builder must produce exactly the
members (names, types, link targets, sizes) it documents, checked with tarfile/gzip.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import zlib
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

import modelgen as mg
from helpers import extract_all
from modelgen import Member, TinyNet

TOL = 1e-5
CORE = ov.Core()


def _run(model: ov.Model, feeds: list[np.ndarray], ov_f32: dict) -> np.ndarray:
    """Reshape every input to its feed's static shape, compile on CPU (f32), run once."""
    model.reshape({inp.get_any_name(): list(a.shape) for inp, a in zip(model.inputs, feeds)})
    compiled = CORE.compile_model(model, "CPU", ov_f32)
    return compiled([np.ascontiguousarray(a, dtype=np.float32) for a in feeds])[0]


def _feeds(net: TinyNet, seed: int = 0, layout: str = "NHWC") -> tuple[np.ndarray, np.ndarray | None, list]:
    x = net.sample_input(seed)
    lidar = net.sample_lidar(seed)
    cam = x.astype(np.float32)
    if layout == "NCHW":
        cam = cam.transpose(0, 3, 1, 2)
    return x, lidar, [cam] + ([lidar] if lidar is not None else [])


# ---- protobuf encoder --------------------------------------------------------------------------

def test_varint_encoding_matches_protobuf_spec():
    assert mg._varint(0) == b"\x00"
    assert mg._varint(1) == b"\x01"
    assert mg._varint(300) == b"\xac\x02"  # the example in the protobuf encoding guide
    assert mg._varint(-1) == b"\xff" * 9 + b"\x01"  # int64 -1: ten bytes
    assert mg._field_bytes(2, b"abc") == b"\x12\x03abc"


def test_graph_def_is_deterministic_and_seeded():
    assert TinyNet(seed=4).graph_def_bytes() == TinyNet(seed=4).graph_def_bytes()
    assert TinyNet(seed=4).graph_def_bytes() != TinyNet(seed=5).graph_def_bytes()


# ---- frozen .pb through OpenVINO's TF frontend ----------------------------------------------------

PB_VARIANTS = {
    "ffc_discrete": dict(),
    "ffc_discrete_10": dict(n_outputs=10, seed=2),
    "observation": dict(sensor="observation", seed=3),
    "left_camera": dict(sensor="LEFT_CAMERA", seed=4),
    "stereo": dict(sensor="STEREO_CAMERAS", seed=5),
    "ffc_continuous": dict(action_space_type="continuous", seed=6),
    "sac": dict(algorithm="sac", seed=7),
    "ffc_lidar": dict(lidar="LIDAR", seed=8),
    "stereo_sector_lidar": dict(sensor="STEREO_CAMERAS", lidar="SECTOR_LIDAR", seed=9),
}


@pytest.mark.parametrize("kwargs", PB_VARIANTS.values(), ids=PB_VARIANTS.keys())
def test_openvino_reads_generated_pb_and_matches_numpy(tmp_path, kwargs, ov_f32):
    net = TinyNet(**kwargs)
    model = CORE.read_model(str(net.write_pb(tmp_path / "model.pb")))

    names = [inp.get_any_name() for inp in model.inputs]
    expected_inputs = [net.input_name + ":0"] + ([net.lidar_input_name + ":0"] if net.lidar else [])
    assert names == expected_inputs
    assert model.inputs[0].get_partial_shape() == ov.PartialShape([-1, 120, 160, net.channels])
    if net.lidar:
        assert model.inputs[1].get_partial_shape() == ov.PartialShape([-1, net.lidar_size])
    assert net.output_name + ":0" in model.outputs[0].get_names()
    assert model.outputs[0].get_partial_shape() == ov.PartialShape([-1, net.n_outputs])

    x, lidar, feeds = _feeds(net)
    got = _run(model, feeds, ov_f32)
    want = net.reference_output(x, lidar)
    assert got.shape == want.shape == (1, net.n_outputs)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    if net.action_space_type == "discrete":
        assert got.sum() == pytest.approx(1.0, abs=1e-5)


def test_head_names_follow_the_algorithm():
    assert TinyNet().input_name == "main_level/agent/main/online/network_0/FRONT_FACING_CAMERA/FRONT_FACING_CAMERA"
    assert TinyNet().output_name == "main_level/agent/main/online/network_1/ppo_head_0/policy"
    sac = TinyNet(algorithm="sac", sensor="STEREO_CAMERAS")
    assert sac.input_name == "main_level/agent/policy/online/network_0/STEREO_CAMERAS/STEREO_CAMERAS"
    assert sac.output_name == "main_level/agent/policy/online/network_0/sac_policy_head_0/policy"
    assert sac.n_outputs == 2 and sac.action_space_type == "continuous"


def test_reference_output_distinguishes_inputs_and_batches():
    net = TinyNet(seed=0)
    a, b = net.sample_input(0), net.sample_input(1)
    assert not np.allclose(net.reference_output(a), net.reference_output(b))
    both = net.reference_output(np.concatenate([a, b]))
    np.testing.assert_allclose(both, np.concatenate([net.reference_output(a), net.reference_output(b)]))
    with pytest.raises(ValueError, match="NHWC"):
        net.reference_output(np.zeros((1, 1, 120, 160)))
    with pytest.raises(ValueError, match="lidar"):
        TinyNet(lidar="LIDAR").reference_output(a)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="sensor"):
        TinyNet(sensor="LIDAR")
    with pytest.raises(ValueError, match="lidar"):
        TinyNet(lidar="RADAR")
    with pytest.raises(ValueError, match="algorithm"):
        TinyNet(algorithm="dqn")


# ---- IR (NCHW as the car's Model Optimizer wrote it, NHWC as ovc keeps it) ----------------------

IR_VARIANTS = {
    "ffc_discrete": dict(seed=11),
    "stereo": dict(sensor="STEREO_CAMERAS", seed=12),
    "sac": dict(algorithm="sac", seed=13),
    "stereo_sector_lidar_continuous": dict(sensor="STEREO_CAMERAS", lidar="SECTOR_LIDAR",
                                           action_space_type="continuous", seed=14),
}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("kwargs", IR_VARIANTS.values(), ids=IR_VARIANTS.keys())
def test_ir_matches_numpy_in_both_layouts(tmp_path, kwargs, layout, ov_f32):
    net = TinyNet(**kwargs)
    xml = net.write_ir(tmp_path / "model.xml", layout)
    assert xml.with_suffix(".bin").stat().st_size > 4 * net.fc_w.size  # f32 weights, not fp16
    model = CORE.read_model(str(xml))

    suffix = "" if layout == "NCHW" else ":0"
    c = net.channels
    shape = [1, c, 120, 160] if layout == "NCHW" else [1, 120, 160, c]
    assert model.inputs[0].get_names() == {net.input_name + suffix}
    assert model.inputs[0].get_partial_shape() == ov.PartialShape(shape)
    if net.lidar:
        assert model.inputs[1].get_names() == {net.lidar_input_name + suffix}
    assert model.outputs[0].get_names() == {net.output_name + suffix}

    x, lidar, feeds = _feeds(net, seed=1, layout=layout)
    got = _run(model, feeds, ov_f32)
    np.testing.assert_allclose(got, net.reference_output(x, lidar), rtol=0, atol=TOL)


# ---- metadata and model folders ---------------------------------------------------------------

def test_metadata_matches_the_net():
    m = TinyNet(n_outputs=7).metadata()
    assert [a["index"] for a in m["action_space"]] == list(range(7))
    assert m["action_space"][0]["steering_angle"] == -30.0 and m["action_space"][-1]["steering_angle"] == 30.0
    assert m["sensor"] == ["FRONT_FACING_CAMERA"] and m["training_algorithm"] == "clipped_ppo"
    assert m["action_space_type"] == "discrete" and m["version"] == "5"
    cont = TinyNet(algorithm="sac", sensor="STEREO_CAMERAS", lidar="LIDAR").metadata()
    assert cont["action_space"] == {"steering_angle": {"high": 30.0, "low": -30.0},
                                    "speed": {"high": 1.0, "low": 0.5}}
    assert cont["sensor"] == ["STEREO_CAMERAS", "LIDAR"] and cont["training_algorithm"] == "sac"
    assert list(TinyNet(sensor="observation").metadata()) == ["action_space"]  # 2019 legacy form
    assert json.loads(TinyNet().metadata_bytes()) == TinyNet().metadata()


@pytest.mark.parametrize("fmt,files", [("pb", {"model.pb"}), ("ir_nchw", {"model.xml", "model.bin"}),
                                       ("ir_nhwc", {"model.xml", "model.bin"})])
def test_write_model_dir_layouts(tmp_path, fmt, files):
    out = TinyNet().write_model_dir(tmp_path / "m", fmt=fmt)
    assert {p.name for p in out.iterdir()} == files | {"model_metadata.json"}
    bare = TinyNet().write_model_dir(tmp_path / "bare", fmt=fmt, metadata=False)
    assert {p.name for p in bare.iterdir()} == files
    custom = TinyNet().write_model_dir(tmp_path / "c", fmt=fmt, metadata={"action_space": []})
    assert json.loads((custom / "model_metadata.json").read_text()) == {"action_space": []}


def test_tiny_model_fixture_caches_and_runs(tiny_model, ov_f32):
    gm = tiny_model("ir_nchw", sensor="STEREO_CAMERAS", seed=21)
    assert tiny_model("ir_nchw", sensor="STEREO_CAMERAS", seed=21) is gm
    assert gm.model_file.name == "model.xml"
    x, _, feeds = _feeds(gm.net, layout="NCHW")
    got = _run(CORE.read_model(str(gm.model_file)), feeds, ov_f32)
    np.testing.assert_allclose(got, gm.net.reference_output(x), atol=TOL)


# ---- archives -----------------------------------------------------------------------------------

def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:*") as tar:
        return tar.getmembers()


def test_make_archive_writes_members_verbatim_and_deterministically(tmp_path):
    members = [
        Member.file("agent/model.pb", b"pb"),
        Member.dir("agent/sub"),
        Member.file("../evil", "x"),
        Member.file("/tmp/evil", Path(__file__)),
        Member.symlink("s", "/etc/passwd"),
        Member.hardlink("h", "agent/model.pb"),
        Member.chardev("c", 1, 3),
        Member.fifo("f"),
    ]
    a = mg.make_archive(tmp_path / "a.tar.gz", members)
    assert a.read_bytes() == mg.make_archive(tmp_path / "b.tar.gz", members).read_bytes()
    head = a.read_bytes()[:10]
    assert head[:3] == b"\x1f\x8b\x08" and head[4:8] == b"\0\0\0\0"  # gzip, mtime 0, no name flag
    got = _members(a)
    assert [m.name for m in got] == ["agent/model.pb", "agent/sub", "../evil", "/tmp/evil", "s", "h", "c", "f"]
    assert [m.type for m in got] == [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.REGTYPE,
                                     tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE]
    assert got[3].size == Path(__file__).stat().st_size
    assert (got[4].linkname, got[5].linkname) == ("/etc/passwd", "agent/model.pb")
    assert (got[6].devmajor, got[6].devminor) == (1, 3)
    assert all(m.mtime == 0 and m.uid == 0 for m in got)

    plain = mg.make_archive(tmp_path / "p.tar", members[:1])
    assert plain.read_bytes()[:2] != b"\x1f\x8b" and [m.name for m in _members(plain)] == ["agent/model.pb"]
    with pytest.raises(ValueError, match="compression"):
        mg.make_archive(tmp_path / "x.zip", members)


def test_layout_archives(tmp_path, ov_f32):
    net = TinyNet(seed=31)
    pb, meta = net.graph_def_bytes(), net.metadata()
    console = mg.console_archive(tmp_path / "c.tar.gz", pb, meta)
    assert [m.name for m in _members(console)] == ["agent/model.pb", "model_metadata.json"]
    assert net.write_console_archive(tmp_path / "c2.tar.gz").read_bytes() == console.read_bytes()
    root = mg.root_pb_archive(tmp_path / "r.tar.gz", pb, meta)
    assert [m.name for m in _members(root)] == ["model.pb", "model_metadata.json"]

    xml = net.write_ir(tmp_path / "ir" / "model.xml", "NCHW")
    ir = mg.ir_archive(tmp_path / "i.tar.gz", xml, meta, model_pb=pb)
    assert [m.name for m in _members(ir)] == ["model.xml", "model.bin", "agent/model.pb", "model_metadata.json"]
    with tarfile.open(ir) as tar:
        extract_all(tar, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "model_metadata.json").read_text()) == meta
    x, _, feeds = _feeds(net, layout="NCHW")
    got = _run(CORE.read_model(str(tmp_path / "out" / "model.xml")), feeds, ov_f32)
    np.testing.assert_allclose(got, net.reference_output(x), atol=TOL)


def test_truncated_copy(tmp_path):
    full = TinyNet().write_console_archive(tmp_path / "full.tar.gz")
    cut = mg.truncated_copy(full, tmp_path / "cut.tar.gz", keep_fraction=0.3)
    assert cut.read_bytes() == full.read_bytes()[: int(full.stat().st_size * 0.3)]
    with pytest.raises((tarfile.ReadError, EOFError)):
        _members(cut)
    with pytest.raises(ValueError):
        mg.truncated_copy(full, tmp_path / "x", keep_bytes=full.stat().st_size)


@pytest.mark.parametrize("n", [0, 1, 5, 512, 4097, 1 << 20, 3_000_001])
@pytest.mark.parametrize("start", [0, 0xDEADBEEF])
def test_crc32_zero_extend_matches_zlib(n, start):
    assert mg.crc32_zero_extend(start, n) == zlib.crc32(bytes(n), start)


def test_small_bomb_inflates_exactly_with_valid_trailer(tmp_path):
    declared = (3 << 20) + 12345  # 3 chunks + a tail: exercises every code path
    p = mg.gzip_bomb_archive(tmp_path / "b.tar.gz", declared)
    raw = gzip.decompress(p.read_bytes())  # checks CRC32 and ISIZE
    assert len(raw) % tarfile.RECORDSIZE == 0
    with tarfile.open(p) as tar:
        infos = tar.getmembers()
        assert [m.name for m in infos] == ["model_metadata.json", "agent/model.pb"]
        assert infos[1].size == declared
        data = tar.extractfile(infos[1]).read()
    assert len(data) == declared and not any(data)


def test_default_bomb_is_small_on_disk_and_huge_inside(tmp_path):
    p = mg.gzip_bomb_archive(tmp_path / "bomb.tar.gz")
    assert p.stat().st_size < 4 * 2**20
    with tarfile.open(p, "r|gz") as tar:  # streaming: never inflates the member
        first, bomb = tar.next(), tar.next()
    assert first.name == "model_metadata.json"
    assert bomb.name == "agent/model.pb" and bomb.size == 5 * 2**29 > 2 * 2**30
    isize = int.from_bytes(p.read_bytes()[-4:], "little")
    # 3 header/data blocks + the zeros + 2 end blocks, padded to a 10240-byte record
    total = -(-(3 * 512 + bomb.size + 2 * 512) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE
    assert isize == total % 2**32


def _hostile(tmp_path: Path, case: str) -> Path:
    net = TinyNet()
    return mg.hostile_archive(tmp_path / f"{case}.tar.gz", case, net.graph_def_bytes(), net.metadata())


EXPECTED_MEMBERS = {
    "traversal": (["agent/model.pb", "model_metadata.json", "../evil.txt"], tarfile.REGTYPE),
    "absolute": (["agent/model.pb", "model_metadata.json", "/tmp/car_runtime_evil.txt"], tarfile.REGTYPE),
    "symlink": (["agent/model.pb", "model_metadata.json", "agent/link"], tarfile.SYMTYPE),
    "hardlink": (["agent/model.pb", "model_metadata.json", "agent/hard"], tarfile.LNKTYPE),
    "chardev": (["agent/model.pb", "model_metadata.json", "agent/null"], tarfile.CHRTYPE),
    "fifo": (["agent/model.pb", "model_metadata.json", "agent/fifo"], tarfile.FIFOTYPE),
    "zero_pb": (["model_metadata.json", "README.txt"], tarfile.REGTYPE),
    "two_pb": (["agent/model.pb", "model_metadata.json", "model_15.pb"], tarfile.REGTYPE),
    "no_metadata": (["agent/model.pb"], tarfile.REGTYPE),
    "metadata_in_subdir": (["agent/model.pb", "agent/model_metadata.json"], tarfile.REGTYPE),
}


@pytest.mark.parametrize("case", EXPECTED_MEMBERS)
def test_hostile_member_cases(tmp_path, case):
    names, last_type = EXPECTED_MEMBERS[case]
    got = _members(_hostile(tmp_path, case))
    assert [m.name for m in got] == names
    assert got[-1].type == last_type
    if case in ("symlink", "hardlink"):
        assert got[-1].linkname == "/etc/passwd"
    pbs = [m for m in got if m.name.endswith(".pb")]
    assert all(m.size == len(TinyNet().graph_def_bytes()) for m in pbs)


def test_hostile_symlink_pb(tmp_path):
    got = _members(_hostile(tmp_path, "symlink_pb"))
    assert got[0].name == "agent/model.pb" and got[0].issym() and got[0].linkname == "/etc/passwd"


def test_hostile_stream_cases(tmp_path):
    assert set(mg.HOSTILE_CASES) == set(EXPECTED_MEMBERS) | {
        "symlink_pb", "truncated", "bomb", "lying_size", "garbage", "empty"}

    truncated = _hostile(tmp_path, "truncated")
    assert truncated.read_bytes()[:2] == b"\x1f\x8b"
    with pytest.raises((tarfile.ReadError, EOFError)):
        _members(truncated)

    bomb = _hostile(tmp_path, "bomb")
    assert bomb.stat().st_size < 4 * 2**20
    with tarfile.open(bomb, "r|gz") as tar:
        meta, pb = tar.next(), tar.next()
    assert meta.name == "model_metadata.json" and pb.name == "agent/model.pb" and pb.size > 2 * 2**30

    lying = _hostile(tmp_path, "lying_size")
    with tarfile.open(lying, "r|gz") as tar:
        tar.next()
        big = tar.next()
        assert big.size == 8 * 2**30
        with pytest.raises(tarfile.ReadError):
            tar.extractfile(big).read()

    for case in ("garbage", "empty"):
        with pytest.raises(tarfile.ReadError):
            _members(_hostile(tmp_path, case))
    with pytest.raises(ValueError, match="unknown case"):
        _hostile(tmp_path, "nope")


# ---- the bundled fixtures are intact ------------------------------------------------------------

def _manifest(data_dir: Path) -> dict:
    return json.loads((data_dir / "models" / "manifest.json").read_text())["fixtures"]


def _check_against_reference(pb: Path, npz: Path, ov_f32: dict) -> None:
    ref = np.load(npz)
    got = _run(CORE.read_model(str(pb)), [ref["x"]], ov_f32)
    np.testing.assert_allclose(got, ref["y"], rtol=0, atol=TOL)


def test_slim_fixtures_match_manifest_and_tensorflow(slim_models, data_dir, ov_f32):
    manifest = _manifest(data_dir)
    for name, folder in slim_models.items():
        pb = folder / "model.pb"
        assert hashlib.sha256(pb.read_bytes()).hexdigest() == manifest[name]["model_pb_sha256"]
        json.loads((folder / "model_metadata.json").read_text())
        _check_against_reference(pb, folder / "reference_io.npz", ov_f32)


def test_deep_archive_and_demo_model(deep_archive, deep_reference_io, demo_model, data_dir, tmp_path, ov_f32):
    assert demo_model.read_bytes() == deep_archive.read_bytes()
    assert [m.name for m in _members(deep_archive)] == ["agent/model.pb", "model_metadata.json"]
    with tarfile.open(deep_archive) as tar:
        extract_all(tar, tmp_path)
    pb = tmp_path / "agent" / "model.pb"
    assert hashlib.sha256(pb.read_bytes()).hexdigest() == _manifest(data_dir)["deep_ffc_discrete"]["model_pb_sha256"]
    assert len(json.loads((tmp_path / "model_metadata.json").read_text())["action_space"]) == 10
    _check_against_reference(pb, deep_reference_io, ov_f32)


def test_realsize_shallow_fixture(realsize_shallow_dir, data_dir, ov_f32):
    pb = realsize_shallow_dir / "model.pb"
    assert hashlib.sha256(pb.read_bytes()).hexdigest() == _manifest(data_dir)["shallow_ffc_discrete"]["model_pb_sha256"]
    _check_against_reference(pb, realsize_shallow_dir / "reference_io.npz", ov_f32)


def test_copied_metadata_and_footage(metadata_dir, footage_dir, footage_seq_dir):
    import cv2

    real = sorted((metadata_dir / "metadata-only").glob("*.json"))
    assert len(real) == 22
    for p in real:
        json.loads(p.read_text())
    assert {p.name for p in (metadata_dir / "ir-xml-no-weights").iterdir() if p.is_dir()} == {
        "autosar-popcornsar-stereo-lidar-cont", "eswc2024-stereo-cont-ir11"}

    frames = sorted(footage_seq_dir.glob("*.jpg"))
    assert [f.name for f in frames] == [f"{i:06d}.jpg" for i in range(100)]
    assert cv2.imread(str(frames[0])).shape == (120, 160, 3)
    assert cv2.imread(str(footage_dir / "sim-demo-stills-640x480" / "png-rgba" / "dr-demo-1.png"),
                      cv2.IMREAD_UNCHANGED).shape == (480, 640, 4)
    assert len(list((footage_dir / "car-foam-mat-track-640x480").glob("*.png"))) == 6
    for folder in (footage_seq_dir, footage_dir / "sim-demo-stills-640x480",
                   footage_dir / "car-foam-mat-track-640x480", metadata_dir, metadata_dir.parent / "models"):
        assert "Licence" in (folder / "PROVENANCE.md").read_text()


def test_convert_model_path_also_reads_generated_pb(tmp_path, ov_f32):
    """``ov.convert_model`` (the other .pb entry point) sees the same graph."""
    net = TinyNet(sensor="STEREO_CAMERAS", seed=41)
    model = ov.convert_model(str(net.write_pb(tmp_path / "model.pb")), input=[1, 120, 160, 2])
    x, _, feeds = _feeds(net)
    np.testing.assert_allclose(_run(model, feeds, ov_f32), net.reference_output(x), atol=TOL)
