"""An image's size read from its header, without decoding it.

A 442 KB PNG can hold 12000 x 12000 pixels (432 MB decoded): the size must be known before the decoder allocates
it. Each encoding the line takes says its size near the start: PNG in its first chunk (IHDR), JPEG in its
start-of-frame segment, BMP in its info header, TIFF in its first image directory. An image whose header does not
say it is refused, never decoded to find out."""

from __future__ import annotations

import struct
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers (baseline, progressive, lossless, arithmetic...): not C4 (DHT), C8 (JPG), CC (DAC).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Markers without a length: TEM, RST0-7, SOI, EOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
_TIFF_WIDTH, _TIFF_LENGTH = 256, 257
_TIFF_SHORT, _TIFF_LONG = 3, 4
# A TIFF directory with more entries than this is not one a camera wrote.
_TIFF_MAX_ENTRIES = 4096


class HeaderError(ValueError):
    """The header does not say the image's size; the message says why."""


@dataclass(frozen=True)
class ImageHeader:
    encoding: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes) -> ImageHeader:
    """The encoding and size `data`'s header declares; HeaderError when it does not say."""
    if data.startswith(PNG_SIGNATURE):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith(b"BM"):
        return _bmp(data)
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return _tiff(data)
    raise HeaderError(f"{len(data)} bytes starting {data[:8].hex()} are no PNG, JPEG, BMP or TIFF")


def _png(data: bytes) -> ImageHeader:
    # The IHDR chunk comes first: length (13), type, width, height.
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise HeaderError("png without its IHDR chunk first")
    width, height = struct.unpack(">II", data[16:24])
    return _sized("png", width, height)


def _jpeg(data: bytes) -> ImageHeader:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise HeaderError(f"jpeg: no marker at byte {i} before its start of frame")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker == 0xDA:
            raise HeaderError("jpeg: image data (start of scan) before any start of frame")
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            raise HeaderError(f"jpeg: segment {marker:#04x} at byte {i} has length {length}")
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return _sized("jpeg", width, height)
        i += 2 + length
    raise HeaderError("jpeg: no start of frame segment")


def _bmp(data: bytes) -> ImageHeader:
    if len(data) < 26:
        raise HeaderError("bmp: truncated header")
    (info_size,) = struct.unpack("<I", data[14:18])
    if info_size == 12:  # BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", data[18:22])
    elif info_size >= 40:
        width, height = struct.unpack("<ii", data[18:26])
    else:
        raise HeaderError(f"bmp: unknown info header of {info_size} bytes")
    # A negative height is a top-down bitmap; a negative width is no bitmap at all.
    if width < 0:
        raise HeaderError(f"bmp: negative width {width}")
    return _sized("bmp", width, abs(height))


def _tiff(data: bytes) -> ImageHeader:
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        raise HeaderError("tiff: truncated header")
    (ifd,) = struct.unpack(order + "I", data[4:8])
    if ifd + 2 > len(data):
        raise HeaderError(f"tiff: first image directory at byte {ifd} is beyond the {len(data)} bytes")
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    if count > _TIFF_MAX_ENTRIES or ifd + 2 + 12 * count > len(data):
        raise HeaderError(f"tiff: image directory of {count} entries does not fit")
    size: dict[int, int] = {}
    for n in range(count):
        tag, kind, values = struct.unpack(order + "HHI", data[ifd + 2 + 12 * n : ifd + 10 + 12 * n])
        if tag in (_TIFF_WIDTH, _TIFF_LENGTH) and values == 1 and kind in (_TIFF_SHORT, _TIFF_LONG):
            at = ifd + 10 + 12 * n
            fmt = "H" if kind == _TIFF_SHORT else "I"
            (size[tag],) = struct.unpack(order + fmt, data[at : at + struct.calcsize(fmt)])
    if _TIFF_WIDTH not in size or _TIFF_LENGTH not in size:
        raise HeaderError("tiff: first image directory gives no ImageWidth / ImageLength")
    return _sized("tiff", size[_TIFF_WIDTH], size[_TIFF_LENGTH])


def _sized(encoding: str, width: int, height: int) -> ImageHeader:
    if width == 0 or height == 0:
        raise HeaderError(f"{encoding} header says {width} x {height} pixels")
    return ImageHeader(encoding, width, height)
