"""`lineguard api token create --role reader | list | revoke ID`: the query API's tokens (docs/api.md).

Run by module path in the results service, which owns the tokens table (see lineguard.cli.db)."""

from __future__ import annotations

from typing import Annotated

import typer

from lineguard.cli.db import ConfigOption, UrlOption, exit_with, results_admin
from lineguard.contracts.api_roles import ROLE_HELP, ApiRole

api_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The MES query API: its tokens.")
token_app = typer.Typer(add_completion=False, no_args_is_help=True, help="API tokens (stored hashed)")
api_app.add_typer(token_app, name="token")


@token_app.command("create")
def create(
    role: Annotated[ApiRole, typer.Option(help=ROLE_HELP)],
    name: Annotated[str, typer.Option(help="who or what it is for")] = "mes",
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """Make a token and print it on stdout: shown this once, only its hash is kept."""
    exit_with(results_admin("api", "token", "create", "--role", role.value, "--name", name, config=config, url=url))


@token_app.command("list")
def list_(config: ConfigOption = None, url: UrlOption = None) -> None:
    """The tokens: id, role, name, valid or revoked (never their secrets)."""
    exit_with(results_admin("api", "token", "list", config=config, url=url))


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="the token's id (its middle part)")],
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """Revoke a token: the API refuses it from its next request."""
    exit_with(results_admin("api", "token", "revoke", token_id, config=config, url=url))
