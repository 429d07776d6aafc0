"""`lineguard model shadow start / stop / report` and `lineguard model rollback`: bringing in a model safely.

Shadow mode runs a candidate beside the live model on a share of the line's parts and records the verdict it
would have given (the inference service, services/inference/shadow.py); the report reads those from the MES
database (lineguard.modelops.shadow_report). Rolling back promotes the version the line ran before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer

from lineguard.cli.model_registry import ConfigOption, CredentialOption, LineOption, NatsOption, _config, _line, _run
from lineguard.config import LineConfig
from lineguard.registry import ModelRegistry

shadow_app = typer.Typer(
    no_args_is_help=True, help="Shadow mode: a candidate model beside the live one, never reaching the PLC."
)
UrlOption = Annotated[str | None, typer.Option("--url", help="the MES database URL (default: --config's)")]


def database_url(url: str | None, cfg: LineConfig | None) -> str:
    if url:
        return url
    if cfg is None:
        typer.echo("error: give the MES database with --url, or the line's YAML with --config", err=True)
        raise typer.Exit(2)
    return cfg.database.connect_url()


@shadow_app.command("start")
def start(
    model_id: Annotated[str, typer.Argument(help="the candidate's model id")],
    version: Annotated[str, typer.Argument(help="the candidate's version (pushed to the registry)")],
    share: Annotated[float, typer.Option(help="the share of parts it sees, (0, 1]")] = 1.0,
    line: LineOption = None,
    nats: NatsOption = None,
    config: ConfigOption = None,
    credential: CredentialOption = None,
) -> None:
    """Run a pushed version in shadow: beside the live model, on --share of the parts; its verdicts are recorded
    (shadow_verdicts) and never reach the PLC.

    Refused (SHADOW_CLASSES_DIFFER) when it does not detect the classes of the model the line runs."""
    cfg = _config(config)
    target = _line(line, cfg)
    run = _run(nats, cfg, lambda registry: registry.start_shadow(model_id, version, target, share=share), credential)
    typer.echo(f"line {target}: {run} in shadow on {run.share:.0%} of parts (by {run.by})")


@shadow_app.command("stop")
def stop(
    line: LineOption = None, nats: NatsOption = None, config: ConfigOption = None, credential: CredentialOption = None
) -> None:
    """Stop shadow mode on the line (its recorded verdicts stay)."""
    cfg = _config(config)
    target = _line(line, cfg)
    was = _run(nats, cfg, lambda registry: registry.stop_shadow(target), credential)
    typer.echo(f"line {target}: shadow {was} stopped" if was else f"line {target}: no shadow run")


@shadow_app.command("report")
def report(
    model_id: Annotated[
        str | None, typer.Option("--model", help="the candidate (default: the latest in shadow)")
    ] = None,
    version: Annotated[str | None, typer.Option("--version", help="its version")] = None,
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document instead of Markdown")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="also write the report (Markdown) to this file")] = None,
) -> None:
    """Live against candidate verdicts (a confusion), the parts they disagree on with image links, and the
    candidate's escape and false-reject rates against the parts a person confirmed."""
    from lineguard.modelops.shadow_report import ReportError, markdown, read_report

    if (model_id is None) != (version is None):
        typer.echo("error: give both --model and --version, or neither (the latest candidate)", err=True)
        raise typer.Exit(2)
    try:
        found = read_report(database_url(url, _config(config)), model_id, version)
    except ReportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except sa.exc.OperationalError as exc:
        typer.echo(f"error: cannot read the MES database: {exc.orig or exc}", err=True)
        raise typer.Exit(1) from None
    text = markdown(found)
    if out is not None:
        out.write_text(text)
    typer.echo(json.dumps(found.to_dict(), indent=2, default=str) if as_json else text)


def rollback(
    line: LineOption = None, nats: NatsOption = None, config: ConfigOption = None, credential: CredentialOption = None
) -> None:
    """Run again the version the line ran before its current one: one command, swapped in between two parts."""
    cfg = _config(config)
    target = _line(line, cfg)

    async def work(registry: ModelRegistry) -> Any:
        return await registry.rollback(target)

    was, now = _run(nats, cfg, work, credential)
    typer.echo(f"line {target}: rolled back to {now} (was {was}), by {now.by}")
