"""The line as six processes with tracing on, exporting to a real OTLP/HTTP receiver run by the test: every part is
one trace, with the steps of its way through the line (trigger, capture, inference, ocr, decision, delivery to the
PLC, results write) as spans of the services that did them, each under the span that published its message; the
part's row names its trace. The Grafana dashboard's metrics are each on some service's /metrics."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lineguard.localline import SERVICES, LocalLine
from lineguard.natsserver import free_port
from lineguard.sim.plc import PlcRunReport, SimulatedPlc
from lineguard.testing.grafana import exposed_metrics, load_dashboard, named_metrics
from lineguard.testing.otlp import OtlpReceiver, ReceivedSpan
from lineguard.testing.waiting import wait_for

PARTS = 8
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "lineguard.json"

# Each span of a part's trace: the service that makes it, and the span it is a child of.
STEPS: dict[str, tuple[str, str | None]] = {
    "trigger": ("gateway", None),  # the PLC's trigger: the trace starts here
    "capture-trigger": ("capture", "trigger"),
    "decision-trigger": ("decision", "trigger"),
    "inference-frame": ("inference", "capture-trigger"),
    "inference": ("inference", "inference-frame"),  # the model's (batched) run, after the handler deferred
    "ocr-frame": ("ocr", "capture-trigger"),
    "decision-inference": ("decision", "inference-frame"),
    "decision-ocr": ("decision", "ocr-frame"),
    "decide": ("decision", "decision-trigger"),  # the join, linked to both results
    "gateway-decision": ("gateway", "decide"),
    "deliver": ("gateway", "gateway-decision"),  # the result handed to the PLC
    "results-decision": ("results", "decide"),  # the MES row written
    "results-ack": ("results", "deliver"),  # the PLC columns written
}


def rows(url: str) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT inspection_id, trace_id, plc_verdict FROM inspections")).all()
    finally:
        engine.dispose()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return answer.read().decode()


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ports = {name: free_port() for name in SERVICES}
    with OtlpReceiver() as receiver:
        line = LocalLine(
            workdir=tmp_path_factory.mktemp("traced-line"),
            deadline_ms=10_000,
            config_overrides={
                "tracing": {"endpoint": receiver.endpoint},
                "services": {name: {"http_port": port} for name, port in ports.items()},
            },
        )
        line.start()
        try:

            async def drive() -> PlcRunReport:
                async with SimulatedPlc(line.opcua_endpoint, station="s1") as plc:
                    report = await plc.run(PARTS, rate_hz=4.0, result_timeout_s=60)
                db = f"sqlite:///{line.database_path}"
                await wait_for(lambda: len([r for r in rows(db) if r.plc_verdict]) >= PARTS, timeout=60)
                return report

            report = asyncio.run(drive())
            metrics = {name: scrape(port) for name, port in ports.items()}
        finally:
            codes = line.stop()  # each service exports the spans it still holds as it stops
        return {
            "report": report,
            "codes": codes,
            "rows": rows(f"sqlite:///{line.database_path}"),
            "spans": receiver.snapshot(),
            "refused": list(receiver.refused),
            "metrics": metrics,
        }


def part_traces(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    """The spans of each trace, by the inspection id its root (the trigger) names.

    A trace with none of a part's steps (the drift watch's state, handled by the gateway's drift consumer, whose
    envelope has an inspection id of its own) is left out; every other must be rooted at its part's trigger."""
    by_trace: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    parts = {}
    for trace in by_trace.values():
        if not any(s.name in STEPS for s in trace):
            continue
        [root] = [s for s in trace if not s.parent_span_id] or [None]
        assert root is not None and root.name == "trigger", f"a part's trace without the trigger as its root: {trace}"
        parts[root.attributes["lineguard.inspection_id"]] = trace
    return parts


def test_the_line_ran_and_stopped_cleanly(traced_run) -> None:
    report = traced_run["report"]
    assert report.ok and len(report.results) == PARTS
    assert traced_run["codes"] == {name: 0 for name in SERVICES}
    assert traced_run["refused"] == [], "the receiver refused an export"


def test_every_part_is_one_trace_and_every_trace_one_part(traced_run) -> None:
    parts = part_traces(traced_run["spans"])
    assert set(parts) == {r.inspection_id for r in traced_run["report"].results}
    for inspection_id, trace in parts.items():
        named = {s.attributes.get("lineguard.inspection_id") for s in trace} - {None}
        assert named == {inspection_id}, "a trace holds spans of another part"


def test_each_trace_has_every_step_once_under_the_span_that_published_its_message(traced_run) -> None:
    for inspection_id, trace in part_traces(traced_run["spans"]).items():
        names = [s.name for s in trace]
        assert all(names.count(name) == 1 for name in STEPS), f"{inspection_id}: {sorted(names)}"
        # One tree: every span's parent is a span of the same trace.
        ids = {s.span_id for s in trace}
        assert all(s.parent_span_id in ids for s in trace if s.parent_span_id), inspection_id
        # Any other span is another consumer's handling of one of the part's messages, one span per delivery (the
        # results archive's frame consumer, retried until the part's row is written).
        others = [s for s in trace if s.name not in STEPS]
        assert all(s.kind == "SPAN_KIND_CONSUMER" and s.parent_span_id for s in others), others
        by_name = {s.name: s for s in trace if s.name in STEPS}
        for name, (service, parent) in STEPS.items():
            span = by_name[name]
            assert span.service == f"lineguard-{service}", (name, span.service)
            assert span.parent_span_id == (by_name[parent].span_id if parent else ""), (inspection_id, name)
            assert not span.error, (inspection_id, name)
            assert span.start_ns <= span.end_ns
        # The decision is linked to the results it joined.
        assert set(by_name["decide"].links) == {by_name["decision-inference"].span_id, by_name["decision-ocr"].span_id}
        assert by_name["deliver"].attributes["lineguard.delivered"] is True
        assert all(by_name[n].kind == "SPAN_KIND_CONSUMER" for n in STEPS if "-" in n)


def test_each_row_names_its_parts_trace(traced_run) -> None:
    parts = part_traces(traced_run["spans"])
    stored = {r.inspection_id: r.trace_id for r in traced_run["rows"]}
    assert len(stored) == PARTS
    assert stored == {inspection_id: trace[0].trace_id for inspection_id, trace in parts.items()}


def test_every_metric_the_grafana_dashboard_names_is_exported_by_a_service(traced_run) -> None:
    exported = set().union(*(exposed_metrics(text) for text in traced_run["metrics"].values()))
    named = named_metrics(load_dashboard(DASHBOARD))
    assert named, "the dashboard names no metric"
    missing = sorted(named - exported)
    assert not missing, f"the dashboard queries metrics no service exports: {missing}"
