"""`lineguard trace SERIAL`: a part's story for a person (a table) or a script (`--json`).

Read from the MES database's documented interface, the `part_history` view and the
`inspection_reasons`, `codes` and `inspection_images` tables (docs/mes-schema.md), with plain
SQL: the library never imports the results service, and a reader's role (SELECT only) is all
it needs."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from lineguard.config import ConfigError, load_config
from lineguard.timestamps import as_utc, utc_iso

HISTORY = sa.text(
    "SELECT inspection_id, decided_at, line, station, part_id, lot, product, shift_day, shift, verdict, "
    "recipe_id, recipe_version, recipe_sha256, model_id, model_version, model_sha256, defects, "
    "plc_verdict, plc_delivered_at, total_ms "
    "FROM part_history WHERE serial = :serial ORDER BY decided_at, inspection_id"
)
REASONS = sa.text(
    "SELECT r.inspection_id, r.reason_code, r.severity FROM inspection_reasons AS r "
    "JOIN inspections AS i ON i.inspection_id = r.inspection_id WHERE i.serial = :serial ORDER BY r.position"
)
# Not in part_history (a view of the MES interface that predates them): read beside it, from the tables.
EXPLANATIONS = sa.text("SELECT inspection_id, explanation FROM inspections WHERE serial = :serial")
CODES = sa.text(
    "SELECT c.inspection_id, c.symbology, c.text, c.grade, c.quality, c.quality_grades FROM codes AS c "
    "JOIN inspections AS i ON i.inspection_id = c.inspection_id WHERE i.serial = :serial ORDER BY c.id"
)
IMAGES = sa.text(
    "SELECT m.inspection_id, m.kind, m.uri, m.content_type, m.bytes, m.sha256, m.width, m.height, m.deleted_at "
    "FROM inspection_images AS m JOIN inspections AS i ON i.inspection_id = m.inspection_id "
    "WHERE i.serial = :serial ORDER BY m.id"
)
_COLOUR = {"PASS": "green", "FAIL": "red", "REWORK": "yellow", "ERROR": "magenta"}


class NoHistory(RuntimeError):
    """The database cannot tell a part's story: not there, or from before the views (the text says which)."""


def read_trace(url: str, serial: str) -> list[dict[str, Any]]:
    """Every inspection of `serial`, oldest first, each with its reasons, the rules that fired (worst first), its
    codes with their print-quality grades and its archived images with their sizes."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
        raise NoHistory(f"no database at {parsed.database}")  # connecting would make an empty one
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            found = sa.inspect(conn)
            if "part_history" not in found.get_view_names():
                raise NoHistory("the MES database has no part_history view: run `lineguard db upgrade`")
            if "grade" not in {c["name"] for c in found.get_columns("codes")}:
                raise NoHistory(
                    "the MES database is from before migration 0007 (no code grades): run `lineguard db upgrade`"
                )
            rows = [dict(r._mapping) for r in conn.execute(HISTORY, {"serial": serial})]
            why: dict[str, list[dict[str, str]]] = {}
            for r in conn.execute(REASONS, {"serial": serial}):
                why.setdefault(r.inspection_id, []).append({"code": r.reason_code, "severity": r.severity})
            explained = {r.inspection_id: _json(r.explanation) for r in conn.execute(EXPLANATIONS, {"serial": serial})}
            codes = _by_inspection(conn.execute(CODES, {"serial": serial}), ("quality", "quality_grades"))
            images = _by_inspection(conn.execute(IMAGES, {"serial": serial}), (), ("deleted_at",))
    finally:
        engine.dispose()
    for row in rows:
        _utc(row, ("decided_at", "plc_delivered_at"))
        row["reasons"] = why.get(row["inspection_id"], [])
        row["explanation"] = explained.get(row["inspection_id"]) or []
        row["codes"] = codes.get(row["inspection_id"], [])
        row["images"] = images.get(row["inspection_id"], [])
    return rows


def _by_inspection(
    rows: Any, json_columns: tuple[str, ...], time_columns: tuple[str, ...] = ()
) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        item = dict(r._mapping)
        for name in json_columns:
            item[name] = _json(item[name])
        _utc(item, time_columns)
        grouped.setdefault(item.pop("inspection_id"), []).append(item)
    return grouped


def _utc(row: dict[str, Any], columns: tuple[str, ...]) -> None:
    # Plain SQL hands a time back as SQLite's text or in PostgreSQL's session zone: each as the UTC time it is.
    for name in columns:
        if row[name] is not None:
            row[name] = as_utc(row[name])


def _plain(value: Any) -> str:
    """What json cannot write itself: a time in lineguard's one form, anything else (a shift's day) as its text."""
    return utc_iso(value) if isinstance(value, datetime) else str(value)


def _json(value: Any) -> Any:
    # A JSON column comes back decoded from the engine that wrote it; a raw string from one that did not.
    return json.loads(value) if isinstance(value, str) else value


def trace(
    serial: Annotated[str, typer.Argument(help="the part's serial, as read from its code")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="the line's YAML (default $LINEGUARD_CONFIG)")
    ] = None,
    url: Annotated[str | None, typer.Option("--url", help="the database URL (default: the config's)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout, for scripts")] = False,
) -> None:
    """A part's story: every inspection, its verdict and why, the model and recipe that judged it."""
    err = Console(stderr=True)
    if url is None:
        try:
            url = load_config(config).database.connect_url()  # with database.password_file's password
        except (ConfigError, ValueError) as exc:  # ValueError: an unreadable database.password_file
            err.print(f"configuration error:\n{exc}", markup=False)
            raise typer.Exit(2) from None
    try:
        rows = read_trace(url, serial)
    except NoHistory as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(1) from None
    except sa.exc.OperationalError as exc:
        err.print(f"cannot read the MES database: {exc.orig or exc}", markup=False)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"serial": serial, "inspections": rows}, default=_plain))
    else:
        _print(Console(), serial, rows)
    if not rows:
        err.print(f"no inspection of serial {serial!r}", markup=False)
        raise typer.Exit(1)


