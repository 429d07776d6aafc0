"""Identity fields: each check's reason code, values given out only when valid, config errors with the
field path, GS1 parsing, bad input to the OCR frame handler, and the decision's verdict on field reasons."""

from __future__ import annotations

import numpy as np
import pytest
import zxingcpp
from pydantic import ValidationError

from lineguard.config import LineConfig, RecipeSettings
from lineguard.config.ocr import FieldRule
from lineguard.contracts import new_inspection_id
from lineguard.imaging import FrameError, encode_image
from lineguard.ocr import gs1
from lineguard.ocr.codes import FoundCode, read_codes
from lineguard.ocr.fields import SeenValues, validate_field
from lineguard.ocr.labels import LabelSettings, render
from lineguard.services.decision.rules import judge
from lineguard.services.ocr.results import ocr_frame
from lineguard.v1.common_pb2 import Part
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.inference_pb2 import InferenceResult

SERIAL = FieldRule(symbology="DataMatrix", pattern=r"LG-\d{7}-\d", checksum="digits-mod10")
BOX = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))


def dm(text: str, **kw) -> FoundCode:
    return FoundCode("DataMatrix", text, BOX, **kw)


def test_each_check_fails_with_its_reason_and_gives_no_value() -> None:
    assert validate_field("serial", SERIAL, [dm("LG-4579018-8")]).value == "LG-4579018-8"
    cases = {
        "NO_READ": [],
        "FORMAT_MISMATCH": [dm("LG-45790188")],
        "CHECKSUM": [dm("LG-4579018-7")],
    }
    for reason, codes in cases.items():
        out = validate_field("serial", SERIAL, codes)
        assert (out.reason, out.value) == (reason, ""), out
    wrong = validate_field("serial", SERIAL, [dm("LG-4579018-7")])
    assert wrong.read == "LG-4579018-7" and "check digit" in wrong.detail
    unreadable = validate_field("serial", SERIAL, [dm("", error="code bytes are not valid text: 2 bytes ff fe")])
    assert unreadable.reason == "FORMAT_MISMATCH" and "not valid text" in unreadable.detail
    disagree = validate_field("serial", FieldRule(), [dm("A1"), FoundCode("QRCode", "A2", BOX)])
    assert disagree.reason == "FORMAT_MISMATCH" and disagree.value == ""
    assert validate_field("lot", FieldRule(required=False), []).valid


def test_code_text_cross_check_and_duplicates_within_the_window() -> None:
    rule = FieldRule(match_text=True)
    assert validate_field("serial", rule, [dm("S1")], ["S1"]).valid
    assert validate_field("serial", rule, [dm("S1")], ["S7"]).reason == "CODE_TEXT_MISMATCH"
    assert validate_field("serial", rule, [dm("S1")], []).reason == "CODE_TEXT_MISMATCH"
    seen = SeenValues()
    unique = FieldRule(unique_window=2)
    reasons = [validate_field("serial", unique, [dm(v)], seen=seen, line="l1").reason for v in "ABACDA"]
    assert reasons == ["", "", "DUPLICATE_SERIAL", "", "", ""]  # the last A is 3 parts back, out of the window
    assert validate_field("serial", unique, [dm("D")], seen=seen, line="l2").valid  # another line's window


def test_gs1_elements_are_parsed_from_the_symbol_and_checked() -> None:
    image, truth = render(LabelSettings(gs1=1.0, rotation_deg=0, glare=0, contrast_min=1, blur_sigma=0), 3, 0)
    found = [c for c in read_codes(image, formats=(zxingcpp.BarcodeFormat.DataMatrix,)) if c.gs1]
    assert found and found[0].gs1 == truth.codes[0].gs1
    gtin = FieldRule(ai="01", checksum="gs1-mod10")
    assert validate_field("gtin", gtin, found).value == truth.codes[0].gs1["01"]
    assert [(e.ai, e.value) for e in gs1.parse("0109506000134352" + "10AB(1)" + gs1.GS + "17261231")] == [
        ("01", "09506000134352"),
        ("10", "AB(1)"),
        ("17", "261231"),
    ]
    for broken, why in [("0109506000134353", "check digit"), ("17261341", "date"), ("99x", "unknown")]:
        with pytest.raises(gs1.GS1Error, match=why):
            gs1.parse(broken)


def test_binary_code_bytes_are_an_error_never_a_serial() -> None:
    barcode = zxingcpp.create_barcode(bytes([0xFF, 0xFE, 0x41, 0x80]), zxingcpp.BarcodeFormat.DataMatrix)
    codes = read_codes(np.asarray(barcode.to_image(scale=4)))
    assert [(c.text, c.error) for c in codes] == [("", "code bytes are not valid text: 4 bytes ff fe 41 80")]


def test_a_bad_regex_or_checksum_or_format_is_a_config_error_with_its_path() -> None:
    for field, value, message in [
        ("pattern", "LG-(", "not a valid regular expression"),
        ("checksum", "crc99", "unknown checksum 'crc99' (known: digits-mod10, gs1-mod10, luhn)"),
        ("symbology", "Datamatrixx", "unknown code format 'Datamatrixx'"),
    ]:
        with pytest.raises(ValidationError) as info:
            RecipeSettings(ocr={"fields": {"serial": {field: value}}})
        error = info.value.errors()[0]
        assert error["loc"] == ("ocr", "fields", "serial", field) and message in error["msg"]
    with pytest.raises(ValidationError, match="unknown code format 'QR'"):
        RecipeSettings(ocr={"formats": ["DataMatrix", "QR"]})


def _frame(data: bytes, recipe: str = "pcb-a") -> Frame:
    part = Part(inspection_id=new_inspection_id(), line="l1", station="s1", recipe_id=recipe, sequence=1)
    return Frame(part=part, encoding="png", data=data)


def test_ocr_frame_checks_fields_and_refuses_bad_frames(line_config_dict) -> None:
    raw = line_config_dict()
    raw["recipes"]["pcb-a"].pop("code_roi", None)
    # A budget no busy CI machine runs out of: this checks the fields, not the ladder's speed.
    raw["recipes"]["pcb-a"]["ocr"] = {
        "formats": ["DataMatrix"],
        "budget_ms": 2000,
        "fields": {"serial": SERIAL.model_dump()},
    }
    config = LineConfig(**raw)
    image, truth = render(LabelSettings(surface="metal", dot_peen=1.0, gs1=0), 4, 1)
    png = encode_image(image)
    result = ocr_frame(_frame(png), config, SeenValues())
    assert [(f.name, f.value, f.reason) for f in result.fields] == [("serial", truth.serial, "")]
    assert judge(config.recipe("pcb-a"), InferenceResult(), result).serial == truth.serial
    blank = ocr_frame(_frame(encode_image(np.full((400, 640), 200, np.uint8))), config)
    verdict = judge(config.recipe("pcb-a"), InferenceResult(), blank)
    assert (verdict.verdict, "NO_READ" in verdict.reasons, verdict.serial) == (Verdict.VERDICT_FAIL, True, "")
    for data, message in [
        (b"", "0 bytes"),
        (b"not an image at all", "frame is not an image"),
        (png[: len(png) // 2], "corrupt png"),
    ]:
        with pytest.raises(FrameError, match=message):
            ocr_frame(_frame(data), config)
    raw["recipes"]["pcb-a"]["code_roi"] = [600, 0, 100, 100]
    with pytest.raises(FrameError, match="code_roi: region 600,0 100x100 lies outside the 640x400 image"):
        ocr_frame(_frame(png), LineConfig(**raw))
