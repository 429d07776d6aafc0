"""The archive's folder kind (the default): images as files under one folder, written atomically, owner-only."""

from __future__ import annotations

import contextlib
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
        self._root = str(self.root)
        self._root_prefix = os.path.join(self._root, "")

    def _path(self, uri: str) -> Path:
        parsed = urlparse(uri)
        path = Path(unquote(parsed.path)).resolve()
        if parsed.scheme != "file" or not path.is_relative_to(self.root):
            raise ImageGone(f"{uri} is not in the archive folder {self.root}")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> str:
        # The key is checked by its text, not resolved on the disk: resolving cost a stat a folder of the path for
        # every image (0.2 ms of the 0.3 a put took), and the keys' folders are this store's own, made here.
        path = os.path.normpath(os.path.join(self._root, key))
        if not path.startswith(self._root_prefix):
            raise ValueError(f"key {key!r} leads out of the archive folder")
        folder, name = os.path.split(path)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        # Written beside, then renamed: a reader (the API) never sees half an image, a crash leaves none.
        temporary = os.path.join(folder, f".{name}.{os.getpid()}.part")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return Path(path).as_uri()

    def get(self, uri: str) -> bytes:
        try:
            return self._path(uri).read_bytes()
        except FileNotFoundError:
            raise ImageGone(f"{uri}: no such file in the archive") from None

    def delete(self, uri: str) -> None:
        self._path(uri).unlink(missing_ok=True)


def open_archive(settings: Settings) -> FolderStore:
    return FolderStore(settings.path)
