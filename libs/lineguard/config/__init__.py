"""Configuration of the line: `load_config(path)` gives a validated `LineConfig`."""

from lineguard.config.loader import ConfigError, Problem, load_config, parse_config
from lineguard.config.model import (
    DatabaseSettings,
    GatewaySettings,
    LineConfig,
    ModelSettings,
    NatsSettings,
    NatsTlsSettings,
    RecipeSettings,
    ServiceSettings,
    StationSettings,
    TracingSettings,
)
from lineguard.config.rules import ClassRule, ImageSize, TotalAreaRule, Zone
from lineguard.config.seams import (
    BACKENDS,
    CAMERAS,
    PLC_PROTOCOLS,
    BackendSettings,
    CameraSettings,
    KindSettings,
    PlcSettings,
)

__all__ = [
    "BACKENDS",
    "CAMERAS",
    "PLC_PROTOCOLS",
    "BackendSettings",
    "CameraSettings",
    "ClassRule",
    "ConfigError",
    "DatabaseSettings",
    "GatewaySettings",
    "ImageSize",
    "KindSettings",
    "LineConfig",
    "ModelSettings",
    "NatsSettings",
    "NatsTlsSettings",
    "PlcSettings",
    "Problem",
    "RecipeSettings",
    "ServiceSettings",
    "StationSettings",
    "TotalAreaRule",
    "TracingSettings",
    "Zone",
    "load_config",
    "parse_config",
]
