"""Opening models: every good form, and every hostile archive refused without side effects."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

import modelgen
from car_runtime.errors import MetadataError, ModelError
from car_runtime.model.archive import extract_archive, model_name, open_model
from car_runtime.model.policy import load_model


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TMPDIR for this test, so leftovers (or escapes) are visible."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert tempfile.gettempdir() == str(tmp)
    return tmp


@pytest.fixture(scope="module")
def net() -> modelgen.TinyNet:
    return modelgen.TinyNet(seed=11)


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# ---- hostile archives ----------------------------------------------------------------------

HOSTILE = {
    "traversal": r"'\.\./evil\.txt' escapes the archive folder",
    "absolute": r"'/tmp/car_runtime_evil\.txt' has an absolute path",
    "symlink": r"'agent/link' is a link",
    "symlink_pb": r"'agent/model\.pb' is a link",
    "hardlink": r"'agent/hard' is a link",
    "chardev": r"'agent/null' is a device",
    "fifo": r"'agent/fifo' is a device/fifo",
    "zero_pb": r"no model found in bad\.tar\.gz: expected agent/model\.pb",
    "two_pb": r"more than one \.pb \(agent/model\.pb, model_15\.pb\)",
    "no_metadata": r"no model_metadata\.json at its root",
    "metadata_in_subdir": r"no model_metadata\.json at its root",
    "truncated": r"not a readable tar\.gz",
    "bomb": r"'agent/model\.pb' is too large \(2684354560 bytes",
    "lying_size": r"'agent/model\.pb' is too large \(8589934592 bytes",
    "garbage": r"not a readable tar\.gz",
    "empty": r"not a readable tar\.gz",
}


def test_every_hostile_case_is_covered():
    assert set(HOSTILE) == set(modelgen.HOSTILE_CASES)


@pytest.mark.parametrize("case", modelgen.HOSTILE_CASES)
def test_hostile_archive_refused_without_side_effects(case, tmp_path, private_tmp, net):
    archives = tmp_path / "archives"
    bad = modelgen.hostile_archive(archives / "bad.tar.gz", case, net.graph_def_bytes(), net.metadata())
    before = tree(tmp_path)
    evil_abs = Path("/tmp/car_runtime_evil.txt")
    evil_abs_existed = evil_abs.exists()

    with pytest.raises(ModelError, match=HOSTILE[case]) as info:
        open_model(bad)
    assert "\n" not in str(info.value)  # one line for the CLI
    with pytest.raises(ModelError, match=HOSTILE[case]):
        load_model(bad)

    assert tree(tmp_path) == before  # nothing new anywhere, incl. ../evil.txt in TMPDIR
    assert list(private_tmp.iterdir()) == []  # the private car-runtime-model-* folder is gone
    assert evil_abs.exists() == evil_abs_existed


def test_extract_refuses_into_a_given_folder_and_writes_nothing_outside(tmp_path, net):
    """extract_archive itself (not only open_model) never writes outside ``dest``."""
    sentinel_dir = tmp_path / "outer"
    dest = sentinel_dir / "dest"
    dest.mkdir(parents=True)
    for case in ("traversal", "absolute", "symlink", "hardlink", "chardev"):
        bad = modelgen.hostile_archive(
            tmp_path / f"{case}.tar.gz", case, net.graph_def_bytes(), net.metadata()
        )
        with pytest.raises(ModelError):
            extract_archive(bad, dest)
        good = {"dest", "dest/agent", "dest/agent/model.pb", "dest/model_metadata.json"}
        assert tree(sentinel_dir) - good == set()
        for p in sorted(dest.rglob("*"), reverse=True):  # good members before the bad one are fine
            assert not p.is_symlink()
            p.rmdir() if p.is_dir() else p.unlink()


def test_duplicate_member_refused(tmp_path, private_tmp, net):
    bad = modelgen.make_archive(tmp_path / "dup.tar.gz", [
        modelgen.Member.file("agent/model.pb", net.graph_def_bytes()),
        modelgen.Member.file("model_metadata.json", net.metadata_bytes()),
        modelgen.Member.file("model_metadata.json", b'{"action_space": []}'),
    ])
    with pytest.raises(ModelError, match="same file twice"):
        open_model(bad)
    assert list(private_tmp.iterdir()) == []


def test_bad_metadata_in_archive_is_a_metadata_error(tmp_path, private_tmp, net):
    bad = modelgen.console_archive(tmp_path / "m.tar.gz", net.graph_def_bytes(), {"action_space": []})
    with pytest.raises(MetadataError, match="action_space is empty"):
        open_model(bad)
    assert list(private_tmp.iterdir()) == []


# ---- good forms ----------------------------------------------------------------------------

def test_console_archive_extracts_privately_and_cleans_up(tmp_path, private_tmp, net):
    arc = net.write_console_archive(tmp_path / "My Model.v2.tar.gz")
    with open_model(arc) as bundle:
        assert bundle.kind == "archive" and bundle.fmt == "pb"
        assert bundle.name == "My_Model"  # stock: up to the first '.', spaces -> '_'
        assert bundle.model_path.read_bytes() == net.graph_def_bytes()
        assert bundle.model_path.relative_to(private_tmp).as_posix().endswith("agent/model.pb")
        assert bundle.model_path.parent.parent.name.startswith("car-runtime-model-")
        assert bundle.metadata.action_space.size == net.n_outputs
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize("layout", ["console", "root_pb", "plain_tar", "tgz"])
def test_archive_layouts(tmp_path, private_tmp, net, layout):
    pb, meta = net.graph_def_bytes(), net.metadata()
    if layout == "console":
        arc = modelgen.console_archive(tmp_path / "m.tar.gz", pb, meta)
    elif layout == "root_pb":
        arc = modelgen.root_pb_archive(tmp_path / "m.tar.gz", pb, meta)
    elif layout == "plain_tar":
        arc = modelgen.make_archive(tmp_path / "m.tar", [
            modelgen.Member.dir("agent"), modelgen.Member.file("agent/model.pb", pb),
            modelgen.Member.file("model_metadata.json", net.metadata_bytes())])
    else:
        arc = modelgen.console_archive(tmp_path / "m.tgz", pb, meta)
    loaded = load_model(arc)
    assert list(private_tmp.iterdir()) == []  # removed as soon as OpenVINO holds the weights
    x = net.sample_input(seed=3)
    assert loaded.policy.run(x) == pytest.approx(net.reference_output(x).ravel(), abs=1e-5)
    assert loaded.load_s > 0


def test_installed_car_folder(tmp_path, net):
    """/opt/aws/deepracer/artifacts/<name>/: model.pb, metadata, checksum.txt, maybe an old IR."""
    folder = net.write_model_dir(tmp_path / "artifacts" / "my-model")
    (folder / "checksum.txt").write_text("0123456789abcdef0123456789abcdef\n")
    net.write_ir(folder / "model.xml", "NCHW")  # what the stock optimizer leaves behind
    bundle = open_model(folder)
    assert (bundle.kind, bundle.fmt, bundle.model_path.name, bundle.name) == (
        "folder", "pb", "model.pb", "my-model"
    )
    assert folder.is_dir() and (folder / "model.pb").is_file()  # close() never touches a folder
    bundle.close()
    assert (folder / "model.pb").is_file()


def test_folder_errors(tmp_path, net):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no model found"):
        open_model(empty)
    two = tmp_path / "two"
    net.write_model_dir(two)
    net.write_pb(two / "sub" / "model_2.pb")
    with pytest.raises(ModelError, match="more than one .pb"):
        open_model(two)
    nometa = net.write_model_dir(tmp_path / "nometa", metadata=False)
    with pytest.raises(ModelError, match="no model_metadata.json"):
        open_model(nometa)
    with pytest.raises(ModelError, match="not found"):
        open_model(tmp_path / "missing.tar.gz")
    other = tmp_path / "model.onnx"
    other.write_bytes(b"\0")
    with pytest.raises(ModelError, match="is not a model"):
        open_model(other)
    xml_only = tmp_path / "xmlonly"
    xml_only.mkdir()
    (xml_only / "model.xml").write_text("<net/>")
    with pytest.raises(ModelError, match="has no model.bin beside it"):
        open_model(xml_only / "model.xml")


def test_model_name_rule():
    assert model_name(Path("/x/Fast Lap.tar.gz")) == "Fast_Lap"
    assert model_name(Path("a.b.c.tar.gz")) == "a"


def test_no_temp_folder_for_folders(private_tmp, net, tmp_path):
    folder = net.write_model_dir(tmp_path / "m")
    load_model(folder)
    load_model(folder / "model.pb")
    assert list(private_tmp.iterdir()) == []
    assert os.environ["TMPDIR"] == str(private_tmp)
