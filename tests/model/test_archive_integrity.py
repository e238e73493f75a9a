"""Damaged and hostile model archives and metadata: a flipped byte never loads a damaged model,
an archive that expands without bound is refused early, metadata numbers that overflow, are
NaN, huge or deeply nested are one line. Through the CLI: exit 2, one line."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import tarfile
import time
from pathlib import Path

import pytest

from car_runtime.cli.main import main
from car_runtime.errors import MetadataError, ModelError
from car_runtime.model.archive import MAX_TOTAL_BYTES, open_model
from car_runtime.model.metadata import load_metadata, parse_metadata


def digest_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_no_flipped_byte_loads_a_damaged_model(deep_archive, tmp_path):
    """60 single-byte flips spread over the archive: each is refused (one line), or -- where the
    byte is one gzip does not protect (header mtime/flags/OS) -- loads exactly the original."""
    data = deep_archive.read_bytes()
    with open_model(deep_archive) as bundle:
        original = digest_tree(bundle.model_path.parent.parent if bundle.model_path.parent.name
                               == "agent" else bundle.model_path.parent)
    refused = same = 0
    positions = sorted({int(i * (len(data) - 1) / 59) for i in range(60)} | {4, 5, 8, 9})
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        p = tmp_path / "flip.tar.gz"
        p.write_bytes(bytes(bad))
        try:
            with open_model(p) as bundle:
                root = (bundle.model_path.parent.parent if bundle.model_path.parent.name == "agent"
                        else bundle.model_path.parent)
                assert digest_tree(root) == original, f"byte {pos}: a damaged model loaded"
                same += 1
        except ModelError as exc:
            assert "\n" not in str(exc)
            refused += 1
    print(f"{len(positions)} flipped bytes: {refused} refused, {same} loaded unchanged "
          "(gzip header fields), 0 damaged loads")
    assert refused >= len(positions) - 6


def _tar_gz(members: dict[str, bytes], *, zeros_after_mb: int = 0) -> bytes:
    """A .tar.gz of ``members``; with ``zeros_after_mb``, that many MB of zeros follow the tar's
    end marker inside the same gzip stream."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        gz.write(raw.getvalue())
        zeros = b"\0" * (1 << 20)
        for _ in range(zeros_after_mb):
            gz.write(zeros)
    return out.getvalue()


def _metadata() -> bytes:
    return json.dumps({"action_space": [{"steering_angle": 0, "speed": 1}],
                       "sensor": ["FRONT_CAMERA"]}).encode()


def test_expansion_bomb_after_the_end_marker_is_refused_early(tmp_path):
    """A tiny archive whose gzip stream keeps going with zeros after the tar's end: refused once
    the limit is passed, without unpacking it all."""
    p = tmp_path / "bomb.tar.gz"
    p.write_bytes(_tar_gz({"model.pb": b"x" * 100, "model_metadata.json": _metadata()},
                         zeros_after_mb=(MAX_TOTAL_BYTES >> 20) + 8))
    t = time.perf_counter()
    with pytest.raises(ModelError, match=r"more than 256 MB when unpacked"):
        open_model(p)
    print(f"{p.stat().st_size / 1e6:.2f} MB archive expanding past {MAX_TOTAL_BYTES >> 20} MB: "
          f"refused in {time.perf_counter() - t:.2f} s")


def test_truncated_gzip_trailer_is_refused(deep_archive, tmp_path):
    """The last 4 bytes (the length) missing: tar would still find every member."""
    p = tmp_path / "cut.tar.gz"
    p.write_bytes(deep_archive.read_bytes()[:-4])
    with pytest.raises(ModelError, match="not a readable tar.gz"):
        open_model(p)


@pytest.mark.parametrize("body, needle", [
    (b'{"action_space": [{"steering_angle": 0, "speed": ' + b"9" * 400 + b"}]}", "400-digit"),
    (b'{"action_space": [{"steering_angle": 0, "speed": 1e999}]}', "must be finite"),
    (b'{"action_space": [{"steering_angle": 0, "speed": NaN}]}', "NaN"),
    (b'{"action_space": [{"steering_angle": 0, "speed": "1e999"}]}', "must be finite"),
    (b'{"action_space": [{"steering_angle": 1e200, "speed": 1}]}', "beyond"),
    (b'{"action_space": [{"steering_angle": 0, "speed": [[[[1]]]]}]}', "must be a number"),
    (b'{"action_space": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nests"),
    (b'{"action_space": [' + b'{"steering_angle": 0, "speed": 1},' * 2000 + b'{"steering_angle": 0, "speed": 1}]}', "2001 actions"),
    (b'{"action_space": {"steering_angle": {"low": -1e300, "high": 30}, '
     b'"speed": {"low": 0.5, "high": 1}}, "action_space_type": "continuous"}', "beyond"),
    (b'{"action_space": [{"steering_angle": 0, "speed": 1}], "sensor": [["x"]]}', "sensor must list"),
])
def test_metadata_numbers_and_nesting_are_one_line(tmp_path, body, needle):
    p = tmp_path / "model_metadata.json"
    p.write_bytes(body)
    with pytest.raises(MetadataError) as e:
        load_metadata(p)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and len(msg) < 600, msg


def test_metadata_file_that_is_not_a_regular_file(tmp_path):
    p = tmp_path / "model_metadata.json"
    p.symlink_to("/dev/zero")
    with pytest.raises(MetadataError, match="character device"):
        load_metadata(p)


@pytest.mark.parametrize("space, kind", [
    ([{"steering_angle": 0, "speed": -1}, {"steering_angle": 30, "speed": 0}], "discrete"),
    ({"steering_angle": {"low": -30, "high": 30}, "speed": {"low": -2, "high": -0.5}},
     "continuous"),
])
def test_every_speed_not_positive_is_a_warning_not_a_refusal(caplog, space, kind):
    with caplog.at_level(logging.WARNING):
        meta = parse_metadata({"action_space": space, "action_space_type": kind})
    assert meta.action_space_type == kind
    assert any("every speed in the action space is <= 0" in r.getMessage() for r in caplog.records)


def test_positive_speeds_no_warning(caplog):
    with caplog.at_level(logging.WARNING):
        parse_metadata({"action_space": [{"steering_angle": 0, "speed": -1},
                                         {"steering_angle": 0, "speed": 0.5}]})
    assert not any("every speed" in r.getMessage() for r in caplog.records)


def test_cli_exit_2_one_line_for_a_damaged_archive(deep_archive, tmp_path, capsys):
    bad = bytearray(deep_archive.read_bytes())
    bad[len(bad) // 2] ^= 0x55  # in the deflate data
    p = tmp_path / "damaged.tar.gz"
    p.write_bytes(bytes(bad))
    code = main(["inspect", str(p)])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.startswith("error: damaged.tar.gz is not a readable tar.gz") and err.count("\n") == 1


def test_cli_exit_2_one_line_for_overflowing_metadata(tmp_path, capsys):
    p = tmp_path / "m.tar.gz"
    p.write_bytes(_tar_gz({"model.pb": b"x", "model_metadata.json":
                           b'{"action_space": [{"steering_angle": 0, "speed": 1e999}]}'}))
    code = main(["inspect", str(p)])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "must be finite" in err
