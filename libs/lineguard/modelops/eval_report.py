"""The report of an evaluation (`lineguard model eval`): run a model over a split, score it with
lineguard.modelops.evaluate, and write what was measured and of what: report.md, metrics.json,
pr_curves.png, confusion_matrix.png. matplotlib (the `eval` extra) is imported inside the plots."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.hashing import file_sha256
from lineguard.modelops.deeppcb import labels_sha256
from lineguard.modelops.evaluate import (
    AP_CONF,
    DEEPPCB_IOU,
    MATCH_IOU,
    Evaluation,
    evaluate,
    load_split,
    predict_split,
    split_labels_sha256,
)
from lineguard.modelops.extras import require_extra
from lineguard.vision.card import Evaluation as CardEvaluation

EVAL_EXTRA_MODULES: tuple[str, ...] = ("faster_coco_eval", "matplotlib")  # the COCO metrics, the plots


def require_eval_extra() -> None:
    """ExtraMissing naming what of the eval extra is not installed."""
    require_extra("eval", EVAL_EXTRA_MODULES, "evaluation")


@dataclass
class Provenance:
    """What the numbers are of: recorded in the report so a figure can be traced to its inputs."""

    model_path: str
    model_id: str
    model_version: str
    model_sha256: str
    card_sha256: str | None
    card_labels_sha256: str | None
    data_yaml: str
    split: str
    labels_sha256: str | None
    split_labels_sha256: str
    conf: float
    iou: float
    command: str
    made: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def evaluate_model(
    detector: Any,
    data_yaml: Path,
    *,
    split: str = "val",
    conf: float = 0.25,
    iou: float = 0.45,
    out: Path,
    command: str,
    on_start: Callable[[int], None] | None = None,
    on_image: Callable[[Path], None] | None = None,
) -> tuple[Evaluation, Provenance, dict[str, Path]]:
    """Run a loaded model (lineguard.vision.load_model) over the split, score it, and write the
    report under out; returns the scores, what they are of, and the files written."""
    require_eval_extra()
    data = load_split(data_yaml, split)
    if on_start is not None:
        on_start(len(data.images))
    truths, predictions = predict_split(detector, data, iou=iou, on_image=on_image)
    evaluation = evaluate(truths, predictions, data.class_names, conf=conf)
    card = detector.card
    provenance = Provenance(
        model_path=str(detector.path),
        model_id=card.model_id,
        model_version=card.version,
        model_sha256=file_sha256(detector.path),
        card_sha256=card.onnx_sha256,
        card_labels_sha256=card.dataset.labels_sha256 if card.dataset else None,
        data_yaml=str(data.data_yaml),
        split=split,
        labels_sha256=labels_sha256(data.root) if (data.root / "labels").is_dir() else None,
        split_labels_sha256=split_labels_sha256(data),
        conf=conf,
        iou=iou,
        command=command,
    )
    return evaluation, provenance, write_report(evaluation, provenance, out)


# --- the report --------------------------------------------------------------------------------


def plot_pr_curves(evaluation: Evaluation, path: Path) -> Path:
    """Precision against recall at IoU 0.5, one line per class and their mean."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 6), dpi=120)
    axes = figure.subplots()
    for metrics, curve in zip(evaluation.classes, evaluation.pr_curves, strict=True):
        if metrics.ap50 is not None:
            axes.plot(evaluation.recall_points, curve, linewidth=1.2, label=f"{metrics.name} {metrics.ap50:.3f}")
    if evaluation.map50 is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class without boxes has no curve: NaN, left out
            mean = np.nanmean(evaluation.pr_curves, axis=0)
        axes.plot(
            evaluation.recall_points,
            mean,
            color="black",
            linewidth=2.5,
            label=f"all classes {evaluation.map50:.3f} mAP50",
        )
    axes.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="Precision-recall at IoU 0.5 (legend: AP50)",
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    figure.savefig(path)
    return path


