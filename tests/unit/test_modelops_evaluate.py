"""`lineguard model eval`: the metric plumbing on made-up predictions whose scores are known
exactly, the dataset reading, and the shipped model end to end on the sample boards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lineguard.cli import app
from lineguard.deeppcb_format import DEEPPCB_CLASSES
from lineguard.modelops.datasets import DatasetError
from lineguard.modelops.evaluate import (
    EvalError,
    Predicted,
    Truth,
    evaluate,
    label_path,
    load_split,
    predict_split,
    read_truth,
)
from lineguard.samples import __file__ as samples_init
from lineguard.testing.boards import sample_split
from lineguard.vision.detections import Detections
from lineguard.vision.model import ModelCard, load_model, packaged_model_path

SAMPLES = Path(samples_init).parent / "deeppcb"
PAIRED = ModelCard.beside(packaged_model_path()).input_mode == "paired"
EXT = ".png" if PAIRED else ".jpg"  # a paired model's dataset stores the paired input as PNG


def deeppcb_boxes(stem: str) -> list[tuple[int, int, int, int, int]]:
    """The sample's boxes as (class id, x1, y1, x2, y2): DeepPCB types 1..6 are class ids 0..5."""
    rows = []
    for line in (SAMPLES / f"{stem}.txt").read_text().splitlines():
        x1, y1, x2, y2, kind = (int(v) for v in line.replace(",", " ").split())
        rows.append((kind - 1, x1, y1, x2, y2))
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 12 sample boards as a YOLO val split in the shipped model's input form: each board with
    its boxes, each board's good part (its template's entry) with an empty label file."""
    return sample_split(tmp_path_factory.mktemp("tiny-deeppcb"), paired=PAIRED)


@pytest.fixture(scope="module")
def truths(dataset: Path) -> list[Truth]:
    split = load_split(dataset, "val")
    return [read_truth(image, 640, 640, len(split.class_names)) for image in split.images]


def defective(truths: list[Truth]) -> list[Truth]:
    return [t for t in truths if len(t.class_ids)]


# --- reading the dataset ---------------------------------------------------------------------


def test_the_split_lists_every_image_and_reads_labels_back_to_deeppcb_pixels(
    dataset: Path, truths: list[Truth]
) -> None:
    split = load_split(dataset)
    assert split.class_names == DEEPPCB_CLASSES
    assert len(split.images) == 24
    assert label_path(split.images[0]) == dataset.parent / "labels" / "val" / f"{split.images[0].stem}.txt"
    by_name = {t.name: t for t in truths}
    for stem in ("00041000", "50600001", "92000001"):
        expected = np.array(deeppcb_boxes(stem), dtype=float)
        truth = by_name[f"{stem}_test{EXT}"]
        assert truth.class_ids.tolist() == expected[:, 0].astype(int).tolist()
        np.testing.assert_allclose(truth.boxes, expected[:, 1:], atol=0.01)
        assert len(by_name[f"{stem}_temp{EXT}"].class_ids) == 0


def test_a_segment_label_is_read_as_its_bounding_box(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("2 0.1 0.1 0.3 0.1 0.3 0.2 0.1 0.2\n")
    truth = read_truth(tmp_path / "images" / "a.jpg", 640, 320, 6)
    assert truth.class_ids.tolist() == [2]
    np.testing.assert_allclose(truth.boxes, [[64, 32, 192, 64]])


def test_a_bad_label_line_and_a_missing_split_are_named(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(EvalError, match=r"no 'test' split"):
        load_split(dataset, "test")
    image = tmp_path / "images" / "a.jpg"
    image.parent.mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match=r"a\.txt:2: class id 7 is outside 0\.\.5"):
        read_truth(image, 640, 640, 6)
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(DatasetError, match=r"a\.txt:1: expected 'class cx cy w h'"):
        read_truth(image, 640, 640, 6)


# --- the metrics on made-up predictions ------------------------------------------------------


def test_the_labels_as_predictions_score_perfectly(truths: list[Truth]) -> None:
    result = evaluate(truths, [Predicted.from_truth(t, score=0.9) for t in truths], DEEPPCB_CLASSES, conf=0.25)
    assert result.map50 == pytest.approx(1.0) and result.map50_95 == pytest.approx(1.0)
    assert all(c.ap50 == pytest.approx(1.0) for c in result.classes)
    boxes = sum(len(t.class_ids) for t in truths)
    assert (result.deeppcb.tp, result.deeppcb.fp, result.deeppcb.fn) == (boxes, 0, 0)
    assert result.deeppcb.f == 1.0 and result.at_conf.precision == 1.0 and result.at_conf.recall == 1.0
    assert (result.parts.defective, result.parts.good) == (12, 12)
    assert result.parts.escape_rate == 0.0 and result.parts.false_reject_rate == 0.0
    # Every box on the diagonal, nothing against background.
    assert np.trace(result.confusion) == boxes and result.confusion.sum() == boxes
    assert [c.boxes for c in result.classes] == np.bincount(
        np.concatenate([t.class_ids for t in truths]), minlength=6
    ).tolist()


def test_one_missed_box_and_one_false_box_give_the_exact_precision_recall_and_f(truths: list[Truth]) -> None:
    boards = defective(truths)
    several = next(t for t in boards if len(t.class_ids) >= 2)
    good = next(t for t in truths if not len(t.class_ids))
    missed_class = int(several.class_ids[0])
    predictions = [Predicted.from_truth(t) for t in truths if t.name not in (several.name, good.name)]
    predictions.append(
        Predicted(
            several.name,
            Detections(
                xyxy=several.boxes[1:], class_id=several.class_ids[1:], confidence=np.ones(len(several.class_ids) - 1)
            ),
        )
    )
    predictions.append(Predicted.of(good.name, [(4, 0.8, 100, 100, 140, 130)]))  # copper on a good board

    result = evaluate(truths, predictions, DEEPPCB_CLASSES, conf=0.25)
    n = sum(len(t.class_ids) for t in truths)
    for counts in (result.deeppcb, result.at_conf):
        assert (counts.tp, counts.fp, counts.fn) == (n - 1, 1, 1)
        assert counts.precision == pytest.approx((n - 1) / n)
        assert counts.recall == pytest.approx((n - 1) / n)
        assert counts.f == pytest.approx(2 * (n - 1) / (2 * (n - 1) + 2))
    n_missed = result.classes[missed_class].boxes
    assert result.classes[missed_class].deeppcb.recall == pytest.approx((n_missed - 1) / n_missed)
    copper = result.classes[4].deeppcb
    assert (copper.fp, copper.precision) == (1, pytest.approx(copper.tp / (copper.tp + 1)))
    # The board with the missed box still has others found: not an escape; the good board is rejected.
    assert (result.parts.escapes, result.parts.false_rejects) == (0, 1)
    assert result.parts.false_reject_rate == pytest.approx(1 / 12)
    assert result.parts.falsely_rejected == (good.name,)
    assert result.confusion[4, 6] == 1 and result.confusion[6, missed_class] == 1


def test_a_board_with_nothing_found_escapes(truths: list[Truth]) -> None:
    missed = defective(truths)[3]
    predictions = [Predicted.from_truth(t) for t in truths if t.name != missed.name]
    result = evaluate(truths, predictions, DEEPPCB_CLASSES, conf=0.25)
    assert (result.parts.escapes, result.parts.escaped) == (1, (missed.name,))
    assert result.parts.escape_rate == pytest.approx(1 / 12)
    assert result.deeppcb.fn == len(missed.class_ids) and result.deeppcb.fp == 0


def test_deeppcb_counts_a_same_class_overlap_above_a_third_that_coco_at_a_half_does_not() -> None:
    truths = [Truth.of("a.jpg", 640, 640, [(0, 100, 100, 140, 140)]), Truth.of("b.jpg", 640, 640, [])]
    # Shifted by 12 px in x and y: IoU = 28 * 28 / (2 * 40 * 40 - 28 * 28) = 0.324 < 0.33; by 10: 0.391.
    near = [Predicted.of("a.jpg", [(0, 0.9, 110, 110, 150, 150)])]
    result = evaluate(truths, near, DEEPPCB_CLASSES, conf=0.25)
    assert (result.deeppcb.tp, result.deeppcb.f) == (1, 1.0)
    assert (result.at_conf.tp, result.at_conf.fp, result.at_conf.fn) == (0, 1, 1)
    assert result.map50 == 0.0
    too_far = [Predicted.of("a.jpg", [(0, 0.9, 112, 112, 152, 152)])]
    assert evaluate(truths, too_far, DEEPPCB_CLASSES, conf=0.25).deeppcb.tp == 0
    other_class = [Predicted.of("a.jpg", [(1, 0.9, 100, 100, 140, 140)])]
    result = evaluate(truths, other_class, DEEPPCB_CLASSES, conf=0.25)
    assert (result.deeppcb.tp, result.deeppcb.fp, result.deeppcb.fn) == (0, 1, 1)
    assert result.confusion[1, 0] == 1  # predicted short where an open is
    assert result.parts.escapes == 0  # the board is still rejected: the part-level verdict is class-blind


def test_detections_under_the_threshold_count_for_ap_but_not_for_the_verdicts(truths: list[Truth]) -> None:
    result = evaluate(truths, [Predicted.from_truth(t, score=0.1) for t in truths], DEEPPCB_CLASSES, conf=0.25)
    assert result.map50 == pytest.approx(1.0)
    assert result.deeppcb.recall == 0.0 and result.deeppcb.precision is None and result.deeppcb.f == 0.0
    assert result.parts.escape_rate == 1.0 and result.parts.false_reject_rate == 0.0


def test_predictions_for_an_unknown_image_or_class_are_refused(truths: list[Truth]) -> None:
    with pytest.raises(EvalError, match=r"prediction for nowhere\.jpg"):
        evaluate(truths, [Predicted.of("nowhere.jpg", [])], DEEPPCB_CLASSES, conf=0.25)
    with pytest.raises(EvalError, match=r"predicted class id 9"):
        evaluate(truths, [Predicted.of(truths[0].name, [(9, 0.9, 1, 1, 5, 5)])], DEEPPCB_CLASSES, conf=0.25)


# --- the shipped model end to end --------------------------------------------------------------


def test_a_model_whose_classes_are_not_the_datasets_is_refused(dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "data.yaml"
    other.write_text(dataset.read_text().replace("pin-hole", "scratch"))
    with pytest.raises(EvalError, match=r"the model's classes .* are not the dataset's"):
        predict_split(load_model(intra_op_threads=1), load_split(other), iou=0.45)


def test_eval_of_the_shipped_model_writes_the_report_metrics_and_plots(dataset: Path, tmp_path: Path) -> None:
    # Four boards keep the test quick; the split as a .txt list of images, which data.yaml allows too.
    listed = [f"images/val/{stem}_{kind}{EXT}" for stem in ("00041000", "50600001") for kind in ("test", "temp")]
    (dataset.parent / "four.txt").write_text("\n".join(listed) + "\n")
    four = tmp_path / "four.yaml"
    four.write_text(dataset.read_text().replace("val: images/val", "val: four.txt"))
    out = tmp_path / "report"
    model = Path(shutil.copyfile(packaged_model_path(), tmp_path / "shipped.onnx"))
    shutil.copyfile(packaged_model_path().with_suffix(".json"), tmp_path / "shipped.json")
    result = CliRunner().invoke(
        app,
        [
            "model",
            "eval",
            "--model",
            str(model),
            "--data",
            str(four),
            "--conf",
            "0.25",
            "--out",
            str(out),
            "--into-card",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "mAP50" in result.output and "escapes" in result.output
    card = json.loads(packaged_model_path().with_suffix(".json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 4 and metrics["conf"] == 0.25
    assert [c["name"] for c in metrics["classes"]] == list(DEEPPCB_CLASSES)
    assert 0.0 <= metrics["map50"] <= 1.0 and (metrics["parts"]["defective"], metrics["parts"]["good"]) == (2, 2)
    assert metrics["provenance"]["model_sha256"] == card["onnx_sha256"]
    report = (out / "report.md").read_text()
    for expected in (
        card["model_id"],
        card["version"],
        card["onnx_sha256"],
        metrics["provenance"]["labels_sha256"],
        "lineguard model eval --model",
        "escape rate",
        "| pin-hole |",
    ):
        assert expected in report
    for png in ("pr_curves.png", "confusion_matrix.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --into-card: the card beside the evaluated copy now carries the headline figures, and how to redo them.
    recorded = json.loads((tmp_path / "shipped.json").read_text())["evaluation"]
    assert recorded["mAP50"] == metrics["map50"] and recorded["images"] == 4
    assert recorded["escapes"] == f"{metrics['parts']['escapes']} of 2" and "--into-card" not in recorded["command"]
    assert recorded["split_labels_sha256"] == metrics["provenance"]["split_labels_sha256"]


def test_a_paired_model_on_a_split_of_plain_images_is_refused(tmp_path: Path) -> None:
    """Each plain board read as its own reference: nothing found, every defective board an escape, exit 0."""
    model = Path(shutil.copyfile(packaged_model_path(), tmp_path / "paired.onnx"))
    card = json.loads(packaged_model_path().with_suffix(".json").read_text())
    card["input"]["mode"] = "paired"
    (tmp_path / "paired.json").write_text(json.dumps(card))
    plain = sample_split(tmp_path / "plain", paired=False)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["model", "eval", "--model", str(model), "--data", str(plain), "--out", str(out)])
    assert result.exit_code == 2, result.output
    said = "".join(result.output.split())
    for expected in ("cannot evaluate on this image:", "is a paired model", "a plain image", "import-deeppcb --paired"):
        assert "".join(expected.split()) in said, expected
    assert not (out / "metrics.json").exists()


# Run in the CLI's interpreter: faster_coco_eval hidden as an install without the eval extra lacks it (its import
# raises ImportError), and every image file the process opens named on stderr.
WITHOUT_EVAL_EXTRA = """
import os, sys
sys.modules["faster_coco_eval"] = None

