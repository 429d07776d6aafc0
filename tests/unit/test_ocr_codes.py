"""Reading codes: zxing on whole images and recipe regions, and frame-to-OcrResult."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import zxingcpp

from lineguard.config import LineConfig
from lineguard.contracts import new_inspection_id
from lineguard.imaging import ROI, FrameError, ImageError, encode_image
from lineguard.ocr.codes import read_codes
from lineguard.runtime.decided import AlreadyDecided
from lineguard.samples import SAMPLE_BOARDS
from lineguard.services.capture.stamping import stamp_serial
from lineguard.services.ocr.results import ocr_frame
from lineguard.v1.common_pb2 import Part
from lineguard.v1.frame_pb2 import Frame

CODE_ROI = ROI(0, 640, 640, 160)  # the demo recipe's code_roi: the strip below the board


def board() -> np.ndarray:
    return cv2.imread(str(SAMPLE_BOARDS / "13000000_temp.jpg"), cv2.IMREAD_GRAYSCALE)


def frame_of(image: np.ndarray, recipe: str = "pcb-a", encoding: str = "png") -> Frame:
    part = Part(inspection_id=new_inspection_id(), line="l1", station="s1", recipe_id=recipe, sequence=5)
    return Frame(
        part=part, encoding=encoding, data=encode_image(image, encoding), width=image.shape[1], height=image.shape[0]
    )


def code_image(text: str, fmt: zxingcpp.BarcodeFormat, scale: int) -> np.ndarray:
    return np.asarray(zxingcpp.create_barcode(text, fmt).to_image(scale=scale, add_quiet_zones=True))


def inside(box: tuple[float, float, float, float], roi: ROI) -> bool:
    x1, y1, x2, y2 = box
    return roi.x <= x1 < x2 <= roi.x + roi.width and roi.y <= y1 < y2 <= roi.y + roi.height


def test_stamped_serial_is_read_in_the_code_region_in_full_image_coordinates() -> None:
    image = stamp_serial(board(), "LG-00001234")
    codes = read_codes(image, CODE_ROI)
    assert [(c.symbology, c.text) for c in codes] == [("DataMatrix", "LG-00001234")]
    assert inside(codes[0].box, CODE_ROI)
    whole = read_codes(image)  # the same code found without a region lies at the same place
    assert whole[0].outline == codes[0].outline


def test_a_board_without_a_code_gives_no_codes() -> None:
    assert read_codes(board()) == []


def test_region_offset_is_added_back_to_the_outline() -> None:
    canvas = np.full((400, 500), 255, np.uint8)
    qr = code_image("QR-7", zxingcpp.BarcodeFormat.QRCode, 4)
    canvas[250 : 250 + qr.shape[0], 300 : 300 + qr.shape[1]] = qr
    codes = read_codes(canvas, ROI(200, 200, 300, 200))
    assert [(c.symbology, c.text) for c in codes] == [("QRCode", "QR-7")]
    x1, y1, x2, y2 = codes[0].box
    # The QR's modules start one quiet zone (4 modules x 4 px) inside the pasted image.
    assert (x1, y1) == pytest.approx((316, 266), abs=2)
    assert (x2, y2) == pytest.approx((300 + qr.shape[1] - 16, 250 + qr.shape[0] - 16), abs=2)


def test_rotated_and_small_codes_are_read() -> None:
    canvas = np.full((300, 300), 255, np.uint8)
    dm = code_image("LG-00000077", zxingcpp.BarcodeFormat.DataMatrix, 5)
    canvas[100 : 100 + dm.shape[0], 100 : 100 + dm.shape[1]] = dm
    turn = cv2.getRotationMatrix2D((150, 150), 33, 1.0)
    rotated = cv2.warpAffine(canvas, turn, (300, 300), borderValue=255)
    assert [c.text for c in read_codes(rotated)] == ["LG-00000077"]
    small = np.full((120, 200), 255, np.uint8)
    tiny = code_image("LG-00000078", zxingcpp.BarcodeFormat.DataMatrix, 2)  # 2 px per module
    small[40 : 40 + tiny.shape[0], 60 : 60 + tiny.shape[1]] = tiny
    assert [c.text for c in read_codes(small)] == ["LG-00000078"]


def test_one_dimensional_codes_are_read() -> None:
    canvas = np.full((200, 600), 255, np.uint8)
    bar = code_image("LINE-42", zxingcpp.BarcodeFormat.Code128, 2)
    bar = cv2.resize(bar, (bar.shape[1], 60), interpolation=cv2.INTER_NEAREST)
    canvas[70:130, 50 : 50 + bar.shape[1]] = bar
    assert [(c.symbology, c.text) for c in read_codes(canvas)] == [("Code128", "LINE-42")]


def test_a_region_outside_the_image_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="lies outside the 640x640 image"):
        read_codes(board(), CODE_ROI)


def test_ocr_frame_reads_the_serial_of_a_stamped_frame(line_config_dict) -> None:
    frame = frame_of(stamp_serial(board(), "LG-00000005"))
    result = ocr_frame(frame, LineConfig(**line_config_dict()))
    assert result.part == frame.part
    assert [(c.symbology, c.text) for c in result.codes] == [("DataMatrix", "LG-00000005")]
    code = result.codes[0]
    assert inside((code.box.x1, code.box.y1, code.box.x2, code.box.y2), CODE_ROI)
    assert len(code.outline.points) == 4
    # The demo recipe reads the printed serial beside the code (recognition only in ocr.text_roi) and
    # checks that both agree; the code carries its print-quality grades (a clean print: A overall).
    assert [line.text for line in result.lines] == ["LG-00000005"]
    assert len(result.lines[0].char_confidences) == len("LG-00000005")
    assert [(f.name, f.value, f.reason) for f in result.fields] == [("serial", "LG-00000005", "")]
    assert code.grade == "A" and code.quality_grades["symbol_contrast"] == "A"
    assert [t.stage for t in result.timings] == ["ocr"]
    assert result.completed_unix_ns > 0


def test_ocr_frame_drops_its_work_once_the_part_is_decided(line_config_dict) -> None:
    """go_on() is asked before the codes' read and before the printed text's; what it raises ends the read there."""
    frame = frame_of(stamp_serial(board(), "LG-00000005"))
    config = LineConfig(**line_config_dict())
    asked: list[int] = []

    def decided_before_the_text() -> None:
        asked.append(len(asked))
        if len(asked) == 2:
            raise AlreadyDecided("decided meanwhile")

    with pytest.raises(AlreadyDecided):
        ocr_frame(frame, config, go_on=decided_before_the_text)
    assert asked == [0, 1]
    calls: list[int] = []
    assert [line.text for line in ocr_frame(frame, config, go_on=lambda: calls.append(1)).lines] == ["LG-00000005"]
    assert calls == [1, 1]


def test_ocr_frame_names_what_is_wrong_with_the_frame(line_config_dict) -> None:
    config = LineConfig(**line_config_dict())
    stamped = stamp_serial(board(), "LG-00000005")
    not_image = frame_of(stamped)
    not_image.data = b"hello, not an image"
    with pytest.raises(FrameError, match="frame is not an image: 19 bytes"):
        ocr_frame(not_image, config)
    with pytest.raises(FrameError, match=r"unknown recipe 'pcb-z' \(known: pcb-a\)"):
        ocr_frame(frame_of(stamped, recipe="pcb-z"), config)
    with pytest.raises(FrameError, match=r"recipe 'pcb-a' code_roi: region 0,640 640x160 lies outside"):
        ocr_frame(frame_of(board()), config)
    in_store = frame_of(stamped)
    in_store.object_key = "frames/abc"
    with pytest.raises(FrameError, match="its image was not fetched from the object store"):
        ocr_frame(in_store, config)
