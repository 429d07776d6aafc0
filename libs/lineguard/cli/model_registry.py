"""`lineguard model push / list / promote`: the model registry (lineguard.registry) from the shell."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from lineguard.config import ConfigError, LineConfig, NatsSettings, load_config
from lineguard.config.loader import ENV_CONFIG_PATH
from lineguard.registry import ModelRegistry, RegistryError, connect_registry

T = TypeVar("T")

NatsOption = Annotated[
    str | None,
    typer.Option("--nats", help="NATS server URL (default: --config's nats.url, else nats://127.0.0.1:4222)"),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help=f"the line's YAML, for its NATS settings, line id and database (default ${ENV_CONFIG_PATH})",
    ),
]
CredentialOption = Annotated[
    Path | None,
    typer.Option(
        "--credential",
        help="the operator's nkey seed (default: operator.nk in --config's nats.credentials_dir); a secured line "
        "needs it (docs/security.md, NATS)",
    ),
]

LineOption = Annotated[str | None, typer.Option(help="the line (default: --config's line, else l1)")]


def _line(line: str | None, config: LineConfig | None) -> str:
    """--line, else --config's line, else l1."""
    return line or (config.line if config else "l1")


def _config(config: Path | None) -> LineConfig | None:
    if config is None and not os.environ.get(ENV_CONFIG_PATH):
        return None
    try:
        return load_config(config)
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None


def _nats_settings(nats: str | None, config: LineConfig | None) -> NatsSettings:
    """--config's NATS settings (the defaults without one), at --nats's URL when it is given."""
    settings = config.nats if config else NatsSettings()
    return settings.model_copy(update={"url": nats}) if nats else settings


def _run(
    nats: str | None,
    config: LineConfig | None,
    work: Callable[[ModelRegistry], Awaitable[T]],
    credential: Path | None = None,
) -> T:
    """`work` on the registry, signed in with `credential`; a RegistryError is told as `error: ...`, exit 1."""

    async def go() -> T:
        async with connect_registry(_nats_settings(nats, config), seed=credential) as registry:
            return await work(registry)

    try:
        return asyncio.run(go())
    except RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def push(
    model: Annotated[Path, typer.Argument(help="the .onnx file")],
    card: Annotated[Path | None, typer.Option(help="its model card (default: <model>.json beside it)")] = None,
    nats: NatsOption = None,
    config: ConfigOption = None,
    credential: CredentialOption = None,
) -> None:
    """Store a model version (the .onnx and its card) in the registry.

    Refused when the file's sha256 is not its card's onnx_sha256, or when the version is already
    there with another file or card; pushing the same file and card again changes nothing."""
    stored = _run(nats, _config(config), lambda registry: registry.push(model, card), credential)
    typer.echo(f"{stored.model_id} {stored.version}: in the registry ({stored.size} bytes, sha256 {stored.sha256})")


def list_models(
    nats: NatsOption = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document instead of a table")] = False,
) -> None:
    """The versions in the registry, and which one each line runs."""

    async def gather(registry: ModelRegistry) -> tuple[list[Any], dict[str, Any]]:
        return await registry.list_models(), await registry.lines()

    versions, lines = _run(nats, _config(config), gather)
    rows = []
    for v in versions:
        on = sorted(line for line, p in lines.items() if p.names(v))
        rows.append(
            {
                "model_id": v.model_id,
                "version": v.version,
                "bytes": v.size,
                "sha256": v.sha256,
                "classes": v.classes,
                "pushed": v.pushed,
                "promoted_on": on,
            }
        )
    if as_json:
        promoted = {
            line: {"model_id": p.model_id, "version": p.version, "by": p.by, "at": p.at}
            for line, p in sorted(lines.items())
        }
        typer.echo(json.dumps({"models": rows, "promoted": promoted}, indent=2))
        return
    if not rows:
        typer.echo("the registry holds no models yet (lineguard model push MODEL.onnx)")
        return
    table = [("MODEL", "VERSION", "SIZE", "SHA256", "CLASSES", "PUSHED", "PROMOTED ON")]
    table += [
        (
            r["model_id"],
            r["version"],
            f"{r['bytes'] / 1e6:.1f} MB",
            r["sha256"][:12],
            str(len(r["classes"])),
            r["pushed"][:19],
            ", ".join(r["promoted_on"]) or "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def promote(
    model_id: Annotated[str, typer.Argument(help="the model id (its card's model_id)")],
    version: Annotated[str, typer.Argument(help="the version to run")],
    line: Annotated[str | None, typer.Option(help="the line to run it on (default: --config's line, else l1)")] = None,
    nats: NatsOption = None,
    config: ConfigOption = None,
    credential: CredentialOption = None,
    require_shadow: Annotated[
        int,
        typer.Option(
            "--require-shadow",
            min=0,
            help="refuse unless the version judged at least N parts in shadow with no new escape (0: no check)",
        ),
    ] = 0,
    url: Annotated[str | None, typer.Option("--url", help="the MES database, for --require-shadow")] = None,
) -> None:
    """Make a line run a pushed version; rolling back is promoting the previous one again (`model rollback`).

    The line's inference services download it, check it, and swap to it between two frames; a
    version that does not load there is refused and the running one keeps serving. With
    --require-shadow N, the shadow report (`model shadow report`) must cover N parts and show no new escape."""
    cfg = _config(config)
    target = _line(line, cfg)
    if require_shadow:
        _check_shadow(model_id, version, require_shadow, url, cfg)

    async def work(registry: ModelRegistry) -> tuple[Any, Any]:
        before = await registry.promoted(target)
        return before, await registry.promote(model_id, version, target)

    before, after = _run(nats, cfg, work, credential)
    was = f" (was {before})" if before else ""
    typer.echo(f"line {target}: {after} promoted by {after.by}{was}")


def _check_shadow(model_id: str, version: str, min_parts: int, url: str | None, cfg: LineConfig | None) -> None:
    """Exit 1 unless the version's shadow report allows its promotion."""
    from lineguard.cli.model_shadow import database_url
    from lineguard.modelops.shadow_report import ReportError, promotion_refusal, read_report

    try:
        report = read_report(database_url(url, cfg), model_id, version)
    except ReportError as exc:
        typer.echo(f"error: promotion refused: {exc}", err=True)
        raise typer.Exit(1) from None
    refusal = promotion_refusal(report, min_parts)
    if refusal is not None:
        typer.echo(f"error: promotion refused: {refusal}", err=True)
        raise typer.Exit(1)
    typer.echo(f"shadow report: {report.parts} parts, no new escape")
