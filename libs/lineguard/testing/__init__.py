"""Helpers for tests and benchmarks: real servers on free ports, services run in-process, sample frames, models
and records. Nothing that ships to run a line imports this package (import-linter says so); the demo's
configuration and simulated PLC are lineguard.sim."""

from lineguard.testing.postgres import throwaway_database
from lineguard.testing.services import running_service
from lineguard.testing.text import unwrapped

__all__ = ["running_service", "throwaway_database", "unwrapped"]
