"""A frame in, an OcrResult out: decode, crop to the recipe's code region, read the codes through the
ladder (with their print-quality grades), read the printed line when the recipe needs it, check the
recipe's identity fields."""

from __future__ import annotations

from collections.abc import Callable

from lineguard.config import LineConfig
from lineguard.contracts import copy_part, now_ns, timing
from lineguard.imaging import ROI, FrameError, ImageError, frame_pixels
from lineguard.ocr.codes import READ_FORMATS, FoundCode, formats_named, read_ladder
from lineguard.ocr.fields import FieldOutcome, SeenValues, validate
from lineguard.ocr.text import TextLine, read_text
from lineguard.v1.common_pb2 import Box, Point, Polygon
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.ocr_pb2 import Code, FieldRead, OcrResult
from lineguard.v1.ocr_pb2 import TextLine as TextLineMessage


def ocr_frame(
    frame: Frame, config: LineConfig, seen: SeenValues | None = None, *, go_on: Callable[[], None] = lambda: None
) -> OcrResult:
    """The codes on `frame`'s part and its checked fields; raises FrameError for a frame that cannot be
    read. `seen`: the values met before, for DUPLICATE_SERIAL (the service keeps one). `go_on()` is called between
    the steps, before the printed text's read (the costly one), and raises to drop the rest (the part was decided
    meanwhile: lineguard.runtime.decided)."""
    started = now_ns()
    part = frame.part
    recipe, image = frame_pixels(frame, config, grey=True)
    ocr = recipe.ocr
    formats = formats_named(ocr.formats) if ocr.formats else READ_FORMATS
    go_on()
    try:
        reading = read_ladder(
            image, ROI.from_list(recipe.code_roi), formats=formats, wanted=ocr.formats, budget_ms=ocr.budget_ms
        )
    except ImageError as exc:
        raise FrameError(f"recipe {part.recipe_id!r} code_roi: {exc}") from None
    lines: list[TextLine] = []
    if ocr.wants_text():
        go_on()
        # The recipe's box of the printed line: recognition only; else detection over the code region.
        box, where = (ocr.text_roi, "ocr.text_roi") if ocr.text_roi else (recipe.code_roi, "code_roi")
        try:
            rules = [r for r in ocr.fields.values() if r.source == "text"]
            lines = read_text(image, ROI.from_list(box), detect=ocr.text_roi is None, rules=rules)
        except ImageError as exc:
            raise FrameError(f"recipe {part.recipe_id!r} {where}: {exc}") from None
    fields = validate(ocr.fields, reading.codes, [t.text for t in lines], seen=seen, line=part.line)
    result = OcrResult(
        part=copy_part(part),
        codes=[code_message(c) for c in reading.codes],
        lines=[line_message(t) for t in lines],
        fields=[field_message(f) for f in fields],
    )
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
        error=code.error,
        gs1=code.gs1,
        step=code.step,
        quality=code.grades.values if code.grades else {},
        quality_grades=code.grades.letters if code.grades else {},
        grade=code.grades.overall if code.grades else "",
    )


def line_message(line: TextLine) -> TextLineMessage:
    x1, y1, x2, y2 = line.box
    return TextLineMessage(
        text=line.text,
        confidence=line.confidence,
        box=Box(x1=x1, y1=y1, x2=x2, y2=y2),
        char_confidences=line.char_confidences,
    )


def field_message(outcome: FieldOutcome) -> FieldRead:
    return FieldRead(
        name=outcome.name, value=outcome.value, read=outcome.read, reason=outcome.reason, detail=outcome.detail
    )
