"""`lineguard model predict` and `lineguard model eval`: a model over images, and its scores on a split."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

ModelOption = Annotated[Path, typer.Option("--model", help="the ONNX model (its card <name>.json beside it)")]
ConfOption = Annotated[float, typer.Option("--conf", min=0.0, max=1.0, help="keep detections scoring at least this")]
IouOption = Annotated[
    float, typer.Option("--iou", min=0.0, max=1.0, help="NMS: drop same-class boxes overlapping more")
]


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def _load(model: Path):
    from lineguard.vision.model import ModelLoadError, load_model

    try:
        return load_model(model)
    except ModelLoadError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def predict(
    model: ModelOption,
    source: Annotated[Path, typer.Option("--source", help="folder of images (searched at any depth)")],
    out: Annotated[Path, typer.Option("--out", help="folder for the JSON files, one per image")],
    conf: ConfOption = 0.25,
    iou: IouOption = 0.45,
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help="paired models: the golden image every source image is compared with (without it, "
            "the source holds paired inputs as a paired dataset stores them)",
        ),
    ] = None,
) -> None:
    """Run a model over a folder of images: one JSON per image.

    Each JSON holds the image's size, the model's id and version, and each detection's class,
    score and box in pixels. Unreadable images are reported and skipped (exit code 1). A paired model
    takes --reference or paired inputs; a plain image without --reference is refused (exit code 2)."""
    from lineguard.modelops.predict import PredictError, Skipped, list_images, predict_folder
    from lineguard.vision.errors import UnpairedInput

    try:
        images = list_images(source)
    except PredictError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    detector = _load(model)
    golden = None
    if reference is not None:
        from lineguard.imaging import ImageError
        from lineguard.modelops.predict import read_image

        try:
            golden = read_image(reference)
        except ImageError as exc:
            typer.echo(f"error: --reference: {exc}", err=True)
            raise typer.Exit(2) from None
    with _progress() as progress:
        task = progress.add_task(f"{detector.card.model_id} {detector.card.version}", total=len(images))

        def advance(path: Path, skipped: Skipped | None) -> None:
            if skipped is not None:
                progress.console.print(f"skipped {skipped.reason}", markup=False, highlight=False, soft_wrap=True)
            progress.advance(task)

        try:
            summary = predict_folder(
                detector, source, out, conf=conf, iou=iou, images=images, reference=golden, on_image=advance
            )
        except UnpairedInput as exc:
            typer.echo(
                f"error: {exc}; give the golden image the source images are compared with: --reference IMAGE",
                err=True,
            )
            raise typer.Exit(2) from None
    typer.echo(
        f"{len(summary.written)} images, {summary.detections} detections -> {out}; "
        f"{len(summary.skipped)} unreadable images skipped"
    )
    if summary.skipped:
        raise typer.Exit(1)


def eval_model(
    model: ModelOption,
    data: Annotated[Path, typer.Option("--data", help="an Ultralytics data.yaml")],
    split: Annotated[str, typer.Option("--split", help="the split to score")] = "val",
    conf: ConfOption = 0.25,
    iou: IouOption = 0.45,
    out: Annotated[Path | None, typer.Option("--out", help="report folder (default runs/eval/<model>-<split>)")] = None,
    into_card: Annotated[
        bool,
        typer.Option(
            "--into-card",
            help="also record the headline figures in the model card's `evaluation` (the card beside the model)",
        ),
    ] = False,
) -> None:
    """Score a model on a labelled split of a data.yaml: report.md, metrics.json and plots.

    Per-class precision, recall, AP50, mAP50-95 (COCO evaluation); DeepPCB's F-score (IoU > 0.33,
    same class); escape and false-reject rates of whole boards at --conf; PR curves and a
    confusion matrix as PNG. Needs the `eval` extra; without it exits with 2 and says so."""
    from lineguard.modelops.datasets import DatasetError
    from lineguard.modelops.eval_report import evaluate_model, require_eval_extra
    from lineguard.modelops.evaluate import EvalError
    from lineguard.modelops.extras import ExtraMissing

    try:
        require_eval_extra()  # before the model runs over the split, not after it
    except ExtraMissing as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    out = out or Path("runs/eval") / f"{model.stem}-{split}"
    command = shlex.join(
        [
            "lineguard",
            "model",
            "eval",
            "--model",
            str(model),
            "--data",
            str(data),
            "--split",
            split,
            "--conf",
            f"{conf:g}",
            "--iou",
            f"{iou:g}",
            "--out",
            str(out),
        ]
    )
    detector = _load(model)
    with _progress() as progress:
        task = progress.add_task(f"eval {model.name} on {split}", total=None)
        try:
            evaluation, provenance, paths = evaluate_model(
                detector,
                data,
                split=split,
                conf=conf,
                iou=iou,
                out=out,
                command=command,
                on_start=lambda total: progress.update(task, total=total),
                on_image=lambda _path: progress.advance(task),
            )
        except (EvalError, DatasetError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    parts, deeppcb = evaluation.parts, evaluation.deeppcb
    typer.echo(
        f"{evaluation.images} images: mAP50 {fmt(evaluation.map50)}, mAP50-95 {fmt(evaluation.map50_95)}; "
        f"at score >= {conf:g}: precision {fmt(evaluation.at_conf.precision)}, "
        f"recall {fmt(evaluation.at_conf.recall)}"
    )
    typer.echo(
        f"DeepPCB (IoU > 0.33): precision {fmt(deeppcb.precision)}, recall {fmt(deeppcb.recall)}, F {fmt(deeppcb.f)}"
    )
    typer.echo(
        f"parts: escapes {parts.escapes}/{parts.defective} ({fmt(parts.escape_rate)}), "
        f"false rejects {parts.false_rejects}/{parts.good} ({fmt(parts.false_reject_rate)})"
    )
    typer.echo(f"report: {paths['report']}")
    if into_card:
        from lineguard.modelops.eval_report import card_evaluation
        from lineguard.vision.card import ModelCard
        from lineguard.vision.errors import ModelLoadError

        try:
            # As it is written: a card that leaves its classes or input size to the file's metadata is refused.
            card = ModelCard.beside(model)
        except ModelLoadError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if card is None:
            typer.echo(f"error: {model} has no model card to record the evaluation in", err=True)
            raise typer.Exit(2)
        card = card.model_copy(update={"evaluation": card_evaluation(evaluation, provenance)})
        typer.echo(f"card: {card.write_beside(model)}")