def opened(event, args):
    if event == "open" and isinstance(args[0], (str, os.PathLike)) and os.fspath(args[0]).endswith((".png", ".jpg")):
        sys.stderr.write(f"opened image {os.fspath(args[0])}\\n")

sys.addaudithook(opened)
"""


def test_eval_without_the_eval_extra_exits_2_naming_it_before_reading_an_image(dataset: Path, tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(WITHOUT_EVAL_EXTRA)
    env = {**os.environ, "PYTHONPATH": str(shim)}
    lineguard = [str(Path(sys.executable).parent / "lineguard"), "model"]
    model = ["--model", str(packaged_model_path())]
    out = tmp_path / "report"
    result = subprocess.run(
        [*lineguard, "eval", *model, "--data", str(dataset), "--out", str(out)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: evaluation needs faster_coco_eval: install lineguard[eval]" in result.stderr
    assert "opened image" not in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
    # The shim does see an image read: predict (no eval extra needed) over the same split names what it opens.
    one = tmp_path / "one"
    one.mkdir()
    shutil.copyfile(dataset.parent / "images" / "val" / f"00041000_test{EXT}", one / f"board{EXT}")
    control = subprocess.run(
        [*lineguard, "predict", *model, "--source", str(one), "--out", str(tmp_path / "pred")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert control.returncode == 0, control.stdout + control.stderr
    assert f"opened image {one / f'board{EXT}'}" in control.stderr
