"""The simulated PLC's report: exactly one result per trigger, or it says which were not."""

from __future__ import annotations

import math

import pytest

from lineguard.sim.plc import PlcResult, PlcRunReport, percentile


def result(seq: int, latency_s: float = 0.1) -> PlcResult:
    return PlcResult(sequence=seq, inspection_id=f"id-{seq}", verdict="PASS", reasons=[], latency_s=latency_s)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([0.3], 99) == 0.3
    assert math.isnan(percentile([], 50))


@pytest.mark.parametrize(
    ("report", "ok"),
    [
        (PlcRunReport(results=[result(1)]), True),
        (PlcRunReport(), False),  # nothing triggered, nothing proven
        (PlcRunReport(results=[result(1)], missing=[2]), False),
        (PlcRunReport(results=[result(1)], duplicates=[1]), False),
        (PlcRunReport(results=[result(1)], unexpected=[result(9)]), False),
    ],
)
def test_ok_only_when_every_trigger_got_exactly_one_result(report: PlcRunReport, ok: bool) -> None:
    assert report.ok is ok
