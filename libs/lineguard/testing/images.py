"""Images that attack the decoder, for tests."""

from __future__ import annotations

import functools
import struct
import zlib


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@functools.lru_cache(maxsize=4)
def decompression_bomb_png(width: int = 12000, height: int = 12000) -> bytes:
    """A valid black RGB PNG of `width` x `height`: 12000 x 12000 is about 442 KB that decodes to 432 MB.

    Compressed row by row, so making it never holds the decoded image either."""
    row = b"\x00" * (1 + 3 * width)  # filter byte "none", then the row's pixels
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
