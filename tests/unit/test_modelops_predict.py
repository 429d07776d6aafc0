"""`lineguard model predict`: the shipped model over the sample boards, one valid JSON per image;
unreadable images reported, skipped and counted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from lineguard.cli import app
from lineguard.modelops.predict import PREDICTION_FORMAT, PredictError, detection_records, list_images
from lineguard.samples import __file__ as samples_init
from lineguard.testing import unwrapped
from lineguard.testing.boards import write_model_input
from lineguard.vision.detect import detect
from lineguard.vision.detections import Detections
from lineguard.vision.model import load_model, packaged_model_path

SAMPLES = Path(samples_init).parent / "deeppcb"
PAIRED = json.loads(packaged_model_path().with_suffix(".json").read_text())["input"].get("mode") == "paired"


def predict(source: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        ["model", "predict", "--model", str(packaged_model_path()), "--source", str(source), "--out", str(out), *extra],
    )
    return result.exit_code, result.output


def test_predict_writes_one_valid_json_per_sample_board(tmp_path: Path) -> None:
    # Three boards, with defects and defect-free, keep the test quick; as the shipped model's dataset holds them.
    card = json.loads(packaged_model_path().with_suffix(".json").read_text())
    images = sorted(
        write_model_input(stem, kind, tmp_path, paired=PAIRED)
        for stem, kind in (("00041000", "test"), ("00041000", "temp"), ("50600001", "test"))
    )
    code, output = predict(tmp_path, tmp_path / "out", "--conf", "0.2", "--iou", "0.5")
    assert code == 0, output
    assert {p.stem.split("_")[1] for p in images} == {"temp", "test"}
    written = sorted((tmp_path / "out").glob("*.json"))
    assert [p.stem for p in written] == [p.stem for p in images]
    assert f"{len(images)} images" in output and "0 unreadable images skipped" in output
    detections = 0
    for path, image in zip(written, images, strict=True):
        record = json.loads(path.read_text())
        assert record["format"] == PREDICTION_FORMAT
        assert (record["image"], record["width"], record["height"]) == (image.name, 640, 640)
        assert record["model"] == {"id": card["model_id"], "version": card["version"], "classes": card["classes"]}
        assert record["thresholds"] == {"conf": 0.2, "iou": 0.5}
        for det in record["detections"]:
            assert det["class_name"] == card["classes"][det["class_id"]]
            assert 0.2 <= det["score"] <= 1.0
            box = det["box"]
            assert 0 <= box["x1"] < box["x2"] <= 640 and 0 <= box["y1"] < box["y2"] <= 640
            assert "polygon" not in det  # a detection model has no masks
        detections += len(record["detections"])
    assert detections > 0 and f"{detections} detections" in output


def test_unreadable_images_are_named_skipped_and_fail_the_run(tmp_path: Path) -> None:
    source = tmp_path / "in"
    (source / "line2").mkdir(parents=True)
    for stem, target in (("00041000", source / "good"), ("50600001", source / "line2" / "also-good")):
        readable = write_model_input(stem, "test", tmp_path / "stage", paired=PAIRED)
        shutil.copyfile(readable, target.with_suffix(readable.suffix))
    (source / "cut.jpg").write_bytes((SAMPLES / "00041000_test.jpg").read_bytes()[:3000])
    (source / "notes.png").write_text("not an image")
    (source / "readme.txt").write_text("ignored: not an image suffix")
    code, output = predict(source, tmp_path / "out")
    assert code == 1
    assert "cut.jpg: truncated jpeg" in output
    assert "notes.png: frame is not an image" in output
    assert "2 images" in output and "2 unreadable images skipped" in output
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.json")) == [
        "good.json",
        "line2/also-good.json",
    ]


def test_a_source_without_images_or_with_clashing_names_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PredictError, match="no such folder"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictError, match="no images"):
        list_images(tmp_path / "empty")
    (tmp_path / "twice").mkdir()
    shutil.copyfile(SAMPLES / "00041000_test.jpg", tmp_path / "twice" / "a.jpg")
    shutil.copyfile(SAMPLES / "00041000_test.jpg", tmp_path / "twice" / "a.png")
    with pytest.raises(PredictError, match=r"would both write a\.json"):
        list_images(tmp_path / "twice")
    code, output = predict(tmp_path / "empty", tmp_path / "out")
    assert code == 2 and "no images" in output


def test_a_segmentation_detection_carries_its_mask_outline_and_size() -> None:
    classes = ("open", "short", "mousebite", "spur", "copper", "pin-hole")
    seg = Detections(
        xyxy=[[10, 20, 30, 40]],
        class_id=[4],
        confidence=[0.8],
        polygon=(np.array([(10.0, 20.0), (30.0, 20.0), (30.0, 40.0), (10.0, 40.0)]),),
        mask_px=[400],
    )
    [record] = detection_records(seg, classes)
    assert record["polygon"] == [[10.0, 20.0], [30.0, 20.0], [30.0, 40.0], [10.0, 40.0]]
    assert record["mask_px"] == 400
    assert record["box"] == {"x1": 10, "y1": 20, "x2": 30, "y2": 40}
    assert "polygon" not in detection_records(Detections([[1, 2, 3, 4]], [0], [0.9]), classes)[0]


def test_a_paired_model_compares_each_image_with_the_given_golden_reference(tmp_path: Path) -> None:
    """--reference: raw line images and one golden image, as a line without a paired dataset has them."""
    model = Path(shutil.copyfile(packaged_model_path(), tmp_path / "paired.onnx"))
    card = json.loads(packaged_model_path().with_suffix(".json").read_text())
    card["input"]["mode"] = "paired"
    (tmp_path / "paired.json").write_text(json.dumps(card))
    source = tmp_path / "in"
    source.mkdir()
    shutil.copyfile(SAMPLES / "00041000_test.jpg", source / "board.jpg")
    cv2.imwrite(str(source / "small.png"), np.zeros((100, 100), np.uint8))
    result = CliRunner().invoke(
        app,
        [
            "model",
            "predict",
            "--model",
            str(model),
            "--source",
            str(source),
            "--out",
            str(tmp_path / "out"),
            "--reference",
            str(SAMPLES / "00041000_temp.jpg"),
            "--conf",
            "0.05",
        ],
    )
    assert result.exit_code == 1, result.output
    assert unwrapped("small.png: the reference image is 640x640 but the image is 100x100") in unwrapped(result.output)
    record = json.loads((tmp_path / "out" / "board.json").read_text())
    expected = detect(
        load_model(model),
        cv2.imread(str(SAMPLES / "00041000_test.jpg")),
        conf_threshold=0.05,
        iou_threshold=0.45,
        reference=cv2.imread(str(SAMPLES / "00041000_temp.jpg")),
    )
    scores = expected.detections.confidence.tolist()
    assert [d["score"] for d in record["detections"]] == pytest.approx(scores, abs=1e-4)
    assert record["detections"]
    result = CliRunner().invoke(
        app,
        [
            "model",
            "predict",
            "--model",
            str(model),
            "--source",
            str(source),
            "--out",
            str(tmp_path / "out2"),
            "--reference",
            str(tmp_path / "nowhere.png"),
        ],
    )
    assert result.exit_code == 2 and "--reference:" in result.output and "nowhere.png" in result.output


def paired_model(folder: Path) -> Path:
    """The shipped model, its card saying it is paired (as the shipped card does; stated, not assumed)."""
    model = Path(shutil.copyfile(packaged_model_path(), folder / "paired.onnx"))
    card = json.loads(packaged_model_path().with_suffix(".json").read_text())
    card["input"]["mode"] = "paired"
    (folder / "paired.json").write_text(json.dumps(card))
    return model


def test_a_plain_image_given_to_a_paired_model_without_reference_is_refused(tmp_path: Path) -> None:
    """The user trial: a defective board alone read as its own reference gave 0 detections, exit 0."""
    model = paired_model(tmp_path)
    source = tmp_path / "one"
    source.mkdir()
    shutil.copyfile(SAMPLES / "00041000_test.jpg", source / "00041000_test.jpg")
    args = ["model", "predict", "--model", str(model), "--source", str(source), "--out", str(tmp_path / "pred1")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    for said in ("00041000_test.jpg: model deeppcb-yolo11n", "is a paired model", "a plain image", "--reference IMAGE"):
        assert unwrapped(said) in unwrapped(result.output), said
    assert not list((tmp_path / "pred1").rglob("*.json"))
    # The same board as the paired dataset stores it is judged; beside it a plain image still stops the run:
    # it is not a bad file to skip but input the model cannot compare.
    paired = tmp_path / "paired"
    write_model_input("00041000", "test", paired, paired=True)
    found = CliRunner().invoke(app, [*args[:4], "--source", str(paired), "--out", str(tmp_path / "pred2")])
    assert found.exit_code == 0, found.output
    assert json.loads((tmp_path / "pred2" / "00041000_test.json").read_text())["detections"]
    shutil.copyfile(SAMPLES / "50600001_test.jpg", paired / "50600001_test.jpg")
    mixed = CliRunner().invoke(app, [*args[:4], "--source", str(paired), "--out", str(tmp_path / "pred3")])
    assert mixed.exit_code == 2 and unwrapped("50600001_test.jpg: model deeppcb-yolo11n") in unwrapped(mixed.output)
