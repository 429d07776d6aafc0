"""`python -m lineguard.services.results.admin`: the migrator's and the API admin's commands, and a person's
confirmation of a verdict.

`lineguard db ...` and `lineguard api token ...` run these by module path (the shared library
never imports a service), so the one place that knows the migrations and the tokens is the
results service itself. The database URL is
`--url`, else the line's configuration (`--config`, else `$LINEGUARD_CONFIG`) with its
environment overrides: a migrator runs with `LINEGUARD_DATABASE__URL` naming a role that may
change the schema, the writer and the API with roles that may not."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from lineguard.config import ConfigError, load_config
from lineguard.contracts.api_roles import ROLE_HELP, ApiRole
from lineguard.services.results.api.tokens import create_token, list_tokens, revoke_token
from lineguard.services.results.confirmations import BadConfirmation, UnknownInspection, confirm
from lineguard.services.results.db import (
    SchemaNotCurrent,
    check_schema,
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
api_app = typer.Typer(add_completion=False, no_args_is_help=True, help="the query API")
token_app = typer.Typer(add_completion=False, no_args_is_help=True, help="API tokens (stored hashed)")
api_app.add_typer(token_app, name="token")
app.add_typer(api_app, name="api")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="the line's YAML (default $LINEGUARD_CONFIG)")
]
UrlOption = Annotated[str | None, typer.Option("--url", help="the database URL (default: the config's database.url)")]


def database_url(config: Path | None, url: str | None) -> str:
    """`url` when given, else the configuration's database.url; a bad configuration exits 2 with its errors."""
    if url:
        return url
    try:
        return load_config(config).database.connect_url()
    except (ConfigError, ValueError) as exc:  # ValueError: an unreadable database.password_file
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
    before = _known(_current(target))
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
    before = _known(_current(target))
    if revision != "base" and revision not in known_revisions():
        typer.echo(f"unknown revision {revision!r} (known: {', '.join(known_revisions())}, base)", err=True)
        raise typer.Exit(2)
    downgrade_database(target, revision)
    typer.echo(f"database at {_current(target) or 'base'} (was {before or 'empty'})")


@token_app.command("create")
def token_create(
    role: Annotated[ApiRole, typer.Option(help=ROLE_HELP)],
    name: Annotated[str, typer.Option(help="who or what it is for")] = "mes",
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """Make an API token and print it (on stdout, alone): it is shown this once, only its hash is kept."""
    engine = _ready_engine(database_url(config, url))
    try:
        token = create_token(engine, role.value, name)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    typer.echo(f"{role.value} token for {name!r} (shown once; keep it secret):", err=True)
    typer.echo(token)


@token_app.command("list")
def token_list(config: ConfigOption = None, url: UrlOption = None) -> None:
    """The tokens: id, role, name, when made and revoked (never their secrets)."""
    engine = _ready_engine(database_url(config, url))
    try:
        for t in list_tokens(engine):
            revoked = f"revoked {t['revoked_at']:%Y-%m-%d %H:%M}" if t["revoked_at"] else "valid"
            typer.echo(f"{t['token_id']}  {t['role']:<6}  {revoked:<22}  {t['name']}")
    finally:
        engine.dispose()


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="the token's id (its middle part)")],
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """Revoke a token: the API refuses it from its next request."""
    engine = _ready_engine(database_url(config, url))
    try:
        if not revoke_token(engine, token_id):
            typer.echo(f"no valid token {token_id!r}", err=True)
            raise typer.Exit(1)
    finally:
        engine.dispose()
    typer.echo(f"revoked {token_id}")


_CONFIRM_OPTIONS = {"verdict": "--verdict", "confirmed_by": "--by", "comment": "--why"}


@app.command("confirm")
def confirm_verdict(
    inspection_id: Annotated[str, typer.Argument(help="the inspection's id")],
    verdict: Annotated[str, typer.Option(help="the verdict the part truly deserves: PASS, REWORK or FAIL")],
    by: Annotated[str, typer.Option(help="who confirms (a person's name)")],
    why: Annotated[str, typer.Option(help="why; needed when overruling the line's verdict")] = "",
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """Keep a person's verdict beside the inspection (never changing it): exit 1 for an unknown inspection or a
    database that refuses the write, 2 for a bad value."""
    engine = _ready_engine(database_url(config, url))
    try:
        kept = confirm(engine, inspection_id, verdict.upper(), by, why)
    except UnknownInspection as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except BadConfirmation as exc:
        # Named as the person typed it: the API's body field `comment` is `--why` here.
        typer.echo(f"error: {_CONFIRM_OPTIONS.get(exc.field, exc.field)}: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except DBAPIError as exc:
        typer.echo(f"error: the database refused the confirmation: {str(exc.orig or exc).strip()}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    what = f"overrules the line's {kept.recorded_verdict}" if kept.overrules else "confirms the line's verdict"
    typer.echo(
        f"{kept.inspection_id}: {kept.verdict} by {kept.confirmed_by} at {kept.confirmed_at:%Y-%m-%d %H:%M:%S}Z, {what}"
    )


def _ready_engine(url: str) -> Engine:
    """An engine on a database at this lineguard's schema, or exit 1 saying what to run."""
    engine = make_engine(url)
    try:
        check_schema(engine)
    except SchemaNotCurrent as exc:
        engine.dispose()
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    return engine


def _known(at: str | None) -> str | None:
    """The database's revision `at` when this lineguard knows it (or it has none); else exit 1 naming it. Alembic
    walks between revisions by their scripts, and a newer lineguard's are not in this one: only its image can take
    the schema back to this one's head."""
    if at is None or at in known_revisions():
        return at
    head = head_revision()
    typer.echo(
        f"error: the database is at schema revision {at}, which this lineguard (head {head}) does not know: "
        "a newer lineguard migrated it, and only that lineguard's image can take it back "
        f"(its `lineguard db downgrade {head}`)",
        err=True,
    )
    raise typer.Exit(1)


def _current(url: str) -> str | None:
    engine = make_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


if __name__ == "__main__":
    app()
