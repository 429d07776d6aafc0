"""`lineguard recipe tune --data LABELLED --recipe R`: thresholds from data (lineguard.modelops.tune).

The recipe's model (or `--model`) over a labelled split, per class the escape / false-reject curve over the score
and the area threshold, and the thresholds meeting `--target-escape`, written under `--out` as a proposed recipe
version (`lineguard recipe push` takes it as it is), the curves as a PNG and the report as JSON, with a table on
the terminal. It proposes, it never pushes: a person reads the figures first (docs/recipes.md, Tuning)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from lineguard.cli.model_registry import ConfigOption, NatsOption, _config
from lineguard.cli.recipe import _ref, _run
from lineguard.config import ConfigError
from lineguard.config.rules import model_problems
from lineguard.hashing import file_sha256
from lineguard.recipes import RecipeStore, RecipeVersion, parse_bundle, read_bundle
from lineguard.registry import ModelRegistry

# The model's own NMS overlap, as `lineguard model eval` runs it.
IOU = 0.45


def _fail(code: int, message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _recipe(ref: str, nats: str | None, config: Path | None) -> RecipeVersion:
    """A version file, or ID@VERSION from the recipe store."""
    if Path(ref).is_file():
        try:
            return read_bundle(ref)
        except ConfigError as exc:
            typer.echo(f"recipe refused:\n{exc}", err=True)
            raise typer.Exit(2) from None
    if "@" not in ref:
        raise _fail(2, f"--recipe {ref!r}: neither a recipe version file nor ID@VERSION")
    recipe_id, version = _ref(ref)

    async def get(store: RecipeStore, _: ModelRegistry) -> RecipeVersion:
        return await store.get(recipe_id, version)

    return _run(nats, _config(config), get)


def _model(recipe: RecipeVersion, model: Path | None, nats: str | None, config: Path | None, out: Path) -> Path:
    """`--model`, else the recipe's model reference fetched from the registry (and its sha256 checked)."""
    if model is not None:
        return model
    ref = recipe.settings.model
    if ref is None:
        raise _fail(2, f"{recipe.ref} names no model (model: id, version, sha256): give one with --model")

    async def fetch(_: RecipeStore, registry: ModelRegistry) -> Path:
        return await registry.fetch(ref.id, ref.version, out / "model")

    path = _run(nats, _config(config), fetch)
    if file_sha256(path) != ref.sha256:
        raise _fail(1, f"{ref.id} {ref.version} in the registry is not the file {recipe.ref} was made for (sha256)")
    return path


