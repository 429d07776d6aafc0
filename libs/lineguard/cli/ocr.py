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


def _box(text: str) -> list[int]:
    try:
        box = [int(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
        raise typer.BadParameter(f"{text!r}: needs x,y,width,height in pixels, width and height above 0")
    return box


@ocr_app.command("read")
def read(
    images: Annotated[list[Path], typer.Argument(help="image files (PNG, JPEG, BMP, TIFF)")],
    config: Annotated[Path | None, typer.Option(help="the line's YAML: read as its recipe says")] = None,
    recipe: Annotated[str | None, typer.Option(help="recipe id in --config (default: the first)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per image on its own line")] = False,
    text: Annotated[
        bool | None,
        typer.Option(help="read the printed text too (default: as the recipe says; without --config, no)"),
    ] = None,
    text_roi: Annotated[
        str | None,
        typer.Option(
            help="x,y,width,height of the printed line: recognition only (default: the recipe's ocr.text_roi; "
            "without one, detection over the code region)"
        ),
    ] = None,
) -> None:
    """What the OCR service would read: codes (symbology, text, box, GS1 elements, ladder step, print-quality
    grades), the printed lines (text, confidence, box, per-character confidences), with --config the
    recipe's fields checked (value or reason), ms."""
    import json
    import time

    import zxingcpp

    from lineguard.imaging import ROI, ImageError, decode_image
    from lineguard.ocr.codes import DEFAULT_BUDGET_MS, READ_FORMATS, formats_named, read_ladder

    roi = None
    formats: tuple[zxingcpp.BarcodeFormat, ...] = READ_FORMATS
    wanted: tuple[str, ...] = ()
    budget = DEFAULT_BUDGET_MS
    line_box = _box(text_roi) if text_roi else None
    ocr = None
    if config is not None:
        from lineguard.config import ConfigError, load_config

        try:
            line = load_config(config)
            settings = line.recipe(recipe or next(iter(line.recipes)))
        except (ConfigError, KeyError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        roi = ROI.from_list(settings.code_roi)
        ocr = settings.ocr
        if ocr.formats:
            formats, wanted = formats_named(ocr.formats), tuple(ocr.formats)
        budget = ocr.budget_ms
        line_box = line_box or ocr.text_roi
        text = ocr.wants_text() if text is None else text
    if text:
        from lineguard.ocr.text import read_text, warm_up

        warm_up()  # the models load once (about 2 s), not inside the first image's milliseconds
    failed = False
    for path in images:
        try:
            image = decode_image(path.read_bytes(), grey=True)
            started = time.perf_counter()
            reading = read_ladder(image, roi, formats=formats, wanted=wanted, budget_ms=budget)
            lines = []
            if text:
                if line_box:
                    lines = read_text(image, ROI.from_list(line_box), detect=False)
                else:
                    lines = read_text(image, roi, detect=True)
            ms = (time.perf_counter() - started) * 1000
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
        texts = [
            {"text": t.text, "confidence": round(t.confidence, 4), "box": [round(v, 1) for v in t.box]}
            | {"chars": [round(c, 3) for c in t.char_confidences]}
            for t in lines
        ]
        fields = []
        if ocr is not None:
            from lineguard.ocr.fields import validate

            fields = validate(ocr.fields, reading.codes, [t.text for t in lines])
        if as_json:
            out = {"image": str(path), "codes": codes, "lines": texts, "steps": reading.steps_tried}
            if ocr is not None:
                out["fields"] = [
                    {"name": f.name, "value": f.value, "read": f.read, "reason": f.reason, "detail": f.detail}
                    for f in fields
                ]
            typer.echo(json.dumps(out | {"ms": round(ms, 2)}))
        else:
            typer.echo(f"{path}: {len(codes)} codes, {len(lines)} text lines in {ms:.1f} ms")
            for c in reading.codes:
                typer.echo(f"  {c.symbology}: {c.text or c.error!r} (step {c.step})")
            for t in lines:
                typer.echo(f"  text: {t.text!r} (confidence {t.confidence:.2f})")
            for f in fields:
                typer.echo(f"  field {f.name}: {f.value!r}" if f.valid else f"  field {f.name}: {f.reason} {f.detail}")
    if failed:
        raise typer.Exit(1)


@ocr_app.command("eval")
def eval_set(
    folder: Annotated[Path, typer.Argument(help="a set made by `lineguard ocr make-labels`")],
    formats: Annotated[str, typer.Option(help="zxing names, read until all are found")] = "DataMatrix,QRCode",
    budget_ms: Annotated[float, typer.Option(min=1, help="time budget of the ladder per part")] = 40.0,
    steps: Annotated[bool, typer.Option(help="also each ladder step alone: what it earns, what it costs")] = False,
    text: Annotated[
        bool, typer.Option(help="also the printed line, recognition only in each label's text box (rapidocr)")
    ] = True,
) -> None:
    """Read rate and exact match per field, false reads (wrong values returned), latency p50 / p99; with
    --text (the default) the printed line's exact match, character error rate, false reads of the serial
    (LG-NNNNNNN-C with its check digit) and latency under "text": one JSON."""
    import json

    from lineguard.ocr.evaluate import evaluate, load_set, step_report

    try:
        samples = load_set(folder)
        names = [f.strip() for f in formats.split(",") if f.strip()]
        summary = evaluate(samples, formats=names, budget_ms=budget_ms, text=text).summary()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    settings = folder / "settings.json"
    summary["set"] = json.loads(settings.read_text()) if settings.exists() else None
    summary["budget_ms"] = budget_ms
    if steps:
        summary["steps"] = step_report(samples)
    typer.echo(json.dumps(summary))
