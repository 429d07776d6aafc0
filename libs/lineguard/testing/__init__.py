"""Helpers for tests and benchmarks: real servers on free ports, sample configs."""

from lineguard.testing.lineconfig import demo_config_dict, write_config
from lineguard.testing.postgres import throwaway_database

__all__ = ["demo_config_dict", "throwaway_database", "write_config"]
