"""`lineguard-api`: the query API on its own, over a reader's database role (api.database_url)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import structlog
import typer

from lineguard.config import ConfigError, load_config
from lineguard.runtime.logging import configure_logging
from lineguard.services.results.api.server import ApiBindError, ApiServer
from lineguard.services.results.dashboard.follow import follow_database
from lineguard.services.results.db import SchemaNotCurrent
from lineguard.services.results.service import prepare_database

log = structlog.get_logger("lineguard.api")
app = typer.Typer(add_completion=False, help="lineguard's MES query API (docs/api.md)")


@app.command()
def _main(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="the line's YAML (default $LINEGUARD_CONFIG)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="overrides api.port")] = None,
) -> None:
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging("api", cfg.log_level)
    settings = cfg.api if port is None else cfg.api.model_copy(update={"port": port})
    try:
        # A database that does not answer yet (coming up beside it) is waited for, as the results service waits.
        engine = asyncio.run(prepare_database(settings.database_url or cfg.database.connect_url()))
    except SchemaNotCurrent as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    try:
        server = ApiServer(engine, settings, cfg)
    except ApiBindError as exc:
        engine.dispose()
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    log.info("API serving", url=f"http://{settings.host}:{server.port}", docs="/docs")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        # No bus here: the dashboard's live view follows the database instead (no images, no heartbeats).
        stopping = asyncio.Event()
        assert server.feed is not None
        following = asyncio.create_task(follow_database(server.feed, engine, stopping))
        try:
            await server.serve()
        finally:
            stopping.set()
            await following

    try:
        asyncio.run(run())
    finally:
        engine.dispose()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
