"""`lineguard drift baseline` (what a station's parts are compared with) and `lineguard selftest` (a station's
golden parts judged through the live path, now): docs/drift.md."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import nats
import sqlalchemy as sa
import typer
from nats.aio.msg import Msg

from lineguard.bus.client import connect_options
from lineguard.bus.permissions import OPERATOR
from lineguard.cli.model_registry import ConfigOption, CredentialOption, NatsOption, _config, _line, _nats_settings
from lineguard.cli.model_shadow import UrlOption, database_url
from lineguard.config import LineConfig, NatsSettings
from lineguard.config.drift import DriftSettings
from lineguard.contracts import new_inspection_id, selftest_command_subject, subject
from lineguard.drift import BaselineError, baseline_of
from lineguard.drift.selftest import case_fields
from lineguard.drift.store import period_rows, store_baseline, training_baseline
from lineguard.imaging import ROI
from lineguard.samples import SAMPLE_BOARDS
from lineguard.v1.drift_pb2 import SelfTestReport

drift_app = typer.Typer(no_args_is_help=True, help="The drift watch: each station's baseline (docs/drift.md).")
StationOption = Annotated[str, typer.Option("--station", help="the station id")]


def _when(value: str, name: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        typer.echo(f"error: {name} {value!r} is not an ISO 8601 time, e.g. 2026-03-02T06:00+01:00", err=True)
        raise typer.Exit(2) from None
    if when.tzinfo is None:
        typer.echo(f"error: {name} {value!r} has no time zone (add +01:00 or Z)", err=True)
        raise typer.Exit(2)
    return when


@drift_app.command("baseline")
def baseline(
    station: StationOption,
    start: Annotated[str | None, typer.Option("--from", help="a good period's start (ISO 8601, with zone)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="its end (ISO 8601, with zone)")] = None,
    images: Annotated[
        Path | None, typer.Option(help="a training set's images instead of a period (default: the packaged boards)")
    ] = None,
    bins: Annotated[
        int | None, typer.Option(min=2, max=50, help="bins per feature (default: the line's drift.bins)")
    ] = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Store the station's baseline: its production records of a good period (--from/--to: image quality, model
    scores and detection counts), or a training set's images (--images: image quality only). The newest counts."""
    cfg = _config(config)
    if bins is None:
        bins = (cfg.drift if cfg else DriftSettings()).bins
    engine = sa.create_engine(database_url(url, cfg))
    try:
        if start is not None or end is not None:
            if start is None or end is None:
                typer.echo("error: a period needs both --from and --to", err=True)
                raise typer.Exit(2)
            begin, finish = _when(start, "--from"), _when(end, "--to")
            rows = period_rows(engine, station, begin, finish)
            made = baseline_of("period", rows, bins, source=f"station {station} from {start} to {end}")
        else:
            made = training_baseline(images or SAMPLE_BOARDS, bins, _roi(cfg, station))
        baseline_id = store_baseline(engine, station, made)
    except BaselineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    means = ", ".join(f"{f} {h.mean:.3g}" for f, h in made.histograms.items())
    typer.echo(f"station {station}: baseline {baseline_id} from {made.samples} parts ({made.source}): {means}")


def _roi(cfg: LineConfig | None, station: str) -> ROI | None:
    """Images are measured within the station's recipe's inspect_roi, as capture measures its frames."""
    if cfg is None:
        return None
    recipe = cfg.recipes.get(cfg.station(station).recipe)
    return ROI.from_list(recipe.inspect_roi) if recipe is not None else None


async def request_selftest(
    settings: NatsSettings, line: str, station: str, timeout_s: float, seed: Path | None = None
) -> SelfTestReport:
    """Ask the gateway to run the station's self-test and wait for its report (TimeoutError when none comes)."""
    client = await nats.connect(**connect_options(settings, OPERATOR, seed=seed))
    try:
        request_id = new_inspection_id()
        got: asyncio.Future[SelfTestReport] = asyncio.get_running_loop().create_future()

        async def on_report(msg: Msg) -> None:
            report = SelfTestReport.FromString(msg.data)
            if report.request_id == request_id and not got.done():
                got.set_result(report)

        sub = await client.subscribe(subject("selftest", line, station), cb=on_report)
        await client.publish(selftest_command_subject(line, station), request_id.encode())
        try:
            return await asyncio.wait_for(got, timeout_s)
        finally:
            await sub.unsubscribe()
    finally:
        await client.close()


def selftest(
    station: StationOption,
    timeout: Annotated[float, typer.Option(help="how long to wait for the report, s")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False,
    nats_url: NatsOption = None,
    config: ConfigOption = None,
    credential: CredentialOption = None,
) -> None:
    """Judge the station's golden parts through the live path now (flagged simulated, never production records);
    exit 1 when an outcome changed (the drift alert is raised), 2 when no report came."""
    cfg = _config(config)
    line = _line(None, cfg)
    try:
        report = asyncio.run(request_selftest(_nats_settings(nats_url, cfg), line, station, timeout, credential))
    except TimeoutError:
        typer.echo(
            f"error: no self-test report from station {station} within {timeout:g} s (is it configured?)", err=True
        )
        raise typer.Exit(2) from None
    cases = [case_fields(c) for c in report.cases]
    if as_json:
        typer.echo(json.dumps({"station": station, "changed": report.changed, "cases": cases}, indent=2))
    else:
        for case in cases:
            mark = "CHANGED" if case["changed"] else "ok"
            typer.echo(f"{case['name']:<20} expected {case['expected']:<7} got {case['verdict'] or 'none':<7} {mark}")
    if report.changed:
        raise typer.Exit(1)
