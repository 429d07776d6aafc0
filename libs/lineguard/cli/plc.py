"""`lineguard plc simulate`: the simulated PLC on its own, against a running gateway (compose's demo profile, the
deployment tests): it triggers parts over OPC UA and checks each gets exactly one result."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

plc_app = typer.Typer(add_completion=False, no_args_is_help=True, help="A simulated PLC against a running gateway.")


@plc_app.command()
def simulate(
    endpoint: Annotated[
        str, typer.Option(help="the gateway's OPC UA endpoint")
    ] = "opc.tcp://127.0.0.1:4840/lineguard/",
    station: Annotated[str, typer.Option(help="the station to trigger")] = "s1",
    parts: Annotated[int, typer.Option(min=1, help="parts to trigger")] = 20,
    rate: Annotated[float, typer.Option(min=0.1, help="triggers per second")] = 2.0,
    pki: Annotated[
        Path | None,
        typer.Option(
            help="where to write the PLC's certificate, a new one each run: Basic256Sha256 SignAndEncrypt; "
            "without it, security policy None (a demo-profile gateway only)"
        ),
    ] = None,
    trust_into: Annotated[
        Path | None,
        typer.Option(
            help="the gateway's PKI folder: put the PLC's certificate in its trusted/ (a demo's shortcut "
            "for what an engineer does by hand, docs/opcua.md)"
        ),
    ] = None,
    user: Annotated[str | None, typer.Option(help="the operator to sign in as")] = None,
    password_file: Annotated[Path | None, typer.Option(help="the operator's password, in a file")] = None,
    connect_timeout: Annotated[float, typer.Option(help="seconds to wait for the gateway to serve")] = 120.0,
) -> None:
    """Trigger PARTS parts at RATE per second; print one JSON summary; exit 1 unless every part got one result."""
    from lineguard.sim.opcua_security import client_setup, make_certificate
    from lineguard.sim.plc import SimulatedPlc

    setup = None
    if pki is not None:
        certificate = make_certificate(pki, "plc-sim")
        if trust_into is not None:
            certificate.trust(trust_into)
        password = password_file.read_text().strip() if password_file else None
        setup = client_setup(certificate, user=user, password=password)

    async def drive() -> dict[str, object]:
        async with SimulatedPlc(endpoint, station, connect_timeout_s=connect_timeout, setup=setup) as plc:
            report = await plc.run(parts, rate_hz=rate)
        return {
            "ok": report.ok,
            "results": len(report.results),
            "verdicts": {v: sum(r.verdict == v for r in report.results) for v in {r.verdict for r in report.results}},
            "inspection_ids": [r.inspection_id for r in report.results],
            "missing": report.missing,
            "duplicates": report.duplicates,
            "p50_ms": round(report.p50_s * 1000, 1),
            "p99_ms": round(report.p99_s * 1000, 1),
        }

    try:
        summary = asyncio.run(drive())
    except ConnectionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(summary))
    if not summary["ok"]:
        raise typer.Exit(1)
