"""Parity: lineguard's numpy pre/post-processing finds the same defects as Ultralytics' own predict
on the same ONNX model and sample boards (same classes, IoU >= 0.95, same scores). For a paired model
Ultralytics gets the paired input as the dataset stores it, lineguard the board and its template."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lineguard.samples import __file__ as samples_init
from lineguard.vision.detect import detect
from lineguard.vision.model import load_model, packaged_model_path
from lineguard.vision.paired import compose

ultralytics = pytest.importorskip("ultralytics", reason="ultralytics is not installed (the train extra)")

# Every other sample board: enough defects to compare, half the time.
BOARDS = sorted((Path(samples_init).parent / "deeppcb").glob("*_test.jpg"))[::2]
CONF, IOU = 0.1, 0.45


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy -> (N, M) IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def test_the_service_finds_what_ultralytics_finds_on_the_sample_boards() -> None:
    assert len(BOARDS) >= 5
    reference = ultralytics.YOLO(str(packaged_model_path()), task="detect")
    detector = load_model(intra_op_threads=2)
    compared = 0
    for board in BOARDS:
        image = cv2.imread(str(board))
        template = cv2.imread(str(board).replace("_test.jpg", "_temp.jpg"))
        # Ultralytics gets the model's input as training stored it; lineguard builds it from the pair.
        model_input = compose(image, template) if detector.card.input_mode == "paired" else image
        pad = 0
        if not detector.card.scaleup:
            # Ultralytics' predict enlarges an image smaller than its input; a card without scaleup pads it
            # instead (as Ultralytics' validation does), so Ultralytics gets the board already padded.
            pad = (detector.card.input_size - model_input.shape[0]) // 2
            model_input = cv2.copyMakeBorder(model_input, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(114,) * 3)
        [theirs] = reference.predict(
            model_input, conf=CONF, iou=IOU, imgsz=detector.card.input_size, device="cpu", verbose=False
        )
        ours = detect(detector, image, conf_threshold=CONF, iou_threshold=IOU, reference=template).detections
        their_boxes = np.clip(theirs.boxes.xyxy.numpy() - pad, 0, image.shape[0])
        their_classes = theirs.boxes.cls.numpy().astype(int)
        assert len(ours) == len(their_boxes), f"{board.name}: {len(ours)} defects, Ultralytics {len(their_boxes)}"
        if not ours:
            continue
        overlap = box_iou(ours.xyxy, their_boxes)
        for i in range(len(ours)):
            j = int(overlap[i].argmax())
            det = ours[i]
            class_id, score = int(det.class_id[0]), float(det.confidence[0])
            assert overlap[i, j] >= 0.95, (
                f"{board.name}: box {det.xyxy[0].tolist()} has no Ultralytics box with IoU >= 0.95"
            )
            assert class_id == their_classes[j], f"{board.name}: class {class_id} vs {their_classes[j]}"
            assert score == pytest.approx(float(theirs.boxes.conf[j]), abs=1e-3)
            compared += 1
    assert compared >= 10, "too few defects above the threshold to show anything"