_COLUMNS = ("decided (UTC)", "where", "lot / shift", "verdict", "why", "defects", "codes", "model", "recipe", "PLC got")
# Below this many columns the ten side by side fold every cell (`deci…`, `verd…`): one block per inspection instead.
_WIDE = 120


def _print(out: Console, serial: str, rows: list[dict[str, Any]]) -> None:
    title = f"part {serial}: {len(rows)} inspection{'s' * (len(rows) != 1)}"
    if out.width >= _WIDE:
        table = Table(title=title, title_justify="left")
        for column in _COLUMNS:
            table.add_column(column)
        for r in rows:
            table.add_row(*_cells(r))
        out.print(table)
    else:
        out.print(title, markup=False)
        for r in rows:
            block = Table(show_header=False, box=None, padding=(0, 1))
            block.add_column(style="bold", no_wrap=True)
            block.add_column()
            for column, cell in zip(_COLUMNS, _cells(r), strict=True):
                block.add_row(column, cell)
            out.print(block)
            out.print()
    # The rules that fired and the images kept, in full below the table, where a narrow terminal does not fold them.
    for r in rows:
        if r["explanation"]:
            out.print(f"{str(r['decided_at'])[:23]} {r['verdict']}, because:", markup=False)
            for finding in r["explanation"]:
                out.print(f"  {finding['text']}", markup=False, soft_wrap=True)
        if r["images"]:
            out.print(f"{str(r['decided_at'])[:23]} images:", markup=False)
            for image in r["images"]:
                out.print(f"  {_image_line(image)}", markup=False, soft_wrap=True)


def _cells(r: dict[str, Any]) -> list[str]:
    colour = _COLOUR.get(r["verdict"], "white")
    why = "\n".join(f"{x['code']} ({x['severity']})" for x in r["reasons"]) or "-"
    model = f"{r['model_id']} v{r['model_version']}" if r["model_id"] else "none in time"
    if r["model_sha256"]:
        model += f"\n{str(r['model_sha256'])[:12]}"
    recipe = f"{r['recipe_id']} v{r['recipe_version'] or '?'}"
    if r["recipe_sha256"]:
        recipe += f"\n{str(r['recipe_sha256'])[:12]}"
    plc = r["plc_verdict"] or "not reported"
    if r["plc_verdict"] and r["plc_delivered_at"] is None:
        plc += " (not delivered)"
    shift = f"{r['shift']} {r['shift_day']}" if r["shift"] else "-"
    return [
        str(r["decided_at"])[:23],
        f"{r['line']}/{r['station']}" + (f"\npart {r['part_id']}" if r["part_id"] else ""),
        f"{r['lot'] or '-'}\n{shift}",
        f"[{colour}]{r['verdict']}[/]",
        why,
        str(r["defects"]),
        "\n".join(_code_line(c) for c in r["codes"]) or "-",
        model,
        recipe,
        plc,
    ]


def _code_line(code: dict[str, Any]) -> str:
    """`DataMatrix LG-1 grade C (modulation C, symbol_contrast B)`: the letters below A, worst first: what to fix."""
    line = f"{code['symbology']} {code['text']}"
    if not code["grade"]:
        return line + " (not graded)"
    letters = code["quality_grades"] or {}
    weak = sorted((name for name, g in letters.items() if g != "A"), key=lambda n: ("FDCB".find(letters[n]), n))
    detail = ", ".join(f"{name} {letters[name]}" for name in weak)
    return f"{line} grade {code['grade']}" + (f" ({detail})" if detail else "")


def _image_line(image: dict[str, Any]) -> str:
    size = f"{image['width']}x{image['height']} px" if image["width"] else "size not recorded"
    kept = f"deleted by retention {str(image['deleted_at'])[:19]}" if image["deleted_at"] is not None else image["uri"]
    return f"{image['kind']} {size}, {image['bytes']} bytes: {kept}"
