"""`lineguard recipe push / list / show / diff / activate / history / seed`: the recipe store (lineguard.recipes)
from the shell, signed in as the operator (docs/recipes.md)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from lineguard.cli.model_registry import (
    ConfigOption,
    CredentialOption,
    LineOption,
    NatsOption,
    _config,
    _line,
    _nats_settings,
)
from lineguard.cli.model_registry import _run as _run_registry
from lineguard.config import ConfigError, LineConfig
from lineguard.config.rules import ResolvedRule
from lineguard.recipes import (
    RecipeError,
    RecipeStore,
    diff,
    parse_ref,
    read_bundle,
    rule_changes,
    rule_text,
)
from lineguard.registry import ModelRegistry

T = TypeVar("T")

recipe_app = typer.Typer(
    no_args_is_help=True, help="Recipes: versioned bundles in the recipe store; push, list, show, diff, activate."
)
JsonOption = Annotated[bool, typer.Option("--json", help="one JSON document instead of a table")]


def _run(
    nats: str | None,
    config: LineConfig | None,
    work: Callable[[RecipeStore, ModelRegistry], Awaitable[T]],
    credential: Path | None = None,
) -> T:
    provision = not (_nats_settings(nats, config).authenticated or credential)

    async def with_store(registry: ModelRegistry) -> T:
        # On the registry's connection: a version's model reference is checked against it.
        return await work(await RecipeStore.open(registry.js, provision=provision), registry)

    try:
        return _run_registry(nats, config, with_store, credential)
    except RecipeError as exc:
        typer.echo(f"error [{exc.reason}]: {exc}", err=True)
        raise typer.Exit(1) from None


@recipe_app.command("push")
def push(
    file: Annotated[Path, typer.Argument(help="a recipe version file: `id:`, `version:` and the recipe's settings")],
    nats: NatsOption = None,
    config: ConfigOption = None,
    credential: CredentialOption = None,
) -> None:
    """Store a recipe version, checked first: a bad one is refused with the file line and field path of each problem,
    one whose model reference is not in the registry too. The same settings again change nothing."""
    try:
        candidate = read_bundle(file)
    except ConfigError as exc:
        typer.echo(f"recipe refused:\n{exc}", err=True)
        raise typer.Exit(2) from None
    stored, new = _run(nats, _config(config), lambda s, r: s.push(candidate, registry=r), credential)
    typer.echo(f"{stored.ref}: {'stored' if new else 'already stored, unchanged'} (sha256 {stored.sha256})")


@recipe_app.command("seed")
def seed(config: ConfigOption = None, nats: NatsOption = None, credential: CredentialOption = None) -> None:
    """Push every recipe of the line's YAML, and activate each station's recipe where none is active yet."""
    cfg = _config(config)
    if cfg is None:
        typer.echo("error: seed needs the line's YAML (--config or $LINEGUARD_CONFIG)", err=True)
        raise typer.Exit(2)
    report = _run(nats, cfg, lambda s, r: s.seed(cfg, registry=r), credential)
    for what, outcome in report:
        typer.echo(f"{what}: {outcome}")
    if any(outcome.startswith(("refused", "not activated")) for _, outcome in report):
        raise typer.Exit(1)


@recipe_app.command("list")
def list_recipes(
    line: LineOption = None, nats: NatsOption = None, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Every stored version, and the stations of the line that run it."""
    cfg = _config(config)
    target = _line(line, cfg)

    async def gather(store: RecipeStore, _: ModelRegistry) -> tuple[list[Any], dict[str, Any]]:
        return await store.versions(), await store.stations(target)

    versions, stations = _run(nats, cfg, gather)
    rows = [
        {
            "recipe": v.recipe_id,
            "version": v.version,
            "sha256": v.sha256,
            "product": v.settings.product,
            "plc_recipe_number": v.settings.plc_recipe_number,
            "model": f"{v.settings.model.id} {v.settings.model.version}" if v.settings.model else None,
            "pushed_by": v.pushed_by,
            "pushed_at": v.pushed_at,
            "active_on": sorted(s for s, a in stations.items() if a.sha256 == v.sha256 and a.recipe_id == v.recipe_id),
        }
        for v in versions
    ]
    if as_json:
        typer.echo(json.dumps({"line": target, "versions": rows}, indent=2))
        return
    if not rows:
        typer.echo("the recipe store holds no versions yet (lineguard recipe push FILE, or seed)")
        return
    table = Table(title=f"recipes (line {target})", title_justify="left")
    for column in ("RECIPE", "VERSION", "SHA256", "PRODUCT", "PLC NO", "MODEL", "PUSHED", "ACTIVE ON"):
        table.add_column(column)
    for r in rows:
        number = r["plc_recipe_number"]
        table.add_row(
            r["recipe"],
            r["version"],
            r["sha256"][:12],
            r["product"] or "-",
            str(number) if number is not None else "-",
            r["model"] or "-",
            f"{r['pushed_at'][:19]} {r['pushed_by']}",
            ", ".join(r["active_on"]) or "-",
        )
    Console(width=200).print(table)


