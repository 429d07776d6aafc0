"""What a YOLO dataset (data.yaml) holds, per split: images, backgrounds, instances per class, image sizes,
objects per image and object sizes in pixels. Reads labels with the importers' validator, so a bad line
is reported as `file:line: cause` here too."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from lineguard.modelops.datasets import DatasetError, images_of, label_path, read_label_file

SPLITS: tuple[str, ...] = ("train", "val", "test")
# COCO's object size classes (by area in px²): what the model's smallest feature map has to resolve.
SIZE_CLASSES: tuple[tuple[str, float], ...] = (("small <32²", 32.0**2), ("medium <96²", 96.0**2), ("large", np.inf))
PERCENTILES: tuple[int, ...] = (0, 10, 50, 90, 100)


@dataclass
class SplitStats:
    images: int = 0
    backgrounds: int = 0  # images without objects
    instances: Counter[str] = field(default_factory=Counter)
    image_sizes: Counter[tuple[int, int]] = field(default_factory=Counter)  # (width, height) -> images
    objects_per_image: list[int] = field(default_factory=list)
    box_widths_px: list[float] = field(default_factory=list)
    box_heights_px: list[float] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # image files cv2 cannot decode

    def size_classes(self) -> dict[str, int]:
        areas = np.asarray(self.box_widths_px) * np.asarray(self.box_heights_px)
        counts, lower = {}, 0.0
        for name, upper in SIZE_CLASSES:
            counts[name] = int(((areas >= lower) & (areas < upper)).sum())
            lower = upper
        return counts

    def percentiles(self, values: list[float] | list[int]) -> dict[int, float]:
        if not values:
            return {}
        found = np.percentile(np.asarray(values, dtype=float), PERCENTILES)
        return {p: round(float(v), 1) for p, v in zip(PERCENTILES, found, strict=True)}


@dataclass(frozen=True)
class DatasetStats:
    data_yaml: Path
    names: tuple[str, ...]
    splits: dict[str, SplitStats]


def read_data_yaml(data_yaml: Path) -> tuple[Path, tuple[str, ...], dict[str, list[Path]]]:
    """Root, class names, and per split the image folders / list files it names."""
    data_yaml = Path(data_yaml)
    try:
        data = yaml.safe_load(data_yaml.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"{data_yaml}: not a readable YAML file ({exc})") from None
    if not isinstance(data, dict) or "names" not in data:
        raise DatasetError(f"{data_yaml}: expected a mapping with 'names' (and train / val)")
    raw_names = data["names"]
    names = (
        tuple(str(raw_names[k]) for k in sorted(raw_names))
        if isinstance(raw_names, dict)
        else tuple(str(n) for n in raw_names)
    )
    root = Path(data.get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = (data_yaml.parent / root).resolve()
    sources: dict[str, list[Path]] = {}
    for split in SPLITS:
        entry = data.get(split)
        if not entry:
            continue
        entries = entry if isinstance(entry, list) else [entry]
        sources[split] = [p if p.is_absolute() else root / p for p in map(Path, entries)]
    if "train" not in sources and "val" not in sources:
        raise DatasetError(f"{data_yaml}: names neither a train nor a val split")
    return root, names, sources


def dataset_stats(data_yaml: Path) -> DatasetStats:
    _, names, sources = read_data_yaml(data_yaml)
    splits: dict[str, SplitStats] = {}
    for split, entries in sources.items():
        stats = splits[split] = SplitStats()
        for image in (img for entry in entries for img in images_of(entry)):
            stats.images += 1
            pixels = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
            if pixels is None:
                stats.unreadable.append(str(image))
                continue
            height, width = pixels.shape[:2]
            stats.image_sizes[(width, height)] += 1
            label = label_path(image)
            lines = read_label_file(label, len(names)) if label.is_file() else []
            stats.objects_per_image.append(len(lines))
            stats.backgrounds += not lines
            for line in lines:
                stats.instances[names[line.class_id]] += 1
                _, _, w, h = line.box()
                stats.box_widths_px.append(w * width)
                stats.box_heights_px.append(h * height)
    return DatasetStats(data_yaml=Path(data_yaml), names=names, splits=splits)
