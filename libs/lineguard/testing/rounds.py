"""A benchmark's rounds summed up: the one summary lives in lineguard.bench.rounds (`lineguard bench` uses it too,
and production code never imports lineguard.testing); the benchmarks import it from here or there alike."""

from lineguard.bench.rounds import medians_and_ranges

__all__ = ["medians_and_ranges"]