def plot_confusion(evaluation: Evaluation, path: Path) -> Path:
    """The confusion matrix as counts, rows predicted and columns true."""
    from matplotlib.figure import Figure

    labels = [*evaluation.class_names, "background"]
    matrix = evaluation.confusion
    figure = Figure(figsize=(8, 7), dpi=120)
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set(
        xlabel="true", ylabel="predicted", title=f"Confusion matrix (IoU {MATCH_IOU}, score >= {evaluation.conf:g})"
    )
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            axes.text(
                col,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize="small",
                color="white" if count > threshold else "black",
            )
    figure.tight_layout()
    figure.savefig(path)
    return path


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _rate(count: int, total: int, rate: float | None) -> str:
    return f"{count} / {total} = {_fmt(rate)}" if rate is not None else f"{count} / {total} (none to judge)"


def report_markdown(evaluation: Evaluation, provenance: Provenance) -> str:
    e, p = evaluation, provenance
    parts = e.parts
    lines = [
        f"# Evaluation of {p.model_id} {p.model_version}",
        "",
        "| | |",
        "| --- | --- |",
        f"| model | `{p.model_path}` |",
        f"| model id / version | {p.model_id} / {p.model_version} |",
        f"| model sha256 | `{p.model_sha256}` |",
    ]
    if p.card_sha256 and p.card_sha256 != p.model_sha256:
        lines.append(f"| model card's sha256 | `{p.card_sha256}` (differs from the file's!) |")
    lines += [
        f"| dataset | `{p.data_yaml}`, split `{p.split}`, {e.images} images |",
        f"| dataset label hash | `{p.labels_sha256 or '—'}` |",
        f"| split label hash | `{p.split_labels_sha256}` |",
    ]
    if p.card_labels_sha256:
        same = (
            "the same labels"
            if p.card_labels_sha256 == p.labels_sha256
            else "differs: the model was trained on another import of the labels"
        )
        lines.append(f"| model card's dataset label hash | `{p.card_labels_sha256}` ({same}) |")
    lines += [
        f"| thresholds | score >= {p.conf:g}, NMS IoU {p.iou:g} (AP over every detection scoring >= {AP_CONF}) |",
        f"| made | {p.made} |",
        "",
        "Made by:",
        "",
        "```",
        p.command,
        "```",
        "",
        "## Summary",
        "",
        f"- mAP50 {_fmt(e.map50)}, mAP50-95 {_fmt(e.map50_95)} (COCO evaluation, faster-coco-eval)",
        f"- at score >= {e.conf:g}, IoU >= {MATCH_IOU}: precision {_fmt(e.at_conf.precision)}, "
        f"recall {_fmt(e.at_conf.recall)}",
        f"- DeepPCB protocol (same class, IoU > {DEEPPCB_IOU}, score >= {e.conf:g}): "
        f"precision {_fmt(e.deeppcb.precision)}, recall {_fmt(e.deeppcb.recall)}, **F {_fmt(e.deeppcb.f)}**",
        f"- parts: escape rate {_rate(parts.escapes, parts.defective, parts.escape_rate)} defective boards "
        f"judged good; false-reject rate {_rate(parts.false_rejects, parts.good, parts.false_reject_rate)} "
        "good boards judged bad",
        "",
        "## Per class",
        "",
        f"Precision and recall at score >= {e.conf:g} and IoU >= {MATCH_IOU}; "
        f"P / R / F (DeepPCB) at IoU > {DEEPPCB_IOU}. — where undefined (no boxes or no detections).",
        "",
        "| class | boxes | precision | recall | AP50 | AP50-95 | TP | FP | FN | P (DeepPCB) | R (DeepPCB) "
        "| F (DeepPCB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in e.classes:
        d = c.deeppcb
        lines.append(
            f"| {c.name} | {c.boxes} | {_fmt(c.at_conf.precision)} | {_fmt(c.at_conf.recall)} | "
            f"{_fmt(c.ap50)} | {_fmt(c.ap50_95)} | {d.tp} | {d.fp} | {d.fn} | {_fmt(d.precision)} | "
            f"{_fmt(d.recall)} | {_fmt(d.f)} |"
        )
    d = e.deeppcb
    lines += [
        f"| **all** | {sum(c.boxes for c in e.classes)} | {_fmt(e.at_conf.precision)} | {_fmt(e.at_conf.recall)} | "
        f"{_fmt(e.map50)} | {_fmt(e.map50_95)} | {d.tp} | {d.fp} | {d.fn} | {_fmt(d.precision)} | "
        f"{_fmt(d.recall)} | {_fmt(d.f)} |",
        "",
        "Over all classes: precision, recall and F from the summed counts; mAP the mean of the classes' AP.",
        "",
        "## Parts",
        "",
        f"A board is judged bad when any detection scores >= {e.conf:g}. Good boards are the images with an "
        "empty (or no) label file.",
        "",
        "| | boards | wrong | rate |",
        "| --- | ---: | ---: | ---: |",
        f"| defective (escape: judged good) | {parts.defective} | {parts.escapes} | {_fmt(parts.escape_rate)} |",
        f"| good (false reject: judged bad) | {parts.good} | {parts.false_rejects} | {_fmt(parts.false_reject_rate)} |",
        "",
    ]
    for label, names in (("Escaped", parts.escaped), ("Falsely rejected", parts.falsely_rejected)):
        if names:
            lines += [f"{label}: " + ", ".join(names[:50]) + (" …" if len(names) > 50 else ""), ""]
    lines += [
        "## Plots",
        "",
        "![precision-recall curves](pr_curves.png)",
        "",
        f"![confusion matrix](confusion_matrix.png) (rows predicted, columns true, IoU {MATCH_IOU}, "
        f"score >= {e.conf:g}; background row: missed boxes, background column: false alarms)",
        "",
        "All figures are also in `metrics.json`.",
        "",
    ]
    return "\n".join(lines)


def write_report(evaluation: Evaluation, provenance: Provenance, out: Path) -> dict[str, Path]:
    """report.md, metrics.json, pr_curves.png and confusion_matrix.png under out."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.json",
        "report": out / "report.md",
        "pr_curves": plot_pr_curves(evaluation, out / "pr_curves.png"),
        "confusion_matrix": plot_confusion(evaluation, out / "confusion_matrix.png"),
    }
    metrics = {"provenance": asdict(provenance), **evaluation.to_dict()}
    paths["metrics"].write_text(json.dumps(metrics, indent=2) + "\n")
    paths["report"].write_text(report_markdown(evaluation, provenance))
    return paths


def card_evaluation(evaluation: Evaluation, provenance: Provenance) -> CardEvaluation:
    """The headline figures for the model card's `evaluation`: what a reader of the card asks first, with
    the command and label hash that reproduce them (the full figures stay in metrics.json)."""
    parts, deeppcb = evaluation.parts, evaluation.deeppcb
    return CardEvaluation.model_validate(
        {
            "command": provenance.command,
            "made": provenance.made,
            "data_yaml": provenance.data_yaml,
            "split": provenance.split,
            "split_labels_sha256": provenance.split_labels_sha256,
            "images": evaluation.images,
            "mAP50": evaluation.map50,
            "mAP50-95": evaluation.map50_95,
            "deeppcb_f": deeppcb.f,
            "deeppcb_precision": deeppcb.precision,
            "deeppcb_recall": deeppcb.recall,
            "conf": provenance.conf,
            "escape_rate": parts.escape_rate,
            "escapes": f"{parts.escapes} of {parts.defective}",
            "false_reject_rate": parts.false_reject_rate,
            "false_rejects": f"{parts.false_rejects} of {parts.good}",
        }
    )
