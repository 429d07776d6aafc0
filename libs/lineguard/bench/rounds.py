"""A benchmark's rounds summed up as this noisy machine asks: the median of each figure and its range."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence


def medians_and_ranges(rounds: Sequence[Mapping[str, float]], digits: int = 4) -> dict[str, object]:
    """For each figure the rounds have: `key` its median over the rounds, `key_range` [lowest, highest]."""
    summary: dict[str, object] = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        summary[key] = round(statistics.median(values), digits)
        summary[f"{key}_range"] = [round(min(values), digits), round(max(values), digits)]
    return summary
