"""`lineguard data ...`: datasets for training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

data_app = typer.Typer(no_args_is_help=True, help="Datasets: import (DeepPCB, YOLO folders, COCO JSON) and statistics.")

_out = Console()
_err = Console(stderr=True)

ValFraction = Annotated[float, typer.Option(min=0.0, max=1.0, help="share of the images that go to val (seeded)")]
Seed = Annotated[int, typer.Option(help="seed of the train / val split")]


def _fail(exc: Exception) -> typer.Exit:
    _err.print(f"[red]error[/]: {escape(str(exc))}", highlight=False)
    return typer.Exit(2)


def _print_summary(
    title: str,
    dst: Path,
    data_yaml: Path,
    names: tuple[str, ...] | list[str],
    images: dict[str, int],
    backgrounds: dict[str, int],
    instances: dict[str, int],
    labels_sha256: str,
    extra: Sequence[tuple[str, str]] = (),
) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("")
    for split in images:
        table.add_column(split, justify="right")
    table.add_row("images", *(str(images[s]) for s in images))
    table.add_row("of them backgrounds (no objects)", *(str(backgrounds.get(s, 0)) for s in images))
    _out.print(table)
    classes = Table(title="instances per class (all splits)")
    classes.add_column("id", justify="right")
    classes.add_column("class")
    classes.add_column("instances", justify="right")
    for i, name in enumerate(names):
        classes.add_row(str(i), name, str(instances.get(name, 0)))
    _out.print(classes)
    for key, value in [("dataset", str(dst)), ("data.yaml", str(data_yaml)), ("labels sha256", labels_sha256), *extra]:
        _out.print(f"{key}: {value}", highlight=False)


@data_app.command("import-deeppcb")
def import_deeppcb_command(
    src: Annotated[Path, typer.Argument(help="DeepPCB as published (the folder holding trainval.txt)")],
    dst: Annotated[Path, typer.Argument(help="where the YOLO dataset goes")],
    val_groups: Annotated[
        list[str] | None,
        typer.Option(
            "--val-groups", help="board groups wholly in val (repeat the option); default group44000 group50600"
        ),
    ] = None,
    templates: Annotated[bool, typer.Option(help="add each defect-free template as a background image")] = True,
    train_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="evenly spaced share of train pairs")] = 1.0,
    train_template_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of train pairs whose template joins train")
    ] = 1.0,
    paired: Annotated[
        bool, typer.Option(help="write each board beside its template, as a paired (reference-comparing) model's input")
    ] = False,
) -> None:
    """DeepPCB -> YOLO detection dataset; validation split by board group, so val boards are never trained on."""
    from lineguard.deeppcb_format import DEEPPCB_CLASSES, DeepPCBError
    from lineguard.modelops.deeppcb import DEFAULT_VAL_GROUPS, import_deeppcb

    try:
        summary = import_deeppcb(
            src,
            dst,
            tuple(val_groups or DEFAULT_VAL_GROUPS),
            templates=templates,
            train_fraction=train_fraction,
            train_template_fraction=train_template_fraction,
            paired=paired,
        )
    except (DeepPCBError, OSError) as exc:
        raise _fail(exc) from None
    _print_summary(
        "DeepPCB -> YOLO",
        summary.dst,
        summary.data_yaml,
        DEEPPCB_CLASSES,
        summary.images,
        summary.backgrounds,
        summary.boxes_per_class,
        summary.labels_sha256,
        [("val groups", ", ".join(summary.val_groups)), ("train groups", ", ".join(summary.train_groups))],
    )


@data_app.command("import-yolo")
def import_yolo_command(
    src: Annotated[Path, typer.Argument(help="images with YOLO .txt labels beside them or in a labels/ mirror")],
    dst: Annotated[Path, typer.Argument(help="where the YOLO dataset goes (must not hold one)")],
    names: Annotated[
        str | None,
        typer.Option(
            help="class names in id order, comma-separated (default: classes.txt / obj.names / data.yaml in SRC)"
        ),
    ] = None,
    val_fraction: ValFraction = 0.2,
    seed: Seed = 0,
) -> None:
    """A folder of images + YOLO labels (boxes or polygons) -> a YOLO dataset with a train / val split."""
    from lineguard.modelops.datasets import DatasetError, import_yolo

    try:
        summary = import_yolo(src, dst, names=names.split(",") if names else None, val_fraction=val_fraction, seed=seed)
    except (DatasetError, OSError) as exc:
        raise _fail(exc) from None
    _print_summary(
        f"YOLO folder -> YOLO ({summary.task})",
        summary.dst,
        summary.data_yaml,
        summary.names,
        summary.images,
        summary.backgrounds,
        summary.instances_per_class,
        summary.labels_sha256,
    )


@data_app.command("import-coco")
def import_coco_command(
    annotations: Annotated[Path, typer.Argument(help="COCO JSON (CVAT / Label Studio 'COCO' export)")],
    images: Annotated[Path, typer.Argument(help="the folder the JSON's file_name entries are relative to")],
    dst: Annotated[Path, typer.Argument(help="where the YOLO dataset goes (must not hold one)")],
    task: Annotated[str, typer.Option(help="auto | detect | segment (polygons)")] = "auto",
    val_fraction: ValFraction = 0.2,
    seed: Seed = 0,
) -> None:
    """COCO JSON -> YOLO: boxes, or polygons for segmentation; category ids -> class ids 0.. in id order."""
    from lineguard.modelops.datasets import DatasetError, import_coco

    try:
        summary = import_coco(annotations, images, dst, task=task, val_fraction=val_fraction, seed=seed)
    except (DatasetError, OSError) as exc:
        raise _fail(exc) from None
    _print_summary(
        f"COCO -> YOLO ({summary.task})",
        summary.dst,
        summary.data_yaml,
        summary.names,
        summary.images,
        summary.backgrounds,
        summary.instances_per_class,
        summary.labels_sha256,
    )


@data_app.command("stats")
def stats_command(data_yaml: Annotated[Path, typer.Argument(help="the dataset's data.yaml")]) -> None:
    """Per split: images, backgrounds, instances per class, image sizes, objects per image, object sizes in px."""
    from lineguard.modelops.datasets import DatasetError
    from lineguard.modelops.stats import PERCENTILES, dataset_stats

    try:
        stats = dataset_stats(data_yaml)
    except (DatasetError, OSError) as exc:
        raise _fail(exc) from None
    splits = list(stats.splits)
    table = Table(title=f"{data_yaml}")
    table.add_column("")
    for split in splits:
        table.add_column(split, justify="right")

    def row(label: str, values: list[str]) -> None:
        table.add_row(label, *values)

    row("images", [str(stats.splits[s].images) for s in splits])
    row("backgrounds (no objects)", [str(stats.splits[s].backgrounds) for s in splits])
    row("unreadable images", [str(len(stats.splits[s].unreadable)) for s in splits])
    table.add_section()
    for name in stats.names:
        row(f"class {name}", [str(stats.splits[s].instances[name]) for s in splits])
    table.add_section()
    row(
        "image sizes (w x h: images)",
        ["\n".join(f"{w}x{h}: {n}" for (w, h), n in stats.splits[s].image_sizes.most_common(5)) for s in splits],
    )
    ptiles = "/".join(f"p{p}" for p in PERCENTILES)
    for label, attr in (
        (f"objects per image {ptiles}", "objects_per_image"),
        (f"box width px {ptiles}", "box_widths_px"),
        (f"box height px {ptiles}", "box_heights_px"),
    ):
        row(
            label,
            [
                " / ".join(f"{v:g}" for v in stats.splits[s].percentiles(getattr(stats.splits[s], attr)).values())
                or "-"
                for s in splits
            ],
        )
    for size_class in stats.splits[splits[0]].size_classes():
        row(f"boxes {size_class} px²", [str(stats.splits[s].size_classes()[size_class]) for s in splits])
    _out.print(table)
    for split in splits:
        for path in stats.splits[split].unreadable[:10]:
            _err.print(f"[yellow]unreadable image[/] ({split}): {path}", highlight=False)
