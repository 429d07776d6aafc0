"""How good a detection model is on a labelled split (`lineguard model eval`).

Three views of the same predictions:
- COCO: per-class AP50 and AP50-95 (faster-coco-eval, a maintained reimplementation of
  pycocotools' COCOeval), over every detection scoring at least AP_CONF, and precision /
  recall at the chosen confidence threshold with IoU >= 0.5;
- DeepPCB's own protocol: a detection is right when it overlaps a not yet matched box of
  the same class with IoU > 0.33; precision, recall and F per class and over all boxes;
- the part: a board with defects and no detection at or above the threshold escaped; a good
  board (empty label file: DeepPCB's defect-free templates) with one was falsely rejected.

`evaluate` takes truths and predictions as data, so the metric plumbing is tested on
predictions made up in a test; `predict_split` makes them with a model over a data.yaml split
(lineguard.modelops.eval_report runs both and writes the report). faster-coco-eval (the
`eval` extra) is imported inside the functions."""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.imaging import ImageError
from lineguard.modelops.datasets import DatasetError, images_of, label_path, read_label_file
from lineguard.modelops.predict import detect_file
from lineguard.modelops.stats import read_data_yaml
from lineguard.vision.detections import Detections

# AP needs the whole ranking, so detections are kept down to this score (as Ultralytics' val does);
# every thresholded figure (precision, recall, F, escapes, false rejects) uses --conf.
AP_CONF = 0.001
MATCH_IOU = 0.5  # precision / recall and the confusion matrix: the COCO AP50 criterion
DEEPPCB_IOU = 0.33  # DeepPCB's evaluation: IoU > 0.33 with a box of the same class
MAX_DETECTIONS = 300  # per image and class, as many as postprocess ever returns


class EvalError(ValueError):
    """The dataset or predictions cannot be evaluated; the message names the file and the cause."""


@dataclass(frozen=True)
class Truth:
    """One image's labelled boxes: boxes (N, 4) x1 y1 x2 y2 in pixels, class_ids (N,)."""

    name: str
    width: int
    height: int
    boxes: np.ndarray
    class_ids: np.ndarray

    @classmethod
    def of(cls, name: str, width: int, height: int, boxes: Sequence[tuple[int, float, float, float, float]]) -> Truth:
        """From (class_id, x1, y1, x2, y2) rows."""
        rows = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
        return cls(name, width, height, rows[:, 1:5], rows[:, 0].astype(np.int64))


@dataclass(frozen=True)
class Predicted:
    """One image's detections, named by the image."""

    name: str
    detections: Detections

    @classmethod
    def of(cls, name: str, boxes: Sequence[tuple[int, float, float, float, float, float]]) -> Predicted:
        """From (class_id, score, x1, y1, x2, y2) rows."""
        rows = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
        return cls(name, Detections(xyxy=rows[:, 2:6], class_id=rows[:, 0].astype(np.int64), confidence=rows[:, 1]))

    @classmethod
    def from_truth(cls, truth: Truth, score: float = 1.0) -> Predicted:
        """The labels themselves as predictions: what a perfect model would say."""
        return cls(
            truth.name,
            Detections(xyxy=truth.boxes, class_id=truth.class_ids, confidence=np.full(len(truth.class_ids), score)),
        )


