"""The test helpers themselves: ``extract_all`` works with and without ``tarfile.data_filter``
(absent before Python 3.10.12 / 3.11.4, which car-runtime still supports)."""

from __future__ import annotations

import io
import tarfile

import pytest
from helpers import extract_all


@pytest.mark.parametrize("has_filter", [True, False])
def test_extract_all_on_every_patch_level(tmp_path, monkeypatch, has_filter):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("agent/model.pb")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    if not has_filter:
        if hasattr(tarfile, "data_filter"):
            monkeypatch.delattr(tarfile, "data_filter")
        # An old tarfile: extractall() has no `filter` argument at all.
        original = tarfile.TarFile.extractall
        monkeypatch.setattr(tarfile.TarFile, "extractall",
                            lambda self, path=".", members=None, *, numeric_owner=False:
                            original(self, path, members, numeric_owner=numeric_owner))
    with tarfile.open(archive) as tar:
        extract_all(tar, tmp_path / "out")
    assert (tmp_path / "out" / "agent" / "model.pb").read_bytes() == b"hello"
