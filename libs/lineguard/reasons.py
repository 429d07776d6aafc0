"""Reason codes: how a defect class is named, and how bad each reason is.

The decision service names the reasons (`lineguard.services.decision.rules`); the results
service stores each as a row of its own, worst first, and needs to know how bad each one is
without asking the decision service: both read it from here and from the recipe."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Worse verdicts rank higher: the order a part's reasons are listed in, and the pareto's.
SEVERITY_RANK: Mapping[str, int] = {"PASS": 0, "REWORK": 1, "FAIL": 2, "ERROR": 3}
# Reasons that make a part ERROR (lineguard could not judge it), whatever the recipe says.
ERROR_REASONS = frozenset({"INVALID_RESULT", "UNKNOWN_RECIPE", "IMAGE_SIZE_MISMATCH"})
# A frame service could not judge the part by its deadline and refused its frame (lineguard.runtime.admission).
OVERLOAD = "OVERLOAD"
# Reasons of a part lineguard did not inspect, wholly or in part: it could not judge it (ERROR_REASONS), a result was
# not in by the deadline (TIMEOUT, the decision service's or the gateway's own, with NO_INFERENCE / NO_OCR naming
# what was missing) or a frame was refused (OVERLOAD). Such a FAIL says nothing of the part itself, so a PLC must
# be able to tell it from a judged one (OPC 40100's ResultState Failed); a code that was looked for and not found or
# not read (CODE_MISSING, NO_READ) is a judgement of the part, not one of these.
NOT_INSPECTED_REASONS = ERROR_REASONS | {"TIMEOUT", "NO_INFERENCE", "NO_OCR", OVERLOAD}


def defect_reason(class_name: str) -> str:
    """`DEFECT_<CLASS>`: "pin-hole" -> "DEFECT_PIN_HOLE"."""
    return "DEFECT_" + re.sub(r"[^A-Z0-9]+", "_", class_name.upper()).strip("_")


def reason_severity(reason: str, verdict: str, rework_classes: Iterable[str] = ()) -> str:
    """The verdict `reason` gives on its own (ERROR, FAIL or REWORK), never worse than the part's `verdict`.

    `rework_classes`: the recipe's defect classes whose rule is rework; every other reason fails."""
    if reason in ERROR_REASONS:
        own = "ERROR"
    elif reason in {defect_reason(c) for c in rework_classes}:
        own = "REWORK"
    else:
        own = "FAIL"
    # A recipe changed since the part was judged cannot make a reason worse than the verdict it led to.
    if verdict in SEVERITY_RANK and SEVERITY_RANK[verdict] > 0 and SEVERITY_RANK[own] > SEVERITY_RANK[verdict]:
        return verdict
    return own


def ordered_reasons(reasons: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(reason, severity) pairs in the fixed order: worst first, then by name; each reason once."""
    unique = dict(reasons)
    return sorted(unique.items(), key=lambda rs: (-SEVERITY_RANK.get(rs[1], 0), rs[0]))