def tune(
    data: Annotated[Path, typer.Option("--data", help="the labelled set: an Ultralytics data.yaml")],
    recipe: Annotated[str, typer.Option("--recipe", help="ID@VERSION in the recipe store, or a version file")],
    model: Annotated[
        Path | None, typer.Option("--model", help="the ONNX model (card beside it); default: the recipe's model")
    ] = None,
    split: Annotated[str, typer.Option(help="the split of --data to tune on")] = "val",
    target_escape: Annotated[
        float, typer.Option("--target-escape", min=0.0, max=0.99, help="the escape rate per class to meet")
    ] = 0.0,
    version: Annotated[
        str | None, typer.Option("--version", help="the proposed version's name (default: <version>-tuned)")
    ] = None,
    px_per_mm: Annotated[
        float | None,
        typer.Option("--px-per-mm", min=0.0, help="the station's calibration: area thresholds in mm², not px²"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="folder for the proposal, curves.png and report.json")] = Path(
        "tune"
    ),
    nats: NatsOption = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON on stdout instead of a table")] = False,
) -> None:
    """Per class, escapes against false rejects over the score and area thresholds on a labelled set, and the
    thresholds that meet the target escape rate, written as a proposed recipe version. Exit 1 when a class cannot
    meet the target (the files are written, the shortfall named); 2 for bad input."""
    from lineguard.modelops.evaluate import EvalError, load_split, predict_split, split_labels_sha256
    from lineguard.modelops.tune import plot_curves, proposed_recipe
    from lineguard.modelops.tune import tune as tune_thresholds
    from lineguard.vision.model import ModelLoadError, load_model

    current = _recipe(recipe, nats, config)
    out.mkdir(parents=True, exist_ok=True)
    model_path = _model(current, model, nats, config, out)
    try:
        detector = load_model(model_path)
    except ModelLoadError as exc:
        raise _fail(2, str(exc)) from None
    card = detector.card
    problems = model_problems(current.settings, card.classes, f"{card.model_id} {card.version}")
    if problems:
        raise _fail(2, "; ".join(str(p) for p in problems))
    try:
        labelled = load_split(data, split)
        truths, predictions = predict_split(detector, labelled, iou=IOU)
    except EvalError as exc:
        raise _fail(2, str(exc)) from None
    finally:
        detector.close()
    tuning = tune_thresholds(
        truths, predictions, labelled.class_names, current.settings, target_escape=target_escape, px_per_mm=px_per_mm
    )

    name = version or f"{current.version}-tuned"
    mapping = proposed_recipe(current.settings, tuning, name)
    header = (
        f"# Proposed by lineguard recipe tune from {current.ref} (sha256 {current.sha256[:12]}) on {data} ({split}, "
        f"{tuning.images} images), model {card.model_id} {card.version}, target escape {target_escape:g} per class.\n"
        f"# Read {out / 'report.json'} and curves.png, then: lineguard recipe push THIS_FILE\n"
    )
    text = header + yaml.safe_dump({"id": current.recipe_id, **mapping}, sort_keys=False, allow_unicode=True)
    proposal_file = out / f"{current.recipe_id}-{name}.yaml"
    try:
        proposal = parse_bundle(text, str(proposal_file))  # what `recipe push` will check, checked now
    except ConfigError as exc:
        raise _fail(1, f"the proposal is not a valid recipe version (a bug):\n{exc}") from None
    proposal_file.write_text(text)
    plot_curves(tuning, out / "curves.png")
    report: dict[str, Any] = {
        "recipe": {"ref": current.ref, "sha256": current.sha256},
        "proposed": {"ref": proposal.ref, "sha256": proposal.sha256, "file": str(proposal_file)},
        "model": {"id": card.model_id, "version": card.version, "sha256": file_sha256(model_path)},
        "data": {"yaml": str(data), "split": split, "labels_sha256": split_labels_sha256(labelled)},
        "command": shlex.join(["lineguard", *sys.argv[1:]]),
        **tuning.to_dict(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))

    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _table(tuning, current.ref, proposal.ref)
        typer.echo(f"proposal {proposal.ref} (sha256 {proposal.sha256[:12]}): {proposal_file}")
        typer.echo(f"curves: {out / 'curves.png'}   report: {out / 'report.json'}")
    for c in tuning.classes:
        if c.note:
            typer.echo(f"{c.name}: {c.note}", err=True)
    if not tuning.met:
        missed = ", ".join(c.name for c in tuning.classes if not c.met)
        raise _fail(1, f"the target escape rate {target_escape:g} is not met for {missed}")


def _rate(count: int, of: int) -> str:
    return f"{count}/{of} ({count / of:.0%})" if of else "-"


def _thresholds(score: float, area: float | None) -> str:
    return f"{score:g}" + (f", ≥ {area:g}" if area is not None else "")


def _table(tuning: Any, was: str, proposed: str) -> None:
    table = Table(
        title=f"{was} -> {proposed}: target escape {tuning.target_escape:g}, areas in {tuning.unit}",
        title_justify="left",
    )
    for column in ("CLASS", "NOW", "ESCAPES", "FALSE REJECTS", "PROPOSED", "ESCAPES", "FALSE REJECTS", "MET"):
        table.add_column(column)
    for c in tuning.classes:
        table.add_row(
            c.name,
            _thresholds(c.current.min_score, c.current.min_area),
            _rate(c.at_current.escapes, c.bad),
            _rate(c.at_current.false_rejects, c.good),
            _thresholds(c.proposed.min_score, c.proposed.min_area),
            _rate(c.at_proposed.escapes, c.bad),
            _rate(c.at_proposed.false_rejects, c.good),
            "yes" if c.met else "NO",
        )
    now, then = tuning.part_current, tuning.part_proposed
    table.add_row(
        "whole part",
        "",
        _rate(now.escapes, now.bad),
        _rate(now.false_rejects, now.good),
        "",
        _rate(then.escapes, then.bad),
        _rate(then.false_rejects, then.good),
        "yes" if tuning.met else "NO",
    )
    Console(width=200).print(table)
