"""The archive's folder kind (the default): images as files under one folder, written atomically, owner-only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

from pydantic import Field

from lineguard.config.seams import ArchiveSettings
from lineguard.services.results.archive import ImageGone

KEY = "folder"


class Settings(ArchiveSettings):
    kind: Literal["folder"] = "folder"
    path: str = Field("images", description="the folder images are kept in; relative: to the working directory")


class FolderStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def _path(self, uri: str) -> Path:
        parsed = urlparse(uri)
        path = Path(unquote(parsed.path)).resolve()
        if parsed.scheme != "file" or not path.is_relative_to(self.root):
            raise ImageGone(f"{uri} is not in the archive folder {self.root}")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> str:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"key {key!r} leads out of the archive folder")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written beside, then renamed: a reader (the API) never sees half an image, a crash leaves none.
        temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return path.as_uri()

    def get(self, uri: str) -> bytes:
        try:
            return self._path(uri).read_bytes()
        except FileNotFoundError:
            raise ImageGone(f"{uri}: no such file in the archive") from None

    def delete(self, uri: str) -> None:
        self._path(uri).unlink(missing_ok=True)


def open_archive(settings: Settings) -> FolderStore:
    return FolderStore(settings.path)
