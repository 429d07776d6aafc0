"""`lineguard nats creds / config / provision / permissions`: a secured NATS for a line (docs/security.md, NATS)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from lineguard.bus.credentials import CredentialError, Layout, server_config, write_credentials
from lineguard.bus.permissions import IDENTITIES, markdown_table
from lineguard.config import ConfigError, LineConfig, load_config

nats_app = typer.Typer(no_args_is_help=True, help="NATS credentials, server configuration and streams for a line.")

LineOption = Annotated[str, typer.Option(help="the line id the permissions are for (its subjects lg.<kind>.<line>.*)")]


def _config(path: Path | None) -> LineConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None


@nats_app.command()
def creds(
    out: Annotated[Path, typer.Argument(help="the folder to write (kept: seeds and certificates already there)")],
    line: LineOption = "l1",
    host: Annotated[
        list[str] | None,
        typer.Option(help="a name or address clients reach the server by (the TLS certificate's); repeatable"),
    ] = None,
    rotate: Annotated[
        list[str] | None,
        typer.Option(help=f"make anew: an identity ({', '.join(IDENTITIES)}) or tls; repeatable"),
    ] = None,
) -> None:
    """Write each identity's nkey seed, the TLS CA and server certificate, and the server's authorization.conf.

    Hand each service only its own clients/<service>.nk (and clients/ca.pem); the server gets server/."""
    try:
        layout = write_credentials(out, line, hosts=host or ["localhost", "127.0.0.1"], rotate=rotate or ())
    except CredentialError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"seeds: {layout.clients}/<identity>.nk ({', '.join(IDENTITIES)}), CA for clients: {layout.ca_file}")
    typer.echo(f"server: {layout.authorization}, {layout.server_cert}, {layout.server_key}")
    typer.echo(f"keep off the line: {layout.ca_key} (needed only to issue a new server certificate)")


@nats_app.command("config")
def config_(
    credentials: Annotated[Path, typer.Argument(help="the folder `lineguard nats creds` wrote")],
    out: Annotated[Path, typer.Option(help="where to write the server's config")] = Path("nats.conf"),
    store_dir: Annotated[str | None, typer.Option(help="JetStream's store folder (default: the server's)")] = None,
    monitor: Annotated[
        str | None, typer.Option(help="host:port of the monitoring endpoint (default: off); keep it on 127.0.0.1")
    ] = None,
) -> None:
    """Write a nats-server config for a secured line: TLS, the identities' permissions, JetStream."""
    layout = Layout(credentials)
    if not layout.authorization.exists():
        typer.echo(f"error: {layout.authorization} not found: run `lineguard nats creds {credentials}` first", err=True)
        raise typer.Exit(1)
    out.write_text(server_config(layout, out.parent, max_payload=8 * 1024 * 1024, store_dir=store_dir, monitor=monitor))
    typer.echo(f"{out}: nats-server -c {out}")


@nats_app.command()
def provision(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="the line's YAML (default $LINEGUARD_CONFIG)")
    ] = None,
    credential: Annotated[
        Path | None, typer.Option(help="the admin's nkey seed (default: <nats.credentials_dir>/admin.nk)")
    ] = None,
) -> None:
    """Make (or bring to the configured limits) the line's streams and the model registry's buckets, as admin."""
    from lineguard.bus.provision import provision_line

    settings = _config(config).nats
    try:
        made = asyncio.run(provision_line(settings, seed=credential))
    except Exception as exc:  # noqa: BLE001 - nats-py raises its own kinds for "not reachable" and refusals
        typer.echo(f"error: provisioning on {settings.url} failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{settings.url}: streams {', '.join(made)} and the model registry's buckets are provisioned")


@nats_app.command()
def permissions(line: LineOption = "l1") -> None:
    """The permissions table: what each identity may publish and read."""
    typer.echo(markdown_table(line), nl=False)
