"""Machine-readable codes in an image (zxing-cpp), in full-image pixel coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zxingcpp

from lineguard.imaging import ROI

# DataMatrix and QR for serials, every 1D symbology for labels; the other 2D
# symbologies (Aztec, PDF417, MaxiCode) are left out: they only cost time here.
READ_FORMATS = (
    zxingcpp.BarcodeFormat.DataMatrix,
    zxingcpp.BarcodeFormat.QRCode,
    zxingcpp.BarcodeFormat.MicroQRCode,
    zxingcpp.BarcodeFormat.RMQRCode,
    zxingcpp.BarcodeFormat.AllLinear,
)


@dataclass(frozen=True)
class FoundCode:
    symbology: str  # zxing's name: "DataMatrix", "QRCode", "Code128", ...
    text: str
    outline: tuple[tuple[float, float], ...]  # corners: top-left, top-right, bottom-right, bottom-left

    @property
    def box(self) -> tuple[float, float, float, float]:
        """x1, y1, x2, y2 around the outline."""
        xs = [x for x, _ in self.outline]
        ys = [y for _, y in self.outline]
        return min(xs), min(ys), max(xs), max(ys)


def read_codes(image: np.ndarray, roi: ROI | None = None) -> list[FoundCode]:
    """Every code zxing finds in `image` (or in its `roi`), in reading order.

    Raises lineguard.imaging.ImageError when `roi` lies outside the image."""
    region = roi.crop(image) if roi else image
    dx, dy = (roi.x, roi.y) if roi else (0, 0)
    found = []
    # zxing-cpp 3 takes a tuple of formats (its `|` is deprecated) but its stub still asks for BarcodeFormats.
    for barcode in zxingcpp.read_barcodes(region, formats=READ_FORMATS):  # type: ignore[arg-type]
        pos = barcode.position
        corners = (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)
        found.append(
            FoundCode(
                symbology=barcode.format.name,
                text=barcode.text,
                outline=tuple((float(p.x + dx), float(p.y + dy)) for p in corners),
            )
        )
    return found
