"""The three seams of the line's configuration: camera kinds, PLC protocols, model backends.

Each seam has a base settings class (what every kind shares) and a config field type that
validates a station's `camera`, `plc` or the model's `backend` as the Settings of the kind it
names (lineguard.plugins). The kinds themselves are modules elsewhere, declared as entry points:

| seam | key field | entry points | factory | kinds live in |
| --- | --- | --- | --- | --- |
| CAMERAS | `kind` | lineguard.cameras | `open_camera(station_id, settings)` | services.capture.sources |
| PLC_PROTOCOLS | `protocol` | lineguard.plc | `open_endpoints(stations, on_trigger)` | services.gateway.protocols |
| BACKENDS | `kind` | lineguard.backends | `load(path, settings, device, threads)` | vision.backends |
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, WrapValidator

from lineguard.plugins import Seam


class KindSettings(BaseModel):
    # A typo in a field name is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class CameraSettings(KindSettings):
    """What every camera kind takes; each kind's Settings adds its own options."""

    kind: str
    px_per_mm: float = Field(0.0, ge=0, description="calibration; 0 = uncalibrated (no mm² areas)")
    # Checked from each image's header before it is decoded: a small file can declare a huge image (a 442 KB PNG
    # of 12000 x 12000 pixels decodes to 432 MB). 50 MP is above any line-scan or area camera lineguard serves.
    max_pixels: int = Field(50_000_000, gt=0, description="most pixels (width x height) an image may have")
    max_bytes: int = Field(64 * 1024 * 1024, gt=0, description="most bytes an encoded image may have")


class PlcSettings(KindSettings):
    """What every PLC protocol takes; each protocol's Settings adds its own (endpoint, registers, ...)."""

    protocol: str


class BackendSettings(KindSettings):
    """What every model backend takes beyond the model's device and threads (`model.device`,
    `model.intra_op_threads`); each backend's Settings adds its own options."""

    kind: str


CAMERAS: Seam[CameraSettings] = Seam(
    "cameras", noun="camera kind", base=CameraSettings, key_field="kind", factory="open_camera"
)
PLC_PROTOCOLS: Seam[PlcSettings] = Seam(
    "plc", noun="PLC protocol", base=PlcSettings, key_field="protocol", factory="open_endpoints"
)
BACKENDS: Seam[BackendSettings] = Seam(
    "backends", noun="model backend", base=BackendSettings, key_field="kind", factory="load"
)

CameraField = Annotated[SerializeAsAny[CameraSettings], WrapValidator(CAMERAS.validate)]
PlcField = Annotated[SerializeAsAny[PlcSettings], WrapValidator(PLC_PROTOCOLS.validate)]
BackendField = Annotated[SerializeAsAny[BackendSettings], WrapValidator(BACKENDS.validate)]