@recipe_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="ID@VERSION")],
    nats: NatsOption = None,
    config: ConfigOption = None,
) -> None:
    """One stored version, as JSON: its settings, sha256, who pushed it when."""
    recipe_id, version = _ref(ref)
    stored = _run(nats, _config(config), lambda s, _: s.get(recipe_id, version))
    typer.echo(json.dumps(json.loads(stored.to_json()), indent=2))


@recipe_app.command("diff")
def diff_versions(
    a: Annotated[str, typer.Argument(help="ID@VERSION")],
    b: Annotated[str, typer.Argument(help="ID@VERSION")],
    nats: NatsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """What changes from one version to the other: what each class gets (its verdict and thresholds after the
    defaults, as the decision service resolves them), then the settings that differ, by field path."""
    (ida, va), (idb, vb) = _ref(a), _ref(b)

    async def both(store: RecipeStore, _: ModelRegistry) -> tuple[Any, Any]:
        return await store.get(ida, va), await store.get(idb, vb)

    left, right = _run(nats, _config(config), both)
    changes, rules = diff(left, right), rule_changes(left, right)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "rules": [
                        {
                            "class": r.class_name,
                            "zone": r.zone or None,
                            a: _rule_json(r.a, r.listed[0]),
                            b: _rule_json(r.b, r.listed[1]),
                        }
                        for r in rules
                    ],
                    "fields": [{"field": p, a: x, b: y} for p, x, y in changes],
                },
                indent=2,
            )
        )
        return
    if not changes:
        typer.echo(f"{a} and {b} have the same settings (sha256 {left.sha256})")
        return
    console = Console(width=200)
    if rules:
        table = Table(title=f"{a} -> {b}: what each class gets", title_justify="left")
        for column in ("CLASS", "ZONE", a, b):
            table.add_column(column)
        for r in rules:
            # A class a version leaves out is judged all the same: say so, or it reads as the rule being dropped.
            listable = not r.zone and r.class_name is not None
            table.add_row(
                r.class_name or "any other class",
                r.zone,
                rule_text(r.a) + (" (not listed)" if listable and r.a is not None and not r.listed[0] else ""),
                rule_text(r.b) + (" (not listed)" if listable and r.b is not None and not r.listed[1] else ""),
            )
        console.print(table)
    table = Table(title=f"{a} -> {b}: settings", title_justify="left")
    for column in ("FIELD", a, b):
        table.add_column(column)
    for path, x, y in changes:
        table.add_row(path, json.dumps(x), json.dumps(y))
    console.print(table)


def _rule_json(rule: ResolvedRule | None, listed: bool) -> dict[str, Any] | None:
    if rule is None:
        return None
    fields = {k: v for k, v in dataclasses.asdict(rule).items() if k != "zone"}
    return {**fields, "listed": listed}


@recipe_app.command("activate")
def activate(
    ref: Annotated[str, typer.Argument(help="ID@VERSION")],
    station: Annotated[str, typer.Option("--station", "-s", help="the station to run it")],
    line: LineOption = None,
    nats: NatsOption = None,
    config: ConfigOption = None,
    credential: CredentialOption = None,
) -> None:
    """Make a station judge the parts triggered from now on by a stored version (the part in flight keeps its own);
    rolling back is activating the earlier version again."""
    cfg = _config(config)
    if cfg is not None and station not in {s.id for s in cfg.stations}:
        typer.echo(f"error: line {cfg.line} has no station {station!r}", err=True)
        raise typer.Exit(2)
    recipe_id, version = _ref(ref)
    target = _line(line, cfg)

    async def work(store: RecipeStore, _: ModelRegistry) -> tuple[Any, Any]:
        before = await store.active(target, station)
        return before, await store.activate(target, station, recipe_id, version)

    before, after = _run(nats, cfg, work, credential)
    was = f" (was {before.ref})" if before else ""
    typer.echo(f"{target}/{station}: {after.ref} active, sha256 {after.sha256[:12]}, by {after.by}{was}")


@recipe_app.command("history")
def history(
    station: Annotated[str, typer.Option("--station", "-s", help="the station")],
    line: LineOption = None,
    nats: NatsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The station's activations, oldest first (the last 64)."""
    cfg = _config(config)
    target = _line(line, cfg)
    entries = _run(nats, cfg, lambda s, _: s.history(target, station))
    if as_json:
        typer.echo(json.dumps([{"recipe": a.ref, "sha256": a.sha256, "by": a.by, "at": a.at} for a in entries]))
        return
    if not entries:
        typer.echo(f"{target}/{station}: no activations (it runs its recipe of the line's YAML)")
        return
    table = Table(title=f"activations of {target}/{station}", title_justify="left")
    for column in ("AT", "RECIPE", "SHA256", "BY"):
        table.add_column(column)
    for a in entries:
        table.add_row(a.at, a.ref, a.sha256[:12], a.by)
    Console(width=200).print(table)


def _ref(ref: str) -> tuple[str, str]:
    try:
        return parse_ref(ref)
    except RecipeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
