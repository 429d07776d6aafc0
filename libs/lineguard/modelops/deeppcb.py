"""DeepPCB (as published: groupNNNNN/NNNNN/<stem>_test.jpg + groupNNNNN/NNNNN_not/<stem>.txt,
listed in trainval.txt) to an Ultralytics YOLO detection dataset.

The validation split is by board group: a group is wholly in train or wholly in val,
because the images of one group are crops of the same boards and would leak."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lineguard.deeppcb_format import DEEPPCB_CLASSES, DeepPCBError, read_boxes
from lineguard.imaging import DEFAULT_LIMITS, ImageError, check_size
from lineguard.vision.paired import compose, repaired_board

DEFAULT_VAL_GROUPS: tuple[str, ...] = ("group44000", "group50600")


@dataclass(frozen=True)
class DeepPCBPair:
    """One inspected board area: the image with defects, its defect-free template, its boxes."""

    group: str
    stem: str
    test_image: Path
    template_image: Path
    annotation: Path


@dataclass(frozen=True)
class ImportSummary:
    dst: Path
    data_yaml: Path
    train_groups: tuple[str, ...]
    val_groups: tuple[str, ...]
    images: dict[str, int]  # split -> images with defects
    backgrounds: dict[str, int]  # split -> defect-free templates (empty label files)
    boxes_per_class: dict[str, int]
    labels_sha256: str  # over every label file, in path order: names the labels a model saw


def read_pairs(src: Path) -> list[DeepPCBPair]:
    """The pairs trainval.txt lists, in its order."""
    src = Path(src)
    listing = src / "trainval.txt"
    if not listing.is_file():
        raise DeepPCBError(f"{listing}: missing; is {src} the DeepPCB folder?")
    pairs = []
    for lineno, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DeepPCBError(f"{listing}:{lineno}: expected 'image-path annotation-path', got {line!r}")
        image_rel, annotation_rel = parts
        image = src / image_rel
        stem = image.stem
        pairs.append(
            DeepPCBPair(
                group=Path(image_rel).parts[0],
                stem=stem,
                test_image=image.with_name(f"{stem}_test.jpg"),
                template_image=image.with_name(f"{stem}_temp.jpg"),
                annotation=src / annotation_rel,
            )
        )
    return pairs


def yolo_label_lines(annotation: Path, width: int, height: int) -> list[str]:
    """DeepPCB boxes as YOLO lines (`class cx cy w h`, normalised to the image)."""
    return [
        f"{cls} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
        f"{(y2 - y1) / height:.6f}"
        for cls, x1, y1, x2, y2 in read_boxes(annotation, width, height)
    ]


def _image_size(path: Path) -> tuple[int, int]:
    _check_size(path)
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DeepPCBError(f"{path}: missing or not a readable image")
    height, width = image.shape[:2]
    return width, height


def _check_size(path: Path) -> None:
    """Refuse an image over the default limits from its header, before decoding it (a decompression bomb)."""
    try:
        check_size(path.read_bytes(), DEFAULT_LIMITS)
    except OSError as exc:
        raise DeepPCBError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ImageError as exc:
        raise DeepPCBError(f"{path}: {exc}") from None


def _evenly(pairs: list[DeepPCBPair], fraction: float) -> list[DeepPCBPair]:
    """Every k-th pair, so a fraction still covers every group rather than the first few."""
    if fraction >= 1.0:
        return pairs
    keep = max(1, round(len(pairs) * fraction))
    step = len(pairs) / keep
    return [pairs[int(i * step)] for i in range(keep)]


def _read_grey(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DeepPCBError(f"{path}: missing")
    _check_size(path)
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DeepPCBError(f"{path}: not a readable image")
    return image


def write_paired(pair: DeepPCBPair, image_dir: Path, *, good: bool) -> None:
    """The pair as a paired model's input (lossless PNG): the board beside its template, or (good) the
    board repaired from its template beside the template, written as the template's entry."""
    board, template = _read_grey(pair.test_image), _read_grey(pair.template_image)
    if good:
        boxes = read_boxes(pair.annotation, board.shape[1], board.shape[0])
        board = repaired_board(board, template, [box[1:] for box in boxes])
    try:
        paired_input = compose(board, template)
    except ValueError as exc:
        raise DeepPCBError(f"{pair.test_image}: {exc}") from None
    name = pair.template_image.stem if good else pair.test_image.stem
    cv2.imwrite(str(image_dir / f"{name}.png"), paired_input)


