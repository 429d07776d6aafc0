"""Helpers for tests and benchmarks: real servers on free ports, sample configs."""

from lineguard.sim.lineconfig import demo_config_dict, write_config
from lineguard.testing.postgres import throwaway_database
from lineguard.testing.services import running_service
from lineguard.testing.text import unwrapped

__all__ = ["demo_config_dict", "running_service", "throwaway_database", "unwrapped", "write_config"]
