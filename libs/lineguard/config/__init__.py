"""Configuration of the line: `load_config(path)` gives a validated `LineConfig`."""

from lineguard.config.loader import ConfigError, Problem, load_config, parse_config
from lineguard.config.model import (
    CameraSettings,
    ClassRule,
    DatabaseSettings,
    GatewaySettings,
    LineConfig,
    ModelSettings,
    NatsSettings,
    PlcSettings,
    RecipeSettings,
    ServiceSettings,
    StationSettings,
)

__all__ = [
    "CameraSettings", "ClassRule", "ConfigError", "DatabaseSettings", "GatewaySettings", "LineConfig",
    "ModelSettings", "NatsSettings", "PlcSettings", "Problem", "RecipeSettings", "ServiceSettings",
    "StationSettings", "load_config", "parse_config",
]
