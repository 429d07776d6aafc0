"""DeepPCB's annotation format: what a `<stem>.txt` beside a board says, and nothing else.

Both the simulated camera (which repairs a board from its template where the boxes are) and the
dataset importer (lineguard.modelops.deeppcb) read these files; the format lives here so that the
camera does not import training code."""

from __future__ import annotations

from pathlib import Path

# DeepPCB type 1..6 -> class id 0..5 in this order (type 0 is unused by the dataset).
DEEPPCB_CLASSES: tuple[str, ...] = ("open", "short", "mousebite", "spur", "copper", "pin-hole")


class DeepPCBError(ValueError):
    """The source folder is not DeepPCB as published; the message names the file and the cause."""


def read_boxes(annotation: Path, width: int, height: int) -> list[tuple[int, int, int, int, int]]:
    """DeepPCB boxes (`x1 y1 x2 y2 type` in pixels, spaces or commas) as (class id, x1, y1, x2, y2),
    clipped to the image."""
    boxes = []
    for lineno, raw in enumerate(annotation.read_text().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            x1, y1, x2, y2, kind = (int(float(v)) for v in raw.replace(",", " ").split())
        except ValueError as exc:
            raise DeepPCBError(f"{annotation}:{lineno}: expected 'x1 y1 x2 y2 type', got {raw!r}") from exc
        if not 1 <= kind <= len(DEEPPCB_CLASSES):
            raise DeepPCBError(f"{annotation}:{lineno}: defect type {kind} is not one of 1..{len(DEEPPCB_CLASSES)}")
        x1, x2 = sorted((max(0, x1), min(width, x2)))
        y1, y2 = sorted((max(0, y1), min(height, y2)))
        if x2 <= x1 or y2 <= y1:
            raise DeepPCBError(f"{annotation}:{lineno}: empty box {raw!r} in a {width}x{height} image")
        boxes.append((kind - 1, x1, y1, x2, y2))
    return boxes
