"""A golden-part self-test's cases as plain data: what the results service stores in selftest_runs.cases and what
`lineguard selftest --json` prints, the same for both (docs/drift.md)."""

from __future__ import annotations

from typing import Any

from lineguard.contracts import verdict_name
from lineguard.v1.drift_pb2 import SelfTestCase


def case_fields(case: SelfTestCase) -> dict[str, Any]:
    """The case with its verdicts by name; `verdict` None when none came in time."""
    return {
        "name": case.name,
        "expected": verdict_name(case.expected),
        "verdict": verdict_name(case.verdict) if case.verdict else None,
        "reason_codes": list(case.reason_codes),
        "inspection_id": case.inspection_id,
        "changed": case.changed,
    }
