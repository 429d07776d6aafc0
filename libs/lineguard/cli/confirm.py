"""`lineguard confirm INSPECTION_ID --verdict V --why TEXT --by NAME`: a person confirms or overrules a verdict.

Straight into the MES database (`--url`, else the line's config), through the results service's admin module
(the shared library never imports a service; see lineguard.cli.db), not through the API: the person at the
line's box who holds the database's credentials can already make an API token under any name, so `--by` trusts
them no more than a token would, and it works while no API is served. Callers elsewhere (an MES, a review
tool) use the API's `POST /v1/inspections/{id}/confirmations`, where who confirms is the token's name."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from lineguard.cli.db import ConfigOption, UrlOption, exit_with, results_admin


class TrueVerdict(StrEnum):
    PASS = "PASS"
    REWORK = "REWORK"
    FAIL = "FAIL"


def confirm(
    inspection_id: Annotated[str, typer.Argument(help="the inspection's id")],
    verdict: Annotated[TrueVerdict, typer.Option(case_sensitive=False, help="the verdict the part truly deserves")],
    by: Annotated[str, typer.Option("--by", help="who confirms (a person's name)")],
    why: Annotated[str, typer.Option("--why", help="why; needed when overruling the line's verdict")] = "",
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """Confirm or overrule the line's verdict of one inspection: kept beside the record (which it never changes),
    the truth the shadow report and the evaluation count. Exit 1: no such inspection; 2: a bad value."""
    args = ["confirm", inspection_id, "--verdict", verdict.value, "--by", by, "--why", why]
    exit_with(results_admin(*args, config=config, url=url))
