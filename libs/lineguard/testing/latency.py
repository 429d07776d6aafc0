"""One side of a benchmark timed ask by ask, and a round of two sides put side by side: the service against its
raw baseline (benchmarks/capture.py and capture_rtsp.py measure their cameras so)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def timed(ask: Callable[[int], object], asks: int) -> list[float]:
    """Each ask's latency in seconds: `ask(0)` once untimed (a stream's start is paid before timing), then
    `ask(1)` to `ask(asks)` timed one by one."""
    ask(0)
    latencies = []
    for seq in range(1, asks + 1):
        started = time.perf_counter()
        ask(seq)
        latencies.append(time.perf_counter() - started)
    return latencies


def latency_figures(latencies: list[float]) -> dict[str, float]:
    """Asks per second over the loop's time, and the latencies' p50 and p99 in ms."""
    ms = sorted(x * 1000 for x in latencies)
    return {
        "fps": len(latencies) / sum(latencies),
        "p50_ms": statistics.median(ms),
        "p99_ms": statistics.quantiles(ms, n=100, method="inclusive")[98],
    }


def side_by_side(got: Mapping[str, Mapping[str, float]], side: str, raw: str = "raw") -> dict[str, float]:
    """One round's figures of both sides flat (`<side>_fps`, ...), with `ratio_fps` (side / raw) and
    `added_p50_ms` (side - raw): what lineguard.testing.rounds.medians_and_ranges sums up over the rounds."""
    flat = {f"{name}_{key}": value for name, values in got.items() for key, value in values.items()}
    flat["ratio_fps"] = got[side]["fps"] / got[raw]["fps"]
    flat["added_p50_ms"] = got[side]["p50_ms"] - got[raw]["p50_ms"]
    return flat


def round_line(number: int, flat: Mapping[str, float], side: str, raw: str = "raw") -> str:
    """A round's figures as one line of text."""
    return (
        f"round {number}: "
        + " | ".join(
            f"{name} {flat[f'{name}_fps']:.1f} frames/s p50 {flat[f'{name}_p50_ms']:.2f} ms "
            f"p99 {flat[f'{name}_p99_ms']:.2f} ms"
            for name in (side, raw)
        )
        + f" | ratio {flat['ratio_fps']:.3f}"
    )
