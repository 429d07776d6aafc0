"""A frame in, an OcrResult out: decode, crop to the recipe's code region, read the codes."""

from __future__ import annotations

from lineguard.config import LineConfig
from lineguard.contracts import copy_part, now_ns, timing
from lineguard.imaging import ROI, FrameError, ImageError, frame_pixels
from lineguard.ocr.codes import FoundCode, read_codes
from lineguard.v1.common_pb2 import Box, Point, Polygon
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.ocr_pb2 import Code, OcrResult


def ocr_frame(frame: Frame, config: LineConfig) -> OcrResult:
    """The codes on `frame`'s part; raises FrameError for a frame that cannot be read."""
    started = now_ns()
    part = frame.part
    recipe, image = frame_pixels(frame, config)
    try:
        codes = read_codes(image, ROI.from_list(recipe.code_roi))
    except ImageError as exc:
        raise FrameError(f"recipe {part.recipe_id!r} code_roi: {exc}") from None
    result = OcrResult(part=copy_part(part), codes=[code_message(c) for c in codes])
    result.timings.append(timing("ocr", started))
    result.completed_unix_ns = now_ns()
    return result


def code_message(code: FoundCode) -> Code:
    x1, y1, x2, y2 = code.box
    return Code(
        symbology=code.symbology,
        text=code.text,
        outline=Polygon(points=[Point(x=x, y=y) for x, y in code.outline]),
        box=Box(x1=x1, y1=y1, x2=x2, y2=y2),
    )
