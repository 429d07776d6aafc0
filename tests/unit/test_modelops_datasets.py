"""Dataset import (YOLO folders, COCO JSON), statistics and their `lineguard data` commands, on tiny images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from lineguard.cli import app
from lineguard.modelops.augment import BrightnessContrast, adjust
from lineguard.modelops.datasets import DatasetError, import_coco, import_yolo, parse_label_line, split_val
from lineguard.modelops.stats import dataset_stats
from lineguard.testing import unwrapped

NAMES = ["scratch", "dent"]


def write_image(path: Path, width: int = 64, height: int = 64, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))
    return path


@pytest.fixture
def yolo_folder(tmp_path: Path) -> Path:
    """6 images: 4 with labels beside them (2 boxes in a.jpg), one in a labels/ mirror, one background."""
    src = tmp_path / "src"
    for stem in ("a", "b", "c", "d"):
        write_image(src / f"{stem}.jpg")
    (src / "a.txt").write_text("0 0.5 0.5 0.25 0.25\n1 0.25 0.25 0.125 0.5\n")
    (src / "b.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (src / "c.txt").write_text("0 0.1 0.1 0.1 0.1\n\n")
    (src / "d.txt").write_text("")
    write_image(src / "images" / "e.png", 96, 48)
    (src / "labels").mkdir()
    (src / "labels" / "e.txt").write_text("0 0.5 0.5 1 1\n")
    write_image(src / "images" / "f.jpg")  # no label: a background
    (src / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return src


def test_import_yolo_splits_seeded_and_copies_labels(yolo_folder: Path, tmp_path: Path) -> None:
    summary = import_yolo(yolo_folder, tmp_path / "ds", val_fraction=0.34, seed=1)
    assert summary.task == "detect" and summary.names == tuple(NAMES)
    assert summary.images["train"] + summary.images["val"] == 6 and summary.images["val"] == 2
    assert summary.instances_per_class == {"scratch": 3, "dent": 2}
    assert summary.backgrounds["train"] + summary.backgrounds["val"] == 2  # d (empty file) and f (no file)
    data = yaml.safe_load(summary.data_yaml.read_text())
    assert data["names"] == {0: "scratch", 1: "dent"} and data["train"] == "images/train"
    labels = {p.name: p.read_text() for p in (tmp_path / "ds/labels").rglob("*.txt")}
    assert labels["a.txt"].splitlines() == [
        "0 0.500000 0.500000 0.250000 0.250000",
        "1 0.250000 0.250000 0.125000 0.500000",
    ]
    assert "images__e.txt" in labels and labels["images__f.txt"] == ""
    again = import_yolo(yolo_folder, tmp_path / "ds2", val_fraction=0.34, seed=1)
    assert sorted(p.name for p in (tmp_path / "ds2/images/val").iterdir()) == sorted(
        p.name for p in (tmp_path / "ds/images/val").iterdir()
    )
    assert again.labels_sha256 == summary.labels_sha256


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        ("2 0.5 0.5 0.1 0.1", r"a\.txt:2: class id 2 is outside 0\.\.1"),
        ("x 0.5 0.5 0.1 0.1", r"a\.txt:2: class id 'x' is not an integer"),
        ("0 0.5 0.5 0.1", r"a\.txt:2: expected 'class cx cy w h' \(5 values\) or a polygon"),
        ("0 0.5 1.5 0.1 0.1", r"a\.txt:2: coordinate 1\.5 is not normalised"),
        ("0 0.5 0.5 0 0.1", r"a\.txt:2: box has zero width"),
        ("0 0.1 0.1 0.2 0.2 0.3", r"a\.txt:2: expected .* got 6 values"),
    ],
)
def test_a_bad_label_line_is_named_with_file_and_line(yolo_folder: Path, tmp_path: Path, line: str, cause: str) -> None:
    (yolo_folder / "a.txt").write_text(f"0 0.5 0.5 0.25 0.25\n{line}\n")
    with pytest.raises(DatasetError, match=cause):
        import_yolo(yolo_folder, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()  # nothing half-written


def test_polygon_labels_make_a_segmentation_dataset_and_mixing_is_refused(yolo_folder: Path, tmp_path: Path) -> None:
    for name in ("a.txt", "b.txt", "c.txt", "labels/e.txt"):
        (yolo_folder / name).write_text("1 0.1 0.1 0.4 0.1 0.4 0.4 0.1 0.4\n")
    assert import_yolo(yolo_folder, tmp_path / "seg").task == "segment"
    (yolo_folder / "c.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError, match=r"mix boxes .* and polygons"):
        import_yolo(yolo_folder, tmp_path / "mixed")


def test_missing_names_orphan_labels_and_a_used_destination_are_errors(yolo_folder: Path, tmp_path: Path) -> None:
    (yolo_folder / "classes.txt").unlink()
    with pytest.raises(DatasetError, match="no class names; give them"):
        import_yolo(yolo_folder, tmp_path / "ds")
    (yolo_folder / "zz.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match=r"zz\.txt: label file with no image"):
        import_yolo(yolo_folder, tmp_path / "ds", names=NAMES)
    (yolo_folder / "zz.txt").unlink()
    import_yolo(yolo_folder, tmp_path / "ds", names=NAMES)
    with pytest.raises(DatasetError, match="already holds"):
        import_yolo(yolo_folder, tmp_path / "ds", names=NAMES)


def test_split_val_needs_two_images_and_a_fraction_inside_0_1() -> None:
    assert len(split_val([f"{i}.jpg" for i in range(10)], 0.2, 0)) == 2
    assert split_val(["a", "b", "c"], 0.5, 3) == split_val(["c", "b", "a"], 0.5, 3)  # order does not matter
    with pytest.raises(DatasetError, match="at least 2"):
        split_val(["a"], 0.2, 0)
    with pytest.raises(DatasetError, match="between 0 and 1"):
        split_val(["a", "b"], 1.0, 0)
    assert parse_label_line("   ", 2, "f:1") is None


def coco(tmp_path: Path, *, segmentation: bool = False) -> tuple[Path, Path]:
    """CVAT-style COCO: category ids 1 and 3 (non-contiguous), 3 images of 64x64 (one without objects)."""
    images = tmp_path / "coco_images"
    for name in ("p1.jpg", "p2.jpg", "p3.jpg"):
        write_image(images / name)
    annotations = [
        {
            "id": 1,
            "image_id": 10,
            "category_id": 3,
            "bbox": [16, 16, 32, 16],
            "iscrowd": 0,
            "segmentation": [[16, 16, 48, 16, 48, 32, 16, 32]] if segmentation else [],
        },
        {"id": 2, "image_id": 11, "category_id": 1, "bbox": [0, 0, 8, 8], "iscrowd": 0, "segmentation": []},
    ]
    data = {
        "images": [
            {"id": 10, "file_name": "p1.jpg", "width": 64, "height": 64},
            {"id": 11, "file_name": "images/p2.jpg", "width": 64, "height": 64},  # Label Studio style
            {"id": 12, "file_name": "p3.jpg", "width": 64, "height": 64},
        ],
        "categories": [{"id": 3, "name": "dent"}, {"id": 1, "name": "scratch"}],
        "annotations": annotations,
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, images


def test_import_coco_boxes_map_category_ids_in_id_order(tmp_path: Path) -> None:
    annotations, images = coco(tmp_path)
    summary = import_coco(annotations, images, tmp_path / "ds", val_fraction=0.34)
    assert summary.task == "detect" and summary.names == ("scratch", "dent")  # id 1 -> 0, id 3 -> 1
    assert summary.instances_per_class == {"scratch": 1, "dent": 1}
    labels = {p.name: p.read_text() for p in (tmp_path / "ds/labels").rglob("*.txt")}
    assert labels["p1.txt"] == "1 0.500000 0.375000 0.500000 0.250000\n"
    assert labels["p2.txt"] == "0 0.062500 0.062500 0.125000 0.125000\n"
    assert labels["p3.txt"] == ""


def test_import_coco_polygons_become_yolo_seg(tmp_path: Path) -> None:
    annotations, images = coco(tmp_path, segmentation=True)
    summary = import_coco(annotations, images, tmp_path / "ds")
    assert summary.task == "segment"
    labels = {p.name: p.read_text() for p in (tmp_path / "ds/labels").rglob("*.txt")}
    assert labels["p1.txt"].split() == [
        "1",
        "0.250000",
        "0.250000",
        "0.750000",
        "0.250000",
        "0.750000",
        "0.500000",
        "0.250000",
        "0.500000",
    ]
    assert len(labels["p2.txt"].split()) == 9  # a bbox-only annotation becomes a rectangle polygon


def test_import_coco_errors_name_the_record(tmp_path: Path) -> None:
    annotations, images = coco(tmp_path)
    data = json.loads(annotations.read_text())
    data["annotations"][1]["category_id"] = 7
    annotations.write_text(json.dumps(data))
    with pytest.raises(
        DatasetError,
        match=r"annotations\[1\] \(id 2\): category_id 7 is not in 'categories' "
        r"\(ids \[1, 3\]\)",
    ):
        import_coco(annotations, images, tmp_path / "ds")
    data["annotations"][1]["category_id"] = 1
    data["images"][2]["file_name"] = "missing.jpg"
    annotations.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"image id 12 \('missing\.jpg'\): not found in"):
        import_coco(annotations, images, tmp_path / "ds")
    data["images"][2]["file_name"] = "p3.jpg"
    data["annotations"][0]["image_id"] = 99
    annotations.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"annotations\[0\] \(id 1\): image_id 99 is not in 'images'"):
        import_coco(annotations, images, tmp_path / "ds")
    annotations.write_text("{not json")
    with pytest.raises(DatasetError, match="not readable COCO JSON"):
        import_coco(annotations, images, tmp_path / "ds")


def test_stats_counts_classes_sizes_and_backgrounds(yolo_folder: Path, tmp_path: Path) -> None:
    summary = import_yolo(yolo_folder, tmp_path / "ds", val_fraction=0.34, seed=1)
    stats = dataset_stats(summary.data_yaml)
    both = [stats.splits["train"], stats.splits["val"]]
    assert sum(s.images for s in both) == 6 and sum(s.backgrounds for s in both) == 2
    assert sum((s.instances for s in both), start=type(both[0].instances)()) == {"scratch": 3, "dent": 2}
    sizes = sum((s.image_sizes for s in both), start=type(both[0].image_sizes)())
    assert sizes == {(64, 64): 5, (96, 48): 1}
    widths = sorted(w for s in both for w in s.box_widths_px)
    assert widths == [6.4, 8.0, 16.0, 32.0, 96.0]  # e.png's full-image box is 96 px wide
    assert sum(s.size_classes()["small <32²"] for s in both) == 3  # 32x32 (b) is already medium
    assert sum(s.size_classes()["medium <96²"] for s in both) == 2


def test_stats_names_a_bad_label_line(yolo_folder: Path, tmp_path: Path) -> None:
    summary = import_yolo(yolo_folder, tmp_path / "ds", val_fraction=0.5)
    label = next((tmp_path / "ds/labels").rglob("a.txt"))
    label.write_text("5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match=r"a\.txt:1: class id 5 is outside 0\.\.1"):
        dataset_stats(summary.data_yaml)


def test_brightness_contrast_changes_pixels_about_the_mean() -> None:
    image = np.array([[[100, 100, 100], [200, 200, 200]]], np.uint8)
    assert adjust(image, 2.0, 0).tolist() == [[[50] * 3, [250] * 3]]  # mean 150, contrast doubled
    assert adjust(image, 1.0, 30).tolist() == [[[130] * 3, [230] * 3]]  # brightness offset
    labels = {"img": image.copy()}
    assert BrightnessContrast(0.2, 0.3, p=0.0)(labels)["img"].tolist() == image.tolist()


def test_on_a_paired_input_only_the_image_is_relit_and_the_difference_follows() -> None:
    from lineguard.vision.paired import compose

    rng = np.random.default_rng(0)
    image, reference = rng.integers(0, 256, (32, 32), np.uint8), rng.integers(0, 256, (32, 32), np.uint8)
    paired = compose(image, reference)
    out = BrightnessContrast(0.3, 0.3, p=1.0, paired=True)({"img": paired.copy()})["img"]
    assert not np.array_equal(out[:, :, 0], image), "the image channel is relit"
    assert np.array_equal(out[:, :, 1], reference), "the golden reference was taken once: it keeps its light"
    assert np.array_equal(out[:, :, 2], cv2.absdiff(out[:, :, 0], reference))


runner = CliRunner()


def test_cli_import_yolo_stats_and_a_clear_exit_2(yolo_folder: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["data", "import-yolo", str(yolo_folder), str(tmp_path / "ds"), "--val-fraction", "0.34"]
    )
    assert result.exit_code == 0, result.output
    assert "scratch" in result.output and "data.yaml" in result.output
    result = runner.invoke(app, ["data", "stats", str(tmp_path / "ds/data.yaml")])
    assert result.exit_code == 0, result.output
    assert "class dent" in result.output and "64x64: " in result.output
    (yolo_folder / "b.txt").write_text("0 0.5 0.5 0.5\n")
    result = runner.invoke(app, ["data", "import-yolo", str(yolo_folder), str(tmp_path / "ds2")])
    assert result.exit_code == 2
    assert unwrapped("b.txt:1: expected 'class cx cy w h'") in unwrapped(result.output)


def test_cli_import_coco_and_deeppcb(tmp_path: Path) -> None:
    annotations, images = coco(tmp_path)
    result = runner.invoke(app, ["data", "import-coco", str(annotations), str(images), str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ds/data.yaml").is_file()
    result = runner.invoke(app, ["data", "import-deeppcb", str(tmp_path / "nowhere"), str(tmp_path / "d2")])
    assert result.exit_code == 2 and unwrapped("trainval.txt: missing") in unwrapped(result.output)


def test_cli_import_deeppcb_prints_the_split(tmp_path: Path) -> None:
    from lineguard.testing.boards import deeppcb_layout

    src = deeppcb_layout(tmp_path / "deeppcb")
    result = runner.invoke(
        app,
        [
            "data",
            "import-deeppcb",
            str(src),
            str(tmp_path / "yolo"),
            "--val-groups",
            "group50600",
            "--val-groups",
            "group77000",
            "--paired",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "val groups: group50600, group77000" in result.output
    assert "lineguard_input: paired" in (tmp_path / "yolo" / "data.yaml").read_text()


def test_train_without_the_train_extra_exits_2_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import lineguard.modelops.train as train

    # A run-time install lacks these; a module name that cannot exist stands in for a missing torch.
    monkeypatch.setattr(train, "TRAIN_EXTRA_MODULES", ("lineguard_no_such_module",))
    result = runner.invoke(app, ["model", "train", "--data", str(tmp_path / "data.yaml")])
    assert result.exit_code == 2
    assert "install lineguard[train]" in result.output.replace("\n", " ")
