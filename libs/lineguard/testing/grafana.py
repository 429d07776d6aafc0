"""The Grafana dashboard the deployment ships (deploy/grafana/lineguard.json), read as its tests need it: its
panels and queries, the metric names those name, and what a service's /metrics exposes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# A lineguard metric as a PromQL query names it (the histogram's series with their suffix).
_METRIC = re.compile(r"\blineguard_[a-z0-9_]+\b")
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' targets and the template variables' queries."""
    exprs = [target["expr"] for panel in panels(dashboard) for target in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def named_metrics(dashboard: dict[str, Any]) -> set[str]:
    return {name for expr in queries(dashboard) for name in _METRIC.findall(expr)}


def exposed_metrics(text: str) -> set[str]:
    """The series names a Prometheus text exposition offers: each family's, and a histogram's three series."""
    names = set()
    for name, kind in _TYPE_LINE.findall(text):
        names.add(name)
        if kind == "histogram":
            names.update(name + suffix for suffix in _HISTOGRAM_SERIES)
    return names
