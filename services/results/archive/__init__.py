"""The image archive: where the results service keeps inspected images, as a seam of kinds (folder, s3).

A kind (lineguard.config.seams.ARCHIVES) is a module with KEY, its Settings and `open_archive(settings)`, which
returns an `ImageStore`: bytes in under a key, out and deleted by the URI it gave. The rows that say what is
stored (inspection_images) are the results service's, not the store's: archiver.py and retention.py."""

from __future__ import annotations

from typing import Protocol

from lineguard.config.seams import ARCHIVES, ArchiveSettings


class ImageGone(FileNotFoundError):
    """The store has nothing at this URI (deleted, or never written)."""


class ImageStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store `data` under `key` (written again: replaced); the URI it can be read back by."""
        ...

    def get(self, uri: str) -> bytes:
        """The bytes at `uri`; ImageGone when there are none."""
        ...

    def delete(self, uri: str) -> None:
        """Remove what is at `uri`; nothing there is no error."""
        ...


def open_store(settings: ArchiveSettings) -> ImageStore:
    store: ImageStore = ARCHIVES.factory_of(settings.kind)(settings)
    return store