@dataclass(frozen=True)
class Counts:
    """Matched detections (tp), unmatched detections (fp), unmatched labelled boxes (fn).

    precision and recall are None where they are 0/0 (no detections; no boxes);
    f = 2tp / (2tp + fp + fn), the harmonic mean of the two, 0 when nothing was found."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f(self) -> float | None:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f": self.f,
        }


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    boxes: int  # labelled boxes of this class
    ap50: float | None  # None: no labelled box of this class, AP is undefined
    ap50_95: float | None
    at_conf: Counts  # IoU >= 0.5, detections scoring >= conf
    deeppcb: Counts  # IoU > 0.33, detections scoring >= conf


@dataclass(frozen=True)
class PartMetrics:
    """Boards as the line sees them: rejected when any detection scores at least conf."""

    defective: int
    good: int
    escapes: int
    false_rejects: int
    escaped: tuple[str, ...]
    falsely_rejected: tuple[str, ...]

    @property
    def escape_rate(self) -> float | None:
        return self.escapes / self.defective if self.defective else None

    @property
    def false_reject_rate(self) -> float | None:
        return self.false_rejects / self.good if self.good else None


@dataclass(frozen=True)
class Evaluation:
    conf: float
    classes: tuple[ClassMetrics, ...]
    map50: float | None
    map50_95: float | None
    at_conf: Counts  # over all classes (sums)
    deeppcb: Counts  # over all classes (sums): DeepPCB's overall precision, recall, F
    parts: PartMetrics
    images: int
    recall_points: np.ndarray  # (R,) the recall levels of the PR curves
    pr_curves: np.ndarray  # (classes, R) interpolated precision at IoU 0.5; NaN where undefined
    confusion: np.ndarray  # (classes + 1, classes + 1): rows predicted, columns true; last = background

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def to_dict(self) -> dict[str, Any]:
        parts = asdict(self.parts)
        parts.update(
            escape_rate=self.parts.escape_rate,
            false_reject_rate=self.parts.false_reject_rate,
            escaped=list(self.parts.escaped),
            falsely_rejected=list(self.parts.falsely_rejected),
        )
        return {
            "conf": self.conf,
            "images": self.images,
            "map50": self.map50,
            "map50_95": self.map50_95,
            "precision": self.at_conf.precision,
            "recall": self.at_conf.recall,
            "at_conf": self.at_conf.as_dict(),
            "deeppcb": {"iou": DEEPPCB_IOU, **self.deeppcb.as_dict()},
            "parts": parts,
            "classes": [
                {
                    "name": c.name,
                    "boxes": c.boxes,
                    "ap50": c.ap50,
                    "ap50_95": c.ap50_95,
                    "precision": c.at_conf.precision,
                    "recall": c.at_conf.recall,
                    "at_conf": c.at_conf.as_dict(),
                    "deeppcb": c.deeppcb.as_dict(),
                }
                for c in self.classes
            ],
            "confusion_matrix": {
                "rows": "predicted",
                "columns": "true",
                "labels": [*self.class_names, "background"],
                "iou": MATCH_IOU,
                "matrix": self.confusion.astype(int).tolist(),
            },
        }


# --- the metrics -------------------------------------------------------------------------------


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    pass


def _coco_truth(truths: Sequence[Truth], class_names: Sequence[str]) -> Any:
    from faster_coco_eval import COCO

    annotations: list[dict[str, Any]] = []
    for image_id, truth in enumerate(truths, 1):
        for box, class_id in zip(truth.boxes, truth.class_ids, strict=True):
            if not 0 <= class_id < len(class_names):
                raise EvalError(f"{truth.name}: class id {class_id} is not one of 0..{len(class_names) - 1}")
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(class_id) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    # COCO ids start at 1: faster-coco-eval reads 0 as "unmatched".
    return COCO(
        {
            "images": [
                {"id": i, "file_name": t.name, "width": t.width, "height": t.height} for i, t in enumerate(truths, 1)
            ],
            "categories": [{"id": i + 1, "name": name} for i, name in enumerate(class_names)],
            "annotations": annotations,
        },
        print_function=_quiet,
    )


def _coco_predictions(gt: Any, predictions: Sequence[Predicted], min_score: float, num_classes: int) -> Any:
    from faster_coco_eval import COCO

    image_ids = {image["file_name"]: image["id"] for image in gt.dataset["images"]}
    annotations: list[dict[str, Any]] = []
    for predicted in predictions:
        if predicted.name not in image_ids:
            raise EvalError(f"prediction for {predicted.name}, which is not an image of the split")
        found = predicted.detections
        # Scores as Python floats: numpy would compare a float32 score with min_score rounded to float32.
        for box, class_id, score in zip(found.xyxy, found.class_id, found.confidence.tolist(), strict=True):
            if score < min_score:
                continue
            if not 0 <= class_id < num_classes:
                raise EvalError(f"{predicted.name}: predicted class id {class_id} is not one of 0..{num_classes - 1}")
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_ids[predicted.name],
                    "category_id": int(class_id) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "score": float(score),
                    "iscrowd": 0,
                }
            )
    return COCO(
        {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": annotations},
        print_function=_quiet,
    )


def _matches(gt: Any, dt: Any, iou: float, *, by_class: bool) -> Any:
    """faster-coco-eval's greedy one-to-one matching (best score first) at one IoU threshold;
    the returned object's cocoGt / cocoDt annotations carry tp / fp / fn flags."""
    from faster_coco_eval.extra import PreviewResults

    return PreviewResults(gt, dt, iouType="bbox", iou_tresh=iou, useCats=by_class)


