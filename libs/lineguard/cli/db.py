"""`lineguard db upgrade | current | downgrade REV`: the MES database's schema, as a step of its own.

Migrating needs a role with DDL rights; the results service (the writer) never migrates and
refuses to start on a schema that is behind. The migrations belong to the results service, and
the shared library never imports a service: these commands run its admin module by module path,
as LocalLine runs the services."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

ADMIN_MODULE = "lineguard.services.results.admin"

db_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The MES database's schema (migrations).")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="the line's YAML (default $LINEGUARD_CONFIG)")
]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="the database URL (default: the config's database.url, LINEGUARD_DATABASE__URL)"),
]


def results_admin(*args: str, config: Path | None = None, url: str | None = None) -> int:
    """Run the results service's admin command with `args`; its output is ours, its exit code returned."""
    command = [sys.executable, "-m", ADMIN_MODULE, *args]
    if config is not None:
        command += ["--config", str(config)]
    if url is not None:
        command += ["--url", url]
    return subprocess.run(command, check=False).returncode


def exit_with(code: int) -> None:
    if code != 0:
        raise typer.Exit(code)


@db_app.command("upgrade")
def upgrade(
    revision: Annotated[str, typer.Argument(help="the revision to go to")] = "head",
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """Create the schema or bring it forward to REVISION (default head); safe to repeat."""
    exit_with(results_admin("db", "upgrade", revision, config=config, url=url))


@db_app.command("current")
def current(config: ConfigOption = None, url: UrlOption = None) -> None:
    """Print the database's revision; exit 1 when it is not this lineguard's head."""
    exit_with(results_admin("db", "current", config=config, url=url))


@db_app.command("downgrade")
def downgrade(
    revision: Annotated[str, typer.Argument(help='the revision to go back to ("base": none of lineguard\'s tables)')],
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """Take the schema back to REVISION (a rollback: what later revisions added is dropped)."""
    exit_with(results_admin("db", "downgrade", revision, config=config, url=url))
