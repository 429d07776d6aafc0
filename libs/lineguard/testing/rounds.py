"""A benchmark's rounds summed up: the one summary lives in lineguard.bench.rounds, where `lineguard bench` may use
it (production code never imports lineguard.testing; today only the benchmarks do, through here)."""

from lineguard.bench.rounds import medians_and_ranges

__all__ = ["medians_and_ranges"]
