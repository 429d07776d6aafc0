"""Labelled images from other tools to an Ultralytics YOLO dataset (images/{train,val}, labels/{train,val},
data.yaml): a folder of images with YOLO label files, or COCO JSON as CVAT and Label Studio export it.

Every label line is checked before anything is written to its split, so a bad line stops the
import with `file:line: cause` instead of surfacing later as an image Ultralytics silently drops."""

from __future__ import annotations

import json
import math
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# What Ultralytics reads as images (a subset: the formats a line camera or a labelling tool writes).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# Files a YOLO export names its classes in, one name a line (CVAT writes obj.names, LabelImg classes.txt).
CLASS_LIST_FILES: tuple[str, ...] = ("classes.txt", "obj.names")


class DatasetError(ValueError):
    """The source cannot become a dataset; the message names the file (and line or record) and the cause."""


@dataclass(frozen=True)
class LabelLine:
    """One validated YOLO label line: a box (4 numbers) or a polygon (x y pairs), normalised to the image."""

    class_id: int
    values: tuple[float, ...]

    @property
    def is_polygon(self) -> bool:
        return len(self.values) != 4

    def box(self) -> tuple[float, float, float, float]:
        """cx, cy, w, h (normalised); a polygon's bounding box."""
        if not self.is_polygon:
            return self.values  # type: ignore[return-value]
        xs, ys = self.values[0::2], self.values[1::2]
        return ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys))

    def text(self) -> str:
        return " ".join([str(self.class_id), *(f"{v:.6f}" for v in self.values)])


@dataclass(frozen=True)
class DatasetSummary:
    """What an import wrote."""

    dst: Path
    data_yaml: Path
    task: str  # "detect" (boxes) or "segment" (polygons)
    names: tuple[str, ...]
    images: dict[str, int]  # split -> images
    backgrounds: dict[str, int]  # split -> images with no objects (empty label file)
    instances_per_class: dict[str, int]
    labels_sha256: str
    notes: tuple[str, ...] = field(default_factory=tuple)


def parse_label_line(raw: str, nc: int, where: str) -> LabelLine | None:
    """One line of a YOLO label file; None for a blank line. `where` is `file:line` for the error."""
    parts = raw.split()
    if not parts:
        return None
    try:
        class_id = int(parts[0])
    except ValueError:
        raise DatasetError(f"{where}: class id {parts[0]!r} is not an integer (line {raw.strip()!r})") from None
    if not 0 <= class_id < nc:
        raise DatasetError(f"{where}: class id {class_id} is outside 0..{nc - 1} ({nc} classes)")
    try:
        values = tuple(float(v) for v in parts[1:])
    except ValueError:
        raise DatasetError(f"{where}: expected numbers after the class id, got {raw.strip()!r}") from None
    if len(values) != 4 and (len(values) < 6 or len(values) % 2):
        raise DatasetError(
            f"{where}: expected 'class cx cy w h' (5 values) or a polygon 'class x1 y1 x2 y2 x3 y3 ...' "
            f"(class + at least 3 x y pairs), got {len(parts)} values"
        )
    for v in values:
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise DatasetError(f"{where}: coordinate {v} is not normalised to 0..1")
    line = LabelLine(class_id, values)
    if not line.is_polygon and (values[2] <= 0 or values[3] <= 0):
        raise DatasetError(f"{where}: box has zero width or height ({raw.strip()!r})")
    return line


def read_label_file(path: Path, nc: int) -> list[LabelLine]:
    lines = []
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = parse_label_line(raw, nc, f"{path}:{lineno}")
        if line is not None:
            lines.append(line)
    return lines


def task_of(labels: dict[Any, list[LabelLine]]) -> str:
    """detect or segment; a dataset mixing boxes and polygons is an error (Ultralytics would drop the polygons)."""
    first: dict[bool, Any] = {}
    for key, lines in labels.items():
        for line in lines:
            first.setdefault(line.is_polygon, key)
    if len(first) == 2:
        raise DatasetError(
            f"labels mix boxes ({first[False]}) and polygons ({first[True]}); use one kind for the whole dataset"
        )
    return "segment" if first.get(True) is not None else "detect"


