"""A frame in, an OcrResult out: decode, crop to the recipe's code region, read the codes."""

from __future__ import annotations

from lineguard.config import LineConfig
from lineguard.contracts import copy_part, now_ns, timing
from lineguard.imaging import ROI, ImageError, decode_image
from lineguard.services.ocr.codes import FoundCode, read_codes
from lineguard.v1.common_pb2 import Box, Point, Polygon
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.ocr_pb2 import Code, OcrResult


class OcrInputError(ValueError):
    """This frame can never be read; the message says why."""


def ocr_frame(frame: Frame, config: LineConfig) -> OcrResult:
    """The codes on `frame`'s part; raises OcrInputError for a frame that cannot be read."""
    started = now_ns()
    part = frame.part
    try:
        recipe = config.recipe(part.recipe_id)
    except KeyError as exc:
        raise OcrInputError(f"frame of part {part.inspection_id}: {exc.args[0]}") from None
    if frame.WhichOneof("payload") == "object_key":
        raise OcrInputError(f"frame carries object_key {frame.object_key!r}: frames in the object store "
                            "are not supported yet")
    try:
        image = decode_image(frame.data, expected_encoding=frame.encoding or None)
    except ImageError as exc:
        raise OcrInputError(str(exc)) from None
    try:
        codes = read_codes(image, ROI.from_list(recipe.code_roi))
    except ImageError as exc:
        raise OcrInputError(f"recipe {part.recipe_id!r} code_roi: {exc}") from None
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
