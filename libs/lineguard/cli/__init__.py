"""`lineguard`: the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lineguard.cli.api import api_app
from lineguard.cli.bench import bench
from lineguard.cli.camera import camera_app
from lineguard.cli.confirm import confirm
from lineguard.cli.data import data_app
from lineguard.cli.db import db_app
from lineguard.cli.demo import demo
from lineguard.cli.drift import drift_app, selftest
from lineguard.cli.model import model_app
from lineguard.cli.nats import nats_app
from lineguard.cli.ocr import ocr_app
from lineguard.cli.plc import plc_app
from lineguard.cli.recipe import recipe_app
from lineguard.cli.recipe_tune import tune as recipe_tune
from lineguard.cli.trace import trace
from lineguard.config import ConfigError, load_config

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="lineguard: computer-vision inspection for production lines."
)
app.command()(demo)
app.command()(bench)
app.command()(trace)
app.command()(confirm)
app.command()(selftest)
app.add_typer(drift_app, name="drift")
app.add_typer(camera_app, name="camera")
app.add_typer(data_app, name="data")
app.add_typer(db_app, name="db")
app.add_typer(api_app, name="api")
app.add_typer(model_app, name="model")
app.add_typer(nats_app, name="nats")
app.add_typer(ocr_app, name="ocr")
recipe_app.command("tune")(recipe_tune)  # its own module (recipe_tune.py), beside the store's commands
app.add_typer(recipe_app, name="recipe")
app.add_typer(plc_app, name="plc")


@app.command("validate-config")
def validate_config(config: Annotated[Path, typer.Argument(help="the line's YAML file")]) -> None:
    """Check a line configuration without starting anything; errors name the file line and field."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{config}: valid (line {cfg.line}, {len(cfg.stations)} stations, {len(cfg.recipes)} recipes)")


def main() -> None:
    app()
