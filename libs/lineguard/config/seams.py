"""The four seams of the line's configuration: camera kinds, PLC protocols, model backends, image archives.

Each seam has a base settings class (what every kind shares) and a config field type that
validates a station's `camera`, `plc` or the model's `backend` as the Settings of the kind it
names (lineguard.plugins). The kinds themselves are modules elsewhere, declared as entry points:

| seam | key field | entry points | factory | kinds live in |
| --- | --- | --- | --- | --- |
| CAMERAS | `kind` | lineguard.cameras | `open_camera(station_id, settings)` | services.capture.sources |
| PLC_PROTOCOLS | `protocol` | lineguard.plc | `open_endpoints(stations, on_trigger)` | services.gateway.protocols |
| BACKENDS | `kind` | lineguard.backends | `load(path, settings, device, threads)` | vision.backends |
| ARCHIVES | `kind` | lineguard.archives | `open_archive(settings)` | services.results.archive |
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


class ArchiveSettings(KindSettings):
    """Where the results service keeps inspected images (docs/mes-schema.md, Retention); each kind adds its place."""

    kind: str
    enabled: bool = Field(True, description="keep images at all; false: frames are not read, no image rows")
    max_bytes: int = Field(
        10 * 1024**3,
        gt=0,
        description="the archive's budget: before an image would take it past this, the oldest are deleted "
        "(passes first), so the archive never grows beyond it",
    )
    thumbnail_px: int = Field(256, ge=16, le=4096, description="the longer side of a pass's thumbnail")
    jpeg_quality: int = Field(85, ge=10, le=100, description="thumbnails' and overlays' JPEG quality")
    retention_every_s: float = Field(300.0, gt=0, description="how often images past their age are deleted")
    decision_wait_s: float = Field(
        600.0,
        gt=0,
        description="a frame whose inspection row is not written this long after its trigger is dead-lettered "
        "(while the database answers), with the reason",
    )


CAMERAS: Seam[CameraSettings] = Seam(
    "cameras", noun="camera kind", base=CameraSettings, key_field="kind", factory="open_camera"
)
PLC_PROTOCOLS: Seam[PlcSettings] = Seam(
    "plc", noun="PLC protocol", base=PlcSettings, key_field="protocol", factory="open_endpoints"
)
BACKENDS: Seam[BackendSettings] = Seam(
    "backends", noun="model backend", base=BackendSettings, key_field="kind", factory="load"
)

ARCHIVES: Seam[ArchiveSettings] = Seam(
    "archives", noun="image archive kind", base=ArchiveSettings, key_field="kind", factory="open_archive"
)

CameraField = Annotated[SerializeAsAny[CameraSettings], WrapValidator(CAMERAS.validate)]
PlcField = Annotated[SerializeAsAny[PlcSettings], WrapValidator(PLC_PROTOCOLS.validate)]
BackendField = Annotated[SerializeAsAny[BackendSettings], WrapValidator(BACKENDS.validate)]
ArchiveField = Annotated[SerializeAsAny[ArchiveSettings], WrapValidator(ARCHIVES.validate)]
