"""`lineguard model train` and `lineguard model export`: Ultralytics training and ONNX / TensorRT export.

Both need the `train` extra (torch, ultralytics); without it they exit with 2 and say what to install."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

_out = Console()
_err = Console(stderr=True)


def _fail(exc: Exception) -> typer.Exit:
    _err.print(f"[red]error[/]: {escape(str(exc))}", highlight=False)
    return typer.Exit(2)


def _print_epoch(report) -> None:
    losses = "  ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in report.losses.items())
    metrics = "  ".join(
        f"{k.split('/')[-1]} {v:.3f}"
        for k, v in report.metrics.items()
        if "mAP50" in k or "precision" in k or "recall" in k
    )
    _err.print(
        f"[bold]epoch {report.epoch}/{report.epochs}[/] {report.seconds:.0f} s  {losses}  {metrics}", highlight=False
    )


def train(
    data: Annotated[Path | None, typer.Option(help="the dataset's data.yaml (not with --resume)")] = None,
    model: Annotated[
        str,
        typer.Option(
            help="architecture: yolo11n.yaml (boxes), yolo11n-seg.yaml (masks), "
            "or s / m / l / x sizes; or a trained .pt to continue from in a "
            "new run (a new schedule)"
        ),
    ] = "yolo11n.yaml",
    epochs: Annotated[int, typer.Option(min=1)] = 100,
    imgsz: Annotated[int, typer.Option(min=32, help="square training input side in px")] = 640,
    batch: Annotated[int, typer.Option(min=1)] = 16,
    time_hours: Annotated[
        float | None,
        typer.Option(help="budget for the whole run: Ultralytics fits the epoch count (and LR schedule) to it"),
    ] = None,
    stop_after_hours: Annotated[
        float | None, typer.Option(help="end this session at the first epoch end past it; --resume continues later")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[
        str | None, typer.Option(help="cpu (default), or a GPU index (0, or 0,1); on --resume default: as recorded")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="data loader processes (default 0 on cpu, 8 on a GPU)")] = None,
    brightness: Annotated[float, typer.Option(min=0.0, max=1.0, help="lighting: +- offset, fraction of 255")] = 0.2,
    contrast: Annotated[float, typer.Option(min=0.0, max=1.0, help="lighting: contrast factor 1 +- this")] = 0.3,
    hsv_v: Annotated[float, typer.Option(min=0.0, max=1.0, help="lighting: exposure gain (Ultralytics)")] = 0.4,
    hsv_s: Annotated[float, typer.Option(min=0.0, max=1.0, help="lighting: saturation gain (Ultralytics)")] = 0.7,
    resume: Annotated[Path | None, typer.Option(help="a run folder to continue from its weights/last.pt")] = None,
    out: Annotated[Path | None, typer.Option(help="the run folder (default runs/<model>-<UTC time>)")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="any other Ultralytics train argument, KEY=VALUE (repeat), e.g. --set cache=ram"),
    ] = None,
) -> None:
    """Train YOLO11 (detection, or segmentation with a -seg model) reproducibly; the run folder records it all."""
    from lineguard.modelops.augment import LightingAugmentation
    from lineguard.modelops.extras import ExtraMissing
    from lineguard.modelops.train import (
        RunError,
        TrainConfig,
        parse_extra,
        require_train_extra,
    )
    from lineguard.modelops.train import (
        resume as resume_run,
    )
    from lineguard.modelops.train import (
        train as train_run,
    )

    try:
        require_train_extra()
    except ExtraMissing as exc:
        raise _fail(exc) from None
    try:
        if resume is not None:
            _err.print(f"resuming {resume}", highlight=False)
            result = resume_run(
                resume, device=device, stop_after_hours=stop_after_hours, workers=workers, on_epoch=_print_epoch
            )
        else:
            if data is None:
                raise _fail(ValueError("give --data DATA_YAML (or --resume RUN_DIR)"))
            lighting = LightingAugmentation(hsv_v=hsv_v, hsv_s=hsv_s, brightness=brightness, contrast=contrast)
            config = TrainConfig(
                data_yaml=data,
                model_yaml=model,
                imgsz=imgsz,
                epochs=epochs,
                time_hours=time_hours,
                batch=batch,
                workers=workers,
                seed=seed,
                device=device or "cpu",
                stop_after_hours=stop_after_hours,
                lighting=lighting,
                extra=parse_extra(set_ or []),
            )
            run_dir = out or Path("runs") / f"{Path(model).stem}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
            _err.print(f"training {model} on {data} in {run_dir} (device {device or 'cpu'})", highlight=False)
            result = train_run(config, run_dir, on_epoch=_print_epoch)
    except (RunError, ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from None
    table = Table(title=f"run {result.run_dir}: {result.status}")
    table.add_column("")
    table.add_column("")
    table.add_row("epochs", f"{result.epochs_done} of {result.epochs}")
    table.add_row("best weights", str(result.best))
    table.add_row("last weights", str(result.last))
    for key, value in result.metrics.items():
        if not isinstance(value, dict):
            table.add_row(key, str(value))
    _out.print(table)
    if result.status == "stopped":
        _out.print(
            f"session time budget reached; continue with: lineguard model train --resume {result.run_dir}",
            highlight=False,
        )


def export(
    weights: Annotated[Path, typer.Option(help="trained weights (a run's weights/best.pt)")],
    out: Annotated[Path, typer.Option(help="folder for the .onnx / .engine files and their cards")],
    half: Annotated[bool, typer.Option("--half", help="also an FP16 ONNX (<name>-fp16.onnx)")] = False,
    imgsz: Annotated[int | None, typer.Option(help="input side (default: the training size)")] = None,
    scaleup: Annotated[
        bool,
        typer.Option(
            "--scaleup/--no-scaleup",
            help="enlarge an image smaller than the input "
            "(Ultralytics' predict) or only pad it (its validation); docs/models.md",
        ),
    ] = True,
    opset: Annotated[int, typer.Option(help="ONNX opset, pinned")] = 17,
    tensorrt: Annotated[bool, typer.Option("--tensorrt", help="also a TensorRT engine (GPU machines only)")] = False,
    dynamic_batch: Annotated[
        bool, typer.Option("--dynamic-batch/--fixed-batch", help="a dynamic batch axis, so the service can micro-batch")
    ] = True,
    name: Annotated[str | None, typer.Option(help="file stem (default: the run folder's name)")] = None,
    model_id: Annotated[str | None, typer.Option(help="the card's model_id (default: the name)")] = None,
    version: Annotated[str, typer.Option(help="the card's version")] = "0.1.0",
    description: Annotated[str, typer.Option()] = "",
    dataset_source: Annotated[str, typer.Option(help="where the data came from, for the card")] = "",
    device: Annotated[
        str, typer.Option(help="export on cpu, or on a GPU index (an FP16 file then takes float16 input)")
    ] = "cpu",
    key: Annotated[
        Path | None, typer.Option(help="sign each card with this ed25519 private key (`lineguard model keygen`)")
    ] = None,
) -> None:
    """ONNX (FP32, and FP16 with --half) with a model card beside each file; --tensorrt builds an engine too."""
    from lineguard.modelops.export import ExportError, build_tensorrt_engine, export_onnx, require_gpu
    from lineguard.modelops.extras import ExtraMissing
    from lineguard.modelops.train import CardInfo, RunError

    stem = name or (weights.resolve().parent.parent.name if weights.parent.name == "weights" else weights.stem)
    info = CardInfo(model_id=model_id or stem, version=version, dataset_source=dataset_source, description=description)
    try:
        if tensorrt:
            require_gpu()  # fail before the (slow) ONNX export when no engine can be built here
        exported = export_onnx(
            weights,
            out,
            name=stem,
            imgsz=imgsz,
            opset=opset,
            half=half,
            device=device,
            card=info,
            dynamic_batch=dynamic_batch,
            scaleup=scaleup,
            signing_key=key,
        )
        if tensorrt:
            source = exported[-1].path  # the FP16 ONNX with --half: the engine keeps the ONNX's precision
            exported.append(build_tensorrt_engine(source, signing_key=key))
    except (ExtraMissing, ExportError, RunError) as exc:
        raise _fail(exc) from None
    table = Table(title="exported")
    for column in ("file", "format", "precision", "card"):
        table.add_column(column)
    for item in exported:
        table.add_row(str(item.path), item.format, item.precision, str(item.card))
    _out.print(table)
