"""DeepPCB to an Ultralytics dataset, on a tiny DeepPCB-shaped copy of the packaged sample boards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from lineguard.deeppcb_format import DEEPPCB_CLASSES, DeepPCBError, read_boxes
from lineguard.modelops.deeppcb import import_deeppcb, labels_sha256, read_pairs
from lineguard.samples import __file__ as samples_init
from lineguard.testing.boards import deeppcb_layout
from lineguard.vision.paired import REPAIR_MARGIN_PX

SAMPLES = Path(samples_init).parent / "deeppcb"


@pytest.fixture
def deeppcb(tmp_path: Path) -> Path:
    return deeppcb_layout(tmp_path / "deeppcb")


def names_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_val_holds_whole_groups_and_train_the_rest(deeppcb: Path, tmp_path: Path) -> None:
    summary = import_deeppcb(deeppcb, tmp_path / "yolo", val_groups=("group50600", "group77000"))
    train, val = names_in(tmp_path / "yolo/images/train"), names_in(tmp_path / "yolo/images/val")
    groups = lambda names: {n[:5] for n in names}  # noqa: E731
    assert groups(val) == {"50600", "77000"}
    assert groups(train) == {"00041", "13000", "20085", "92000"}
    assert summary.images == {"train": 8, "val": 4}
    assert summary.backgrounds == {"train": 8, "val": 4}
    assert "50600000_test.jpg" in val and "50600000_temp.jpg" in val
    assert summary.val_groups == ("group50600", "group77000")
    assert len(summary.train_groups) == 4
    for split in ("train", "val"):
        labels = names_in(tmp_path / "yolo/labels" / split)
        assert labels == {n.replace(".jpg", ".txt") for n in names_in(tmp_path / "yolo/images" / split)}


def test_labels_are_normalised_yolo_boxes_and_templates_are_empty(deeppcb: Path, tmp_path: Path) -> None:
    import_deeppcb(deeppcb, tmp_path / "yolo", val_groups=("group50600",))
    first = (SAMPLES / "00041000.txt").read_text().split()[:5]  # x1 y1 x2 y2 type
    x1, y1, x2, y2, kind = (int(v) for v in first)
    label = (tmp_path / "yolo/labels/train/00041000_test.txt").read_text().splitlines()
    cls, cx, cy, w, h = label[0].split()
    assert int(cls) == kind - 1
    assert float(cx) == pytest.approx((x1 + x2) / 2 / 640, abs=1e-6)
    assert float(cy) == pytest.approx((y1 + y2) / 2 / 640, abs=1e-6)
    assert float(w) == pytest.approx((x2 - x1) / 640, abs=1e-6)
    assert float(h) == pytest.approx((y2 - y1) / 640, abs=1e-6)
    assert len(label) == len((SAMPLES / "00041000.txt").read_text().strip().splitlines())
    assert (tmp_path / "yolo/labels/train/00041000_temp.txt").read_text() == ""


def test_data_yaml_names_the_six_classes_in_deeppcb_order(deeppcb: Path, tmp_path: Path) -> None:
    summary = import_deeppcb(deeppcb, tmp_path / "yolo", val_groups=("group50600",))
    data = yaml.safe_load(summary.data_yaml.read_text())
    assert data["names"] == {0: "open", 1: "short", 2: "mousebite", 3: "spur", 4: "copper", 5: "pin-hole"}
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    assert Path(data["path"]) == (tmp_path / "yolo").resolve()
    assert sum(summary.boxes_per_class.values()) > 0 and set(summary.boxes_per_class) == set(DEEPPCB_CLASSES)


def test_paired_import_writes_each_board_beside_its_template(deeppcb: Path, tmp_path: Path) -> None:
    summary = import_deeppcb(deeppcb, tmp_path / "yolo", val_groups=("group50600",), paired=True)
    assert yaml.safe_load(summary.data_yaml.read_text())["lineguard_input"] == "paired"
    val = tmp_path / "yolo/images/val"
    assert {"50600000_test.png", "50600000_temp.png"} <= names_in(val)
    board = cv2.imread(str(SAMPLES / "50600000_test.jpg"), cv2.IMREAD_GRAYSCALE)
    template = cv2.imread(str(SAMPLES / "50600000_temp.jpg"), cv2.IMREAD_GRAYSCALE)
    paired = cv2.imread(str(val / "50600000_test.png"))
    assert np.array_equal(paired[:, :, 0], board) and np.array_equal(paired[:, :, 1], template)
    assert np.array_equal(paired[:, :, 2], cv2.absdiff(board, template))
    assert paired[:, :, 2].max() > 128, "the defects stand out in the difference"
    # The good part: the board repaired from its template (an own capture, not the template itself).
    good = cv2.imread(str(val / "50600000_temp.png"))
    assert np.array_equal(good[:, :, 1], template)
    inside = np.zeros(board.shape, bool)
    for _, x1, y1, x2, y2 in read_boxes(deeppcb / "group50600/50600_not/50600000.txt", 640, 640):
        m = REPAIR_MARGIN_PX
        inside[max(0, y1 - m) : y2 + m, max(0, x1 - m) : x2 + m] = True
    assert np.array_equal(good[:, :, 0][inside], template[inside]) and not good[:, :, 2][inside].any()
    assert np.array_equal(good[:, :, 0][~inside], board[~inside]) and good[:, :, 2][~inside].any()
    assert (tmp_path / "yolo/labels/val/50600000_test.txt").read_text().strip()
    # The labels do not depend on how the images are stored.
    plain = import_deeppcb(deeppcb, tmp_path / "plain", val_groups=("group50600",))
    assert plain.labels_sha256 == summary.labels_sha256


def test_fractions_thin_train_evenly_but_never_val(deeppcb: Path, tmp_path: Path) -> None:
    summary = import_deeppcb(
        deeppcb, tmp_path / "yolo", val_groups=("group50600",), train_fraction=0.5, train_template_fraction=0.5
    )
    assert summary.images == {"train": 5, "val": 2}
    assert summary.backgrounds == {"train": 2, "val": 2}
    train = names_in(tmp_path / "yolo/images/train")
    assert len({n[:5] for n in train if n.endswith("_test.jpg")}) == 5  # one of every group, not the first few


def test_the_label_hash_follows_the_labels(deeppcb: Path, tmp_path: Path) -> None:
    first = import_deeppcb(deeppcb, tmp_path / "a", val_groups=("group50600",)).labels_sha256
    assert import_deeppcb(deeppcb, tmp_path / "b", val_groups=("group50600",)).labels_sha256 == first
    (tmp_path / "b/labels/train/00041000_test.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert labels_sha256(tmp_path / "b") != first


def test_unknown_or_all_val_groups_are_refused(deeppcb: Path, tmp_path: Path) -> None:
    with pytest.raises(DeepPCBError, match=r"val_groups \['group99999'\] are not in"):
        import_deeppcb(deeppcb, tmp_path / "yolo", val_groups=("group99999",))
    every = tuple(sorted({p.group for p in read_pairs(deeppcb)}))
    with pytest.raises(DeepPCBError, match="some but not all"):
        import_deeppcb(deeppcb, tmp_path / "yolo", val_groups=every)


def test_a_bad_annotation_line_is_named_with_file_and_line(deeppcb: Path, tmp_path: Path) -> None:
    annotation = deeppcb / "group00041/00041_not/00041000.txt"
    annotation.write_text(annotation.read_text() + "1 2 30 40 7\n")
    with pytest.raises(DeepPCBError, match=r"00041000\.txt:\d+: defect type 7 is not one of 1\.\.6"):
        import_deeppcb(deeppcb, tmp_path / "yolo", val_groups=("group50600",))


def test_a_folder_without_trainval_is_not_deeppcb(tmp_path: Path) -> None:
    with pytest.raises(DeepPCBError, match=r"trainval\.txt: missing"):
        read_pairs(tmp_path)


def test_importing_the_training_module_pulls_in_no_training_runtime() -> None:
    # In a fresh interpreter: another test in this session may have imported ultralytics already.
    code = (
        "import sys, lineguard.modelops.train, lineguard.modelops.export, lineguard.cli; "
        "print(sorted(m for m in ('ultralytics', 'torch') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
    import lineguard.modelops.train as train

    assert train.parse_extra(["val=False", "warmup_epochs=1", "name=x"]) == {
        "val": False,
        "warmup_epochs": 1,
        "name": "x",
    }


def test_import_refuses_a_destination_that_already_holds_a_dataset(tmp_path: Path) -> None:
    dst = tmp_path / "ds"
    (dst / "images" / "val").mkdir(parents=True)
    with pytest.raises(DeepPCBError, match="already holds images/ or labels/"):
        import_deeppcb(tmp_path / "anything", dst)