def split_val(keys: list[str], val_fraction: float, seed: int) -> set[str]:
    """The keys that go to val: a seeded shuffle of the sorted keys, so the split does not depend on listing order."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if len(keys) < 2:
        raise DatasetError(f"{len(keys)} image(s): need at least 2 to have both a train and a val split")
    ordered = sorted(keys)
    random.Random(seed).shuffle(ordered)
    count = min(len(ordered) - 1, max(1, round(len(ordered) * val_fraction)))
    return set(ordered[:count])


def flat_name(relative: Path) -> str:
    """A file name unique within one split: sub-folders joined with '__' (a.jpg and x/a.jpg must not collide)."""
    return "__".join(relative.parts)


def write_data_yaml(dst: Path, names: tuple[str, ...] | list[str]) -> Path:
    data_yaml = Path(dst) / "data.yaml"
    data = {
        "path": str(Path(dst).resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(names)),
    }
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return data_yaml


def _write_dataset(
    dst: Path,
    names: tuple[str, ...],
    items: dict[str, tuple[Path, list[LabelLine]]],
    val_keys: set[str],
    notes: tuple[str, ...] = (),
) -> DatasetSummary:
    """items: flat name -> (source image, label lines). Copies images and writes one label file each."""
    from lineguard.modelops.deeppcb import labels_sha256  # one label hash for every importer

    dst = Path(dst)
    if (dst / "images").exists() or (dst / "labels").exists():
        raise DatasetError(f"{dst}: already holds images/ or labels/; choose an empty destination")
    task = task_of({items[k][0]: items[k][1] for k in items})
    images = {"train": 0, "val": 0}
    backgrounds = {"train": 0, "val": 0}
    instances: Counter[int] = Counter()
    for split in ("train", "val"):
        (dst / "images" / split).mkdir(parents=True, exist_ok=True)
        (dst / "labels" / split).mkdir(parents=True, exist_ok=True)
    for key in sorted(items):
        image, lines = items[key]
        split = "val" if key in val_keys else "train"
        shutil.copyfile(image, dst / "images" / split / key)
        (dst / "labels" / split / f"{Path(key).stem}.txt").write_text("".join(f"{ln.text()}\n" for ln in lines))
        images[split] += 1
        backgrounds[split] += not lines
        instances.update(ln.class_id for ln in lines)
    return DatasetSummary(
        dst=dst,
        data_yaml=write_data_yaml(dst, names),
        task=task,
        names=names,
        images=images,
        backgrounds=backgrounds,
        instances_per_class={name: instances[i] for i, name in enumerate(names)},
        labels_sha256=labels_sha256(dst),
        notes=notes,
    )


# --- a folder of images + YOLO label files ----------------------------------------------------------------------


def read_class_names(src: Path, names: list[str] | None = None) -> tuple[str, ...]:
    """Class names: given explicitly, else classes.txt / obj.names / data.yaml in src."""
    if names:
        return tuple(names)
    for candidate in CLASS_LIST_FILES:
        path = src / candidate
        if path.is_file():
            found = tuple(n.strip() for n in path.read_text().splitlines() if n.strip())
            if not found:
                raise DatasetError(f"{path}: no class names in it")
            return found
    for candidate in ("data.yaml", "dataset.yaml"):
        path = src / candidate
        if path.is_file():
            raw = (yaml.safe_load(path.read_text()) or {}).get("names")
            if isinstance(raw, dict):
                return tuple(str(raw[k]) for k in sorted(raw))
            if isinstance(raw, list) and raw:
                return tuple(str(n) for n in raw)
            raise DatasetError(f"{path}: has no 'names' list or mapping")
    raise DatasetError(
        f"{src}: no class names; give them (--names a,b,c) or put {' / '.join(CLASS_LIST_FILES)} "
        "or data.yaml with 'names' in the folder"
    )


def _label_for(image: Path, src: Path) -> Path | None:
    """The label file of an image: beside it, or under a labels/ folder that mirrors images/ (Ultralytics' rule)."""
    beside = image.with_suffix(".txt")
    if beside.is_file():
        return beside
    mirrored = src / label_path(image.relative_to(src))
    return mirrored if mirrored.is_file() and mirrored != beside else None


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last /images/ in the path becomes /labels/, the suffix .txt."""
    parts = list(image.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def images_of(source: Path) -> list[Path]:
    """A split entry's images: a folder (searched at any depth) or a .txt list (relative to its folder)."""
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if source.is_file() and source.suffix == ".txt":
        listed = [Path(line.strip()) for line in source.read_text().splitlines() if line.strip()]
        return [p if p.is_absolute() else source.parent / p for p in listed]
    raise DatasetError(f"{source}: neither an image folder nor a .txt list of images")


def import_yolo(
    src: Path, dst: Path, *, names: list[str] | None = None, val_fraction: float = 0.2, seed: int = 0
) -> DatasetSummary:
    """Images under src (any depth) with YOLO .txt labels beside them or in a mirroring labels/ folder.

    An image without a label file is a background (no objects); a label file without an image is an error,
    as it usually means a renamed or missing image. val_fraction of the images go to val (seeded)."""
    src = Path(src)
    if not src.is_dir():
        raise DatasetError(f"{src}: not a folder")
    class_names = read_class_names(src, names)
    inside_dst = Path(dst).resolve()
    images = sorted(
        p
        for p in src.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.resolve().is_relative_to(inside_dst)
    )
    if not images:
        raise DatasetError(f"{src}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    items: dict[str, tuple[Path, list[LabelLine]]] = {}
    used_labels: set[Path] = set()
    for image in images:
        key = flat_name(image.relative_to(src))
        label = _label_for(image, src)
        lines = read_label_file(label, len(class_names)) if label else []
        if label:
            used_labels.add(label.resolve())
        items[key] = (image, lines)
    skip = {(src / f).resolve() for f in CLASS_LIST_FILES}
    orphans = sorted(
        p
        for p in src.rglob("*.txt")
        if p.resolve() not in used_labels | skip and not p.resolve().is_relative_to(inside_dst)
    )
    if orphans:
        raise DatasetError(
            f"{orphans[0]}: label file with no image of the same name "
            f"({len(orphans)} such file(s)); every label needs its image"
        )
    return _write_dataset(Path(dst), class_names, items, split_val(list(items), val_fraction, seed))


# --- COCO JSON (CVAT, Label Studio) -----------------------------------------------------------------------------


def _find_image(images_dir: Path, file_name: str) -> Path | None:
    """CVAT writes names relative to the image folder, Label Studio often 'images/<name>' or a longer path."""
    for candidate in (images_dir / file_name, images_dir / Path(file_name).name):
        if candidate.is_file():
            return candidate
    return None


def _polygons(annotation: dict, where: str) -> list[list[float]]:
    seg = annotation.get("segmentation")
    if not seg:
        return []
    if isinstance(seg, dict):
        raise DatasetError(
            f"{where}: segmentation is an RLE mask, not polygons; export polygons "
            "(or import as detection with --task detect)"
        )
    polygons = [list(map(float, p)) for p in seg if len(p) >= 6]
    if not polygons:
        raise DatasetError(f"{where}: segmentation has no polygon with 3 or more points")
    return polygons


def import_coco(
    annotations_json: Path, images_dir: Path, dst: Path, *, task: str = "auto", val_fraction: float = 0.2, seed: int = 0
) -> DatasetSummary:
    """COCO JSON -> YOLO: bbox [x, y, w, h] in px -> normalised cx cy w h; polygon segmentation -> normalised
    polygons (one line per polygon). Category ids (any numbering) -> class ids 0.. in ascending category id.

    task: detect (boxes only), segment (polygons; an annotation without one gets its box as a rectangle),
    auto (segment when any annotation has a polygon). Images without annotations are backgrounds."""
    annotations_json, images_dir = Path(annotations_json), Path(images_dir)
    if task not in {"auto", "detect", "segment"}:
        raise DatasetError(f"task must be auto, detect or segment, got {task!r}")
    try:
        coco = json.loads(annotations_json.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{annotations_json}: not readable COCO JSON ({exc})") from None
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "categories")):
        raise DatasetError(f"{annotations_json}: expected a COCO object with 'images' and 'categories' lists")
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    if not categories:
        raise DatasetError(f"{annotations_json}: 'categories' is empty")
    class_of = {c["id"]: i for i, c in enumerate(categories)}
    names = tuple(str(c["name"]) for c in categories)
    annotations = coco.get("annotations") or []
    if task == "auto":
        task = (
            "segment"
            if any(isinstance(a.get("segmentation"), list) and a["segmentation"] for a in annotations)
            else "detect"
        )

    images: dict[Any, dict] = {}
    for record in coco["images"]:
        where = f"{annotations_json}: image id {record.get('id')} ({record.get('file_name')!r})"
        path = _find_image(images_dir, str(record.get("file_name", "")))
        if path is None:
            raise DatasetError(f"{where}: not found in {images_dir}")
        width, height = record.get("width"), record.get("height")
        if not width or not height:
            raise DatasetError(f"{where}: no width / height in the record")
        images[record["id"]] = {"path": path, "w": float(width), "h": float(height), "lines": []}

    for index, ann in enumerate(annotations):
        where = f"{annotations_json}: annotations[{index}] (id {ann.get('id')})"
        image = images.get(ann.get("image_id"))
        if image is None:
            raise DatasetError(f"{where}: image_id {ann.get('image_id')} is not in 'images'")
        if ann.get("category_id") not in class_of:
            raise DatasetError(
                f"{where}: category_id {ann.get('category_id')} is not in 'categories' (ids {sorted(class_of)})"
            )
        class_id, w, h = class_of[ann["category_id"]], image["w"], image["h"]
        try:
            x, y, bw, bh = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(
                f"{where}: bbox must be [x, y, width, height] in pixels, got {ann.get('bbox')!r}"
            ) from None
        x1, y1, x2, y2 = max(0.0, x), max(0.0, y), min(w, x + bw), min(h, y + bh)
        if x2 <= x1 or y2 <= y1:
            raise DatasetError(f"{where}: bbox {ann['bbox']} is empty inside the {w:g}x{h:g} image")
        polygons = _polygons(ann, where) if task == "segment" else []
        if task == "segment" and not polygons:
            polygons = [[x1, y1, x2, y1, x2, y2, x1, y2]]
        if polygons:
            for polygon in polygons:
                values = tuple(min(1.0, max(0.0, v / (w if i % 2 == 0 else h))) for i, v in enumerate(polygon))
                image["lines"].append(LabelLine(class_id, values))
        else:
            image["lines"].append(
                LabelLine(class_id, ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h))
            )

    items: dict[str, tuple[Path, list[LabelLine]]] = {}
    for image in images.values():
        key = flat_name(image["path"].relative_to(images_dir))
        if key in items:
            raise DatasetError(f"{annotations_json}: {image['path']} is listed twice in 'images'")
        items[key] = (image["path"], image["lines"])
    return _write_dataset(Path(dst), names, items, split_val(list(items), val_fraction, seed))