def _counts_by_class(matched: Any, num_classes: int) -> list[Counts]:
    tp, fp, fn = np.zeros(num_classes, int), np.zeros(num_classes, int), np.zeros(num_classes, int)
    for ann in matched.cocoDt.anns.values():
        (tp if ann.get("tp") else fp)[ann["category_id"] - 1] += 1
    for ann in matched.cocoGt.anns.values():
        if ann.get("fn"):
            fn[ann["category_id"] - 1] += 1
    return [Counts(int(a), int(b), int(c)) for a, b, c in zip(tp, fp, fn, strict=True)]


def _sum(counts: Sequence[Counts]) -> Counts:
    return Counts(sum(c.tp for c in counts), sum(c.fp for c in counts), sum(c.fn for c in counts))


def _confusion(gt: Any, dt: Any, num_classes: int) -> np.ndarray:
    """Class-agnostic matching at IoU 0.5: a matched pair counts at (predicted, true); an unmatched
    detection at (predicted, background), an unmatched box at (background, true)."""
    preview = _matches(gt, dt, MATCH_IOU, by_class=False)
    # faster-coco-eval's layout: rows true class, columns predicted class, then fp, fn per class.
    raw = preview.compute_confusion_matrix() if gt.anns or dt.anns else np.zeros((num_classes, num_classes + 2))
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    matrix[:num_classes, :num_classes] = raw[:, :num_classes].T
    matrix[:num_classes, num_classes] = raw[:, num_classes]
    matrix[num_classes, :num_classes] = raw[:, num_classes + 1]
    return matrix


