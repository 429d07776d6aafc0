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
