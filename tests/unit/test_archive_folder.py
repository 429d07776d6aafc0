"""The archive's folder store: an image written whole under its key, owner-only, and no key leading out."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lineguard.services.results.archive.folder import FolderStore


def test_an_image_is_written_under_its_key_owner_only_and_read_back(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "images")
    uri = store.put("l1/s1/2026/12/01/abc/thumbnail.jpeg", b"jpeg bytes", "image/jpeg")
    path = tmp_path / "images" / "l1/s1/2026/12/01/abc/thumbnail.jpeg"
    assert uri == path.resolve().as_uri()
    assert store.get(uri) == b"jpeg bytes"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["thumbnail.jpeg"]  # no temporary file left beside it
    store.put("l1/s1/2026/12/01/abc/thumbnail.jpeg", b"again", "image/jpeg")  # a frame archived again
    assert store.get(uri) == b"again"


@pytest.mark.parametrize("key", ["../outside.jpeg", "l1/../../outside.jpeg", "/etc/outside.jpeg", "", "."])
def test_a_key_that_leads_out_of_the_folder_is_refused_and_nothing_written(tmp_path: Path, key: str) -> None:
    store = FolderStore(tmp_path / "images")
    with pytest.raises(ValueError, match="leads out of the archive folder"):
        store.put(key, b"x", "image/jpeg")
    assert not (tmp_path / "outside.jpeg").exists() and not Path("/etc/outside.jpeg").exists()