def _ap(gt: Any, dt: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """COCOeval: the recall levels, the PR curves at IoU 0.5 (class, recall), per-class AP50 and AP50-95
    (NaN for a class without labelled boxes): the means of the interpolated precision, as COCO's summary."""
    from faster_coco_eval import COCOeval_faster

    coco = COCOeval_faster(gt, dt, "bbox", print_function=_quiet)
    coco.params.maxDets = [1, 10, MAX_DETECTIONS]
    coco.params.areaRng, coco.params.areaRngLbl = [[0.0, 1e10]], ["all"]
    coco.evaluate()
    coco.accumulate()
    precision = np.asarray(coco.eval["precision"], dtype=np.float64)[:, :, :, 0, -1]  # (IoU, recall, class)
    precision = np.where(precision > -1, precision, np.nan)  # -1: no labelled box
    iou50 = int(np.argmin(np.abs(np.asarray(coco.params.iouThrs) - 0.5)))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of a class with no boxes is NaN, as meant
        ap50 = np.nanmean(precision[iou50], axis=0)
        ap50_95 = np.nanmean(precision, axis=(0, 1))
    return np.asarray(coco.params.recThrs, dtype=np.float64), precision[iou50].T, ap50, ap50_95


def _mean(values: np.ndarray) -> float | None:
    return float(np.nanmean(values)) if np.isfinite(values).any() else None


def _parts(truths: Sequence[Truth], predictions: Sequence[Predicted], conf: float) -> PartMetrics:
    rejected = {p.name for p in predictions if (p.detections.confidence.astype(np.float64) >= conf).any()}
    defective = [t.name for t in truths if len(t.class_ids)]
    good = [t.name for t in truths if not len(t.class_ids)]
    escaped = tuple(name for name in defective if name not in rejected)
    falsely_rejected = tuple(name for name in good if name in rejected)
    return PartMetrics(
        defective=len(defective),
        good=len(good),
        escapes=len(escaped),
        false_rejects=len(falsely_rejected),
        escaped=escaped,
        falsely_rejected=falsely_rejected,
    )


def evaluate(
    truths: Sequence[Truth], predictions: Sequence[Predicted], class_names: Sequence[str], *, conf: float
) -> Evaluation:
    """Score predictions against the labels of the same images (matched by name; an image
    without predictions had no detections). AP uses every prediction; the rest those >= conf."""
    names = [t.name for t in truths]
    if len(set(names)) != len(names):
        raise EvalError(f"image names repeat in the truths: {sorted({n for n in names if names.count(n) > 1})}")
    if not truths:
        raise EvalError("no images to evaluate")
    num_classes = len(class_names)
    gt = _coco_truth(truths, class_names)
    dt_all = _coco_predictions(gt, predictions, 0.0, num_classes)
    dt_conf = _coco_predictions(gt, predictions, conf, num_classes)

    recall_points, curves, ap50, ap50_95 = _ap(gt, dt_all)
    at_conf = _counts_by_class(_matches(gt, dt_conf, MATCH_IOU, by_class=True), num_classes)
    # COCO matches at IoU >= t; DeepPCB asks for > 0.33: the next float up makes it strict.
    deeppcb = _counts_by_class(_matches(gt, dt_conf, math.nextafter(DEEPPCB_IOU, 1.0), by_class=True), num_classes)
    boxes = np.bincount(np.concatenate([t.class_ids for t in truths]).astype(np.int64), minlength=num_classes)

    def value(x: float) -> float | None:
        return None if np.isnan(x) else float(x)

    classes = tuple(
        ClassMetrics(
            name=name,
            boxes=int(boxes[k]),
            ap50=value(ap50[k]),
            ap50_95=value(ap50_95[k]),
            at_conf=at_conf[k],
            deeppcb=deeppcb[k],
        )
        for k, name in enumerate(class_names)
    )
    return Evaluation(
        conf=conf,
        classes=classes,
        map50=_mean(ap50),
        map50_95=_mean(ap50_95),
        at_conf=_sum(at_conf),
        deeppcb=_sum(deeppcb),
        parts=_parts(truths, predictions, conf),
        images=len(truths),
        recall_points=recall_points,
        pr_curves=curves,
        confusion=_confusion(gt, dt_conf, num_classes),
    )


# --- the dataset -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """The images of one split of an Ultralytics data.yaml and the class names."""

    data_yaml: Path
    name: str
    root: Path
    class_names: tuple[str, ...]
    images: tuple[Path, ...]


def load_split(data_yaml: Path, split: str = "val") -> Split:
    """The images of one split and the class names (data.yaml read as `lineguard data stats` reads it)."""
    root, names, sources = read_data_yaml(data_yaml)
    if split not in sources:
        raise EvalError(f"{data_yaml}: no '{split}' split (it has {sorted(sources)})")
    try:
        images = [image for entry in sources[split] for image in images_of(entry)]
    except DatasetError as exc:
        raise EvalError(str(exc)) from None
    if not images:
        raise EvalError(f"{data_yaml}: the {split} split holds no images")
    return Split(Path(data_yaml), split, root, names, tuple(images))


def read_truth(image: Path, width: int, height: int, num_classes: int) -> Truth:
    """The image's YOLO label file (boxes or polygons, validated line by line) as pixel boxes;
    no label file or an empty one: a good part, no defects."""
    path = label_path(image)
    lines = read_label_file(path, num_classes) if path.is_file() else []
    rows = []
    for line in lines:
        cx, cy, w, h = line.box()
        rows.append(
            (line.class_id, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        )
    return Truth.of(image.name, width, height, rows)


def split_labels_sha256(split: Split) -> str:
    """One hash over the split's label files (path under the root + content, in image order)."""
    digest = hashlib.sha256()
    for image in split.images:
        path = label_path(image)
        name = path.relative_to(split.root).as_posix() if path.is_relative_to(split.root) else path.as_posix()
        digest.update(name.encode() + b"\0")
        digest.update((path.read_bytes() if path.is_file() else b"") + b"\0")
    return digest.hexdigest()


# --- running a model ---------------------------------------------------------------------------


def predict_split(
    detector: Any, split: Split, *, iou: float, on_image: Callable[[Path], None] | None = None
) -> tuple[list[Truth], list[Predicted]]:
    """The model over every image of the split, keeping detections down to AP_CONF."""
    if tuple(detector.card.classes) != split.class_names:
        raise EvalError(
            f"the model's classes {list(detector.card.classes)} are not the dataset's "
            f"{list(split.class_names)} ({split.data_yaml})"
        )
    truths, predictions = [], []
    for image_path in split.images:
        try:
            image, found = detect_file(detector, image_path, conf=AP_CONF, iou=iou)
        except ImageError as exc:
            raise EvalError(f"cannot evaluate on this image: {exc}") from None
        height, width = image.shape[:2]
        truths.append(read_truth(image_path, width, height, len(split.class_names)))
        predictions.append(Predicted(image_path.name, found))
        if on_image is not None:
            on_image(image_path)
    return truths, predictions
