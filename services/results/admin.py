"""`python -m lineguard.services.results.admin`: the migrator's and the API admin's commands.

`lineguard db ...` runs these by module path (the shared library never imports a service), so
the one place that knows the migrations is the results service itself. The database URL is
`--url`, else the line's configuration (`--config`, else `$LINEGUARD_CONFIG`) with its
environment overrides: a migrator runs with `LINEGUARD_DATABASE__URL` naming a role that may
change the schema, the writer and the API with roles that may not."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lineguard.config import ConfigError, load_config
from lineguard.services.results.db import (
    current_revision,
    downgrade_database,
    head_revision,
    known_revisions,
    make_engine,
    upgrade_database,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, help="lineguard results: schema and API tokens")
db_app = typer.Typer(add_completion=False, no_args_is_help=True, help="the MES database's schema (Alembic)")
app.add_typer(db_app, name="db")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="the line's YAML (default $LINEGUARD_CONFIG)")
]
UrlOption = Annotated[str | None, typer.Option("--url", help="the database URL (default: the config's database.url)")]


def database_url(config: Path | None, url: str | None) -> str:
    """`url` when given, else the configuration's database.url; a bad configuration exits 2 with its errors."""
    if url:
        return url
    try:
        return load_config(config).database.url
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="the revision to go to")] = "head",
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """Create the schema or bring it forward (safe to repeat; replicas at once migrate once)."""
    target = database_url(config, url)
    before = _current(target)
    after = upgrade_database(target, revision)
    typer.echo(f"database at {after} (was {before or 'empty'})")


@db_app.command("current")
def db_current(config: ConfigOption = None, url: UrlOption = None) -> None:
    """Print the revision the database is at and whether it is current; exit 1 when it is not."""
    at = _current(database_url(config, url))
    head = head_revision()
    if at == head:
        typer.echo(f"{at} (head: current)")
        return
    if at is None:
        typer.echo(f"empty (head: {head}): run `lineguard db upgrade`")
    elif at in known_revisions():
        typer.echo(f"{at} (head: {head}, behind): run `lineguard db upgrade`")
    else:
        typer.echo(f"{at} (unknown to this lineguard, whose head is {head}): a newer lineguard migrated it")
    raise typer.Exit(1)


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help='the revision to go back to ("base": no lineguard tables)')],
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """Take the schema back to REVISION (a rollback; what later revisions added is dropped)."""
    target = database_url(config, url)
    before = _current(target)
    if revision != "base" and revision not in known_revisions():
        typer.echo(f"unknown revision {revision!r} (known: {', '.join(known_revisions())}, base)", err=True)
        raise typer.Exit(2)
    downgrade_database(target, revision)
    typer.echo(f"database at {_current(target) or 'base'} (was {before or 'empty'})")


def _current(url: str) -> str | None:
    engine = make_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


if __name__ == "__main__":
    app()