def import_deeppcb(
    src: Path,
    dst: Path,
    val_groups: tuple[str, ...] | list[str] = DEFAULT_VAL_GROUPS,
    *,
    templates: bool = True,
    train_fraction: float = 1.0,
    train_template_fraction: float = 1.0,
    paired: bool = False,
) -> ImportSummary:
    """Write an Ultralytics dataset under dst: images/{train,val}, labels/{train,val}, data.yaml.

    Whole board groups named in val_groups go to val, the rest to train. With templates,
    each pair's defect-free `_temp.jpg` joins its group's split as a background image
    (empty label file): in train the model learns what a good board looks like, in val the
    metrics count its false alarms on good boards. train_fraction keeps an evenly spaced
    share of the training pairs (for quick runs) and train_template_fraction the share of
    those whose template joins train (a short run learns more from defects than from
    backgrounds); val is always whole, templates included.

    With paired, every image is written as a paired model's input (lineguard.vision.paired): the
    board beside its template, as PNG. A template's entry (the good part) is the board repaired from
    its template (lineguard.vision.paired.repaired_board) beside the template."""
    src, dst = Path(src), Path(dst)
    if (dst / "images").exists() or (dst / "labels").exists():
        # Importing over an earlier split could leave its val boards behind while training on them.
        raise DeepPCBError(f"{dst}: already holds images/ or labels/; choose an empty destination")
    pairs = read_pairs(src)
    groups = sorted({p.group for p in pairs})
    unknown = sorted(set(val_groups) - set(groups))
    if unknown:
        raise DeepPCBError(f"val_groups {unknown} are not in {src / 'trainval.txt'} (groups: {groups})")
    if not val_groups or set(val_groups) == set(groups):
        raise DeepPCBError(f"val_groups must name some but not all of the groups {groups}")
    for name, value in (("train_fraction", train_fraction), ("train_template_fraction", train_template_fraction)):
        if not 0.0 < value <= 1.0:
            raise DeepPCBError(f"{name} must be in (0, 1], got {value}")

    splits = {
        "train": _evenly([p for p in pairs if p.group not in val_groups], train_fraction),
        "val": [p for p in pairs if p.group in val_groups],
    }
    images: dict[str, int] = {}
    backgrounds: dict[str, int] = {}
    boxes: Counter[str] = Counter()
    for split, members in splits.items():
        image_dir, label_dir = dst / "images" / split, dst / "labels" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        images[split] = backgrounds[split] = 0
        with_template = {p.stem for p in (_evenly(members, train_template_fraction) if split == "train" else members)}
        for pair in members:
            width, height = _image_size(pair.test_image)
            lines = yolo_label_lines(pair.annotation, width, height)
            if paired:
                write_paired(pair, image_dir, good=False)
            else:
                shutil.copyfile(pair.test_image, image_dir / pair.test_image.name)
            (label_dir / f"{pair.test_image.stem}.txt").write_text("".join(f"{line}\n" for line in lines))
            boxes.update(DEEPPCB_CLASSES[int(line.split()[0])] for line in lines)
            images[split] += 1
            if templates and pair.stem in with_template:
                if not pair.template_image.is_file():
                    raise DeepPCBError(f"{pair.template_image}: template missing")
                if paired:
                    write_paired(pair, image_dir, good=True)
                else:
                    shutil.copyfile(pair.template_image, image_dir / pair.template_image.name)
                (label_dir / f"{pair.template_image.stem}.txt").write_text("")
                backgrounds[split] += 1

    data_yaml = dst / "data.yaml"
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(DEEPPCB_CLASSES))
    # lineguard_input tells training (and so the model card) what the model's input is; Ultralytics ignores it.
    data_yaml.write_text(
        f"path: {dst.resolve()}\ntrain: images/train\nval: images/val\n"
        f"lineguard_input: {'paired' if paired else 'image'}\nnames:\n{names}\n"
    )
    return ImportSummary(
        dst=dst,
        data_yaml=data_yaml,
        train_groups=tuple(g for g in groups if g not in val_groups),
        val_groups=tuple(sorted(val_groups)),
        images=images,
        backgrounds=backgrounds,
        boxes_per_class={name: boxes[name] for name in DEEPPCB_CLASSES},
        labels_sha256=labels_sha256(dst),
    )


def labels_sha256(dataset: Path) -> str:
    """One hash over the label files (relative path + content, in path order)."""
    digest = hashlib.sha256()
    for path in sorted((Path(dataset) / "labels").rglob("*.txt")):
        digest.update(path.relative_to(dataset).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
