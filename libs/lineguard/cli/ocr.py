"""`lineguard ocr ...`: identity reads: make labels, read images as the OCR service would, evaluate on a set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ocr_app = typer.Typer(
    no_args_is_help=True, help="Identity reads: generate labels with their truth, read images, evaluate a set."
)


@ocr_app.command("make-labels")
def make_labels(
    out: Annotated[Path, typer.Argument(help="folder for label-NNNNN.png + label-NNNNN.json (the truth)")],
    count: Annotated[int, typer.Option(min=1, help="how many labels")] = 100,
    seed: Annotated[int, typer.Option(help="image i is drawn from (seed, i): one image can be made again alone")] = 0,
    surface: Annotated[str, typer.Option(help="paper | metal (brushed, laser-etched or dot-peened marks)")] = "paper",
    rotation: Annotated[float, typer.Option(min=0, max=180, help="|angle| up to this (degrees)")] = 25.0,
    perspective: Annotated[float, typer.Option(min=0, max=0.2, help="corner shift up to this share")] = 0.05,
    blur: Annotated[float, typer.Option(min=0, help="gaussian blur sigma up to this (px)")] = 1.2,
    noise: Annotated[float, typer.Option(min=0, help="sensor noise sigma up to this (grey levels)")] = 8.0,
    glare: Annotated[float, typer.Option(min=0, max=1, help="share of images with a specular highlight")] = 0.4,
    contrast_min: Annotated[float, typer.Option(min=0.05, max=1, help="lowest mark contrast (1: black)")] = 0.25,
    exposure: Annotated[float, typer.Option(min=0, max=0.9, help="gain drawn in 1 +- this")] = 0.3,
    dot_peen: Annotated[
        float | None, typer.Option(min=0, max=1, help="share of dot-peened DataMatrix (default: metal 0.7, paper 0)")
    ] = None,
    gs1: Annotated[float, typer.Option(min=0, max=1, help="share of DataMatrix holding a GS1 element string")] = 0.3,
) -> None:
    """Synthetic labels (serial as text, DataMatrix and QR) on paper or metal, with the truth beside each."""
    from lineguard.ocr.labels import LabelSettings, write_set

    if surface not in ("paper", "metal"):
        typer.echo(f"error: --surface must be paper or metal, not {surface!r}", err=True)
        raise typer.Exit(2)
    settings = LabelSettings(
        surface=surface,  # type: ignore[arg-type]  # checked above
        rotation_deg=rotation,
        perspective=perspective,
        blur_sigma=blur,
        noise_sigma=noise,
        glare=glare,
        contrast_min=contrast_min,
        exposure=exposure,
        dot_peen=dot_peen,
        gs1=gs1,
    )
    written = write_set(out, count, seed, settings)
    typer.echo(f"{len(written)} labels in {out} (settings in {out / 'settings.json'})")


@ocr_app.command("read")
def read(
    images: Annotated[list[Path], typer.Argument(help="image files (PNG, JPEG, BMP, TIFF)")],
    config: Annotated[Path | None, typer.Option(help="the line's YAML: read as its recipe says")] = None,
    recipe: Annotated[str | None, typer.Option(help="recipe id in --config (default: the first)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per image on its own line")] = False,
) -> None:
    """What the OCR service would read: codes (symbology, text, box, GS1 elements, ladder step, print-quality
    grades), ms."""
    import json

    import zxingcpp

    from lineguard.imaging import ROI, ImageError, decode_image
    from lineguard.ocr.codes import DEFAULT_BUDGET_MS, READ_FORMATS, formats_named, read_ladder

    roi = None
    formats: tuple[zxingcpp.BarcodeFormat, ...] = READ_FORMATS
    wanted: tuple[str, ...] = ()
    budget = DEFAULT_BUDGET_MS
    if config is not None:
        from lineguard.config import ConfigError, load_config

        try:
            line = load_config(config)
            settings = line.recipe(recipe or next(iter(line.recipes)))
        except (ConfigError, KeyError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        roi = ROI.from_list(settings.code_roi)
        if settings.ocr.formats:
            formats, wanted = formats_named(settings.ocr.formats), tuple(settings.ocr.formats)
        budget = settings.ocr.budget_ms
    failed = False
    for path in images:
        try:
            image = decode_image(path.read_bytes(), grey=True)
            reading = read_ladder(image, roi, formats=formats, wanted=wanted, budget_ms=budget)
        except (OSError, ImageError) as exc:
            failed = True
            typer.echo(json.dumps({"image": str(path), "error": str(exc)}) if as_json else f"{path}: {exc}")
            continue
        codes = [
            {"symbology": c.symbology, "text": c.text, "box": [round(v, 1) for v in c.box], "gs1": c.gs1}
            | {"error": c.error, "step": c.step}
            | ({"grade": c.grades.overall, "quality": c.grades.values, "grades": c.grades.letters} if c.grades else {})
            for c in reading.codes
        ]
        if as_json:
            out = {"image": str(path), "codes": codes, "steps": reading.steps_tried, "ms": round(reading.ms, 2)}
            typer.echo(json.dumps(out))
        else:
            typer.echo(f"{path}: {len(codes)} codes in {reading.ms:.1f} ms")
            for c in reading.codes:
                typer.echo(f"  {c.symbology}: {c.text or c.error!r} (step {c.step})")
    if failed:
        raise typer.Exit(1)


@ocr_app.command("eval")
def eval_set(
    folder: Annotated[Path, typer.Argument(help="a set made by `lineguard ocr make-labels`")],
    formats: Annotated[str, typer.Option(help="zxing names, read until all are found")] = "DataMatrix,QRCode",
    budget_ms: Annotated[float, typer.Option(min=1, help="time budget of the ladder per part")] = 40.0,
    steps: Annotated[bool, typer.Option(help="also each ladder step alone: what it earns, what it costs")] = False,
) -> None:
    """Read rate and exact match per field, false reads (wrong values returned), latency p50 / p99: one JSON."""
    import json

    from lineguard.ocr.evaluate import evaluate, load_set, step_report

    try:
        samples = load_set(folder)
        names = [f.strip() for f in formats.split(",") if f.strip()]
        summary = evaluate(samples, formats=names, budget_ms=budget_ms).summary()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    settings = folder / "settings.json"
    summary["set"] = json.loads(settings.read_text()) if settings.exists() else None
    summary["budget_ms"] = budget_ms
    if steps:
        summary["steps"] = step_report(samples)
    typer.echo(json.dumps(summary))
