"""The line's configuration: one YAML file, any value overridable by environment.

Environment variables are `LINEGUARD_` + the field path joined by `__`, e.g.
`LINEGUARD_NATS__URL=nats://nats:4222` or `LINEGUARD_DATABASE__URL=postgresql+psycopg://...`.
"""

from __future__ import annotations

from datetime import time
from itertools import pairwise
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy import make_url

from lineguard.config.drift import DriftSettings, SelfTestSettings
from lineguard.config.ocr import OcrSettings, Regex
from lineguard.config.rules import ClassRule, ImageSize, TotalAreaRule, Zone, zone_problems
from lineguard.config.seams import ArchiveField, BackendField, CameraField, PlcField

MiB = 1024 * 1024
_ID = r"^[A-Za-z0-9_-]+$"


class _Strict(BaseModel):
    # A typo in a field name is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class NatsTlsSettings(_Strict):
    ca_file: str | None = Field(
        None,
        description="the CA the server's certificate is checked against (`lineguard nats creds`: clients/ca.pem); "
        "default: the system's",
    )
    cert_file: str | None = Field(None, description="a client certificate, for a server that verifies clients")
    key_file: str | None = Field(None, description="the client certificate's key")

    @model_validator(mode="after")
    def _cert_with_key(self) -> NatsTlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class NatsSettings(_Strict):
    url: str = "nats://127.0.0.1:4222"
    credentials_dir: str | None = Field(
        None,
        description="the folder of the NATS identities' nkey seeds, `<identity>.nk` (`lineguard nats creds` writes "
        "them to <out>/clients): each service signs in with its own (docs/security.md); none: no credential, "
        "which only an open server (the tests') lets in",
    )
    tls: NatsTlsSettings | None = Field(None, description="TLS to the server (a `tls://` URL uses the system's CAs)")
    connect_timeout_s: float = Field(5.0, gt=0)
    publish_timeout_s: float = Field(5.0, gt=0, description="how long a publish waits for the stream's ack")
    stream_max_age_s: float = Field(7 * 24 * 3600, gt=0, description="how long a stream keeps messages")
    stream_max_bytes: int = Field(2 * 1024 * MiB, gt=0, description="size limit of each stream")
    duplicate_window_s: float = Field(120, gt=0, description="how long a Nats-Msg-Id is remembered")
    inline_image_max_bytes: int = Field(4 * MiB, gt=0, description="larger frames go to the object store")
    ack_wait_s: float = Field(30, gt=0)
    max_deliver: int = Field(5, ge=1, description="deliveries before a failing message is dead-lettered")
    nak_delay_s: float = Field(1.0, ge=0)
    fetch_batch: int = Field(16, ge=1)

    @property
    def authenticated(self) -> bool:
        """Whether connections sign in: a line whose streams an admin provisions (lineguard.bus.permissions)."""
        return self.credentials_dir is not None


class StationSettings(_Strict):
    id: str = Field(pattern=_ID)
    recipe: str = Field(description="the recipe id parts at this station are judged by")
    camera: CameraField = Field(
        "simulator",
        validate_default=True,
        description="the camera kind (`kind`) and its own options; see lineguard.config.seams",
    )
    plc: PlcField = Field(
        "opcua",
        validate_default=True,
        description="the PLC protocol (`protocol`) and its own options; see lineguard.config.seams",
    )
    selftest: SelfTestSettings | None = Field(
        None, description="the station's golden parts, judged through the live path (docs/drift.md); none: no self-test"
    )


_SHA256 = r"^[0-9a-f]{64}$"


class ModelRef(_Strict):
    """A model version in the registry (lineguard.registry), named exactly: its file's sha256 too."""

    id: str = Field(min_length=1, description="the model card's model_id")
    version: str = Field(min_length=1)
    sha256: str = Field(pattern=_SHA256, description="the model file's sha256 (64 lower-case hex digits)")


class ProductCamera(_Strict):
    """The camera settings a product needs (the station's camera keeps its own where these are not given)."""

    exposure_us: float | None = Field(None, gt=0, description="exposure time in microseconds")
    gain: float | None = Field(None, ge=0, description="analog gain, in the camera's unit (dB on GenICam)")


class ImageRetention(_Strict):
    """How long a product's images stay in the archive."""

    defect_days: int = Field(90, ge=0, description="images of parts that did not pass; 0: not kept")
    good_days: int = Field(7, ge=0, description="thumbnails of parts that passed; 0: not kept")
    good_images: Literal["thumbnail", "image"] = Field(
        "thumbnail", description="what a pass keeps: its thumbnail, or the full image (a non-pass: image and overlay)"
    )


class RecipeSettings(_Strict):
    version: str = "1"
    product: str | None = Field(
        None, max_length=64, description="the product this recipe judges, stored with every inspection's row"
    )
    deadline_ms: int = Field(2000, gt=0, description="trigger to verdict; a missing input then is FAIL/TIMEOUT")
    min_score: float = Field(0.5, ge=0, le=1)
    classes: dict[str, ClassRule] = Field(default_factory=dict, description="rules per defect class")
    image_size: ImageSize | None = Field(
        None, description="the width and height of the image the zones are drawn on; needed with zones"
    )
    zones: dict[str, Zone] = Field(
        default_factory=dict, description="regions by name: critical, tolerant or ignored (docs/decisions.md)"
    )
    total_area: TotalAreaRule | None = Field(None, description="a limit on the part's total defect area")
    inspect_roi: list[int] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="x, y, width, height the defect model looks at; default whole image",
    )
    align_reference_px: int = Field(
        0,
        ge=0,
        le=128,
        description="0: a paired model's references come registered to the camera's view; N: "
        "each reference is first shifted onto the part (phase correlation, about 12 ms "
        "a 640 px frame on a 2-core CPU), a part further than N px off is refused",
    )
    code_roi: list[int] | None = Field(
        None, min_length=4, max_length=4, description="x, y, width, height where codes are read; default whole image"
    )
    require_code: bool = Field(False, description="a part without a readable code fails (CODE_MISSING)")
    code_pattern: Regex | None = Field(None, description="regular expression the serial must match in full")
    ocr: OcrSettings = Field(
        default_factory=OcrSettings, description="identity reads: code formats, the ladder's budget, fields and checks"
    )

    @field_validator("zones")
    @classmethod
    def _zones_inside_the_image(cls, zones: dict[str, Zone], info: ValidationInfo) -> dict[str, Zone]:
        problems = zone_problems(zones, info.data.get("image_size"))
        if problems:
            raise ValueError("; ".join(problems))
        return zones

    # What a recipe version carries besides its rules (docs/recipes.md): the bundle the recipe store keeps.
    model: ModelRef | None = Field(
        None, description="the registry model this recipe was made for (id, version, sha256); checked at push"
    )
    camera: ProductCamera = Field(default_factory=ProductCamera, description="the camera settings for this product")
    plc_recipe_number: int | None = Field(
        None, ge=1, le=65535, description="the number a PLC selects this recipe by (the register `recipe` field)"
    )
    retention: ImageRetention = Field(
        default_factory=ImageRetention, description="how long this product's images are kept"
    )


class ModelSettings(_Strict):
    path: str | None = Field(None, description="ONNX file; default: the model shipped in the package")
    id: str | None = Field(None, description="default: from the model card beside the file")
    version: str | None = None
    conf_threshold: float = Field(0.25, ge=0, le=1)
    iou_threshold: float = Field(0.45, ge=0, le=1)
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="CPU threads per inference; 0 = half the cores, at least 1 (the line's other processes "
        "need the rest; docs/inference.md)",
    )
    device: str | None = Field(
        None,
        description="'cpu', 'cuda' / 'cuda:N' (onnxruntime-gpu, tensorrt), or an "
        "OpenVINO device name ('GPU', 'NPU', 'AUTO'); default: the "
        "backend's own (cpu; tensorrt: cuda, GPU 0)",
    )
    backend: BackendField = Field(
        "onnxruntime",
        validate_default=True,
        description="what runs the model: a backend's key (onnxruntime, tensorrt, openvino: the last two need their "
        "extra installed), or a mapping of `kind` and that backend's own options, checked here",
    )
    batch_size: int = Field(1, ge=1, description="frames run as one batch under load; 1 = no batching")
    batch_wait_ms: float = Field(
        5.0, ge=0, description="how long the first frame of a batch waits for others before it runs anyway"
    )
    registry: bool = Field(
        True,
        description="run the version promoted for this line in the model registry (`lineguard model "
        "promote`) and swap to each new promotion; without a promotion, or false: `path`",
    )
    cache_dir: str | None = Field(
        None,
        description="where registry models are downloaded; default $XDG_CACHE_HOME/lineguard/models "
        "(~/.cache/lineguard/models)",
    )
    trusted_keys_dir: str | None = Field(
        None,
        description="the folder of public keys (*.pub) whose signatures on a model card the service accepts; "
        "default: the package's own (lineguard/vision/models/trusted: the project's release key)",
    )
    allow_unsigned: bool = Field(
        False, description="also load a model whose card is not signed (logged as a warning; never on a real line)"
    )


class DatabaseSettings(_Strict):
    url: str = Field("sqlite:///lineguard.db", description="the database URL; its password better in password_file")
    password: SecretStr | None = Field(
        None, description="the role's password (set it by LINEGUARD_DATABASE__PASSWORD, not in the YAML)"
    )
    password_file: str | None = Field(
        None, description="a file whose content (one line) is the role's password, e.g. a mounted secret"
    )
    write_batch: int = Field(
        500, ge=1, le=10_000, description="decisions the results service writes in one transaction, at most"
    )
    write_wait_ms: float = Field(
        20.0, ge=0, le=10_000, description="how long the first decision of a batch waits for more before it is written"
    )

    @model_validator(mode="after")
    def _one_password(self) -> DatabaseSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("password and password_file: give one")
        return self

    def connect_url(self) -> str:
        """The URL to connect with: `url`, with the password from password_file or password merged in.

        It holds the password in clear: pass it to the engine, never to a log (render the engine's
        URL with hide_password=True, as db.safe_url does)."""
        password = self.password.get_secret_value() if self.password is not None else None
        if self.password_file is not None:
            try:
                password = Path(self.password_file).expanduser().read_text().rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"database.password_file {self.password_file}: {exc.strerror}") from None
        if password is None:
            return self.url
        return make_url(self.url).set(password=password).render_as_string(hide_password=False)


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MINUTES_A_DAY = 24 * 60


class ShiftSettings(_Strict):
    name: str = Field(pattern=_ID, max_length=32)
    start: time = Field(description="local wall-clock time the shift starts, e.g. 06:00")
    end: time = Field(description="local time it ends; at or before start: it ends the next day (a night shift)")
    days: list[Weekday] = Field(
        default_factory=lambda: list(_WEEKDAYS), description="the days it starts on; default every day"
    )

    def minutes(self) -> int:
        """How long the shift lasts, by the wall clock (a shift from 06:00 to 06:00 lasts a day)."""
        length = (self.end.hour * 60 + self.end.minute) - (self.start.hour * 60 + self.start.minute)
        return length % _MINUTES_A_DAY or _MINUTES_A_DAY


class ShiftCalendar(_Strict):
    """The line's shifts in the plant's time zone; each inspection's row names the shift it fell in."""

    timezone: str = Field("UTC", description="the plant's IANA time zone, e.g. Europe/Berlin")
    shifts: list[ShiftSettings] = Field(default_factory=list, description="none: rows carry no shift")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)") from None
        return value

    @model_validator(mode="after")
    def _no_overlaps(self) -> ShiftCalendar:
        names = [s.name for s in self.shifts]
        if len(set(names)) != len(names):
            raise ValueError(f"shift names must be unique, got {names}")
        week = 7 * _MINUTES_A_DAY
        taken: list[tuple[int, int, str]] = []  # [start, end) minutes of the week, split where the week wraps
        for shift in self.shifts:
            for day in shift.days:
                start = _WEEKDAYS.index(day) * _MINUTES_A_DAY + shift.start.hour * 60 + shift.start.minute
                end = start + shift.minutes()
                label = f"{shift.name} ({day} {shift.start:%H:%M})"
                taken += [(start, min(end, week), label)] + ([(0, end - week, label)] if end > week else [])
        taken.sort()
        for (_, end, first), (start, _, second) in pairwise(taken):
            if start < end:
                raise ValueError(f"shifts overlap: {first} and {second}")
        return self


class ApiSettings(_Strict):
    """The query API (docs/api.md): served by the results service when enabled, or by `lineguard-api`."""

    enabled: bool = Field(False, description="the results service serves the API as well (lineguard-api always does)")
    host: str = Field("127.0.0.1", description="address the API listens on")
    port: int = Field(8080, ge=0, le=65535, description="0 = any free port")
    database_url: str | None = Field(None, description="a reader role's URL (SELECT only); default database.url")
    rate_per_s: float = Field(20.0, gt=0, description="requests a token may make per second, sustained")
    burst: int = Field(40, ge=1, description="requests a token may make at once before the rate applies")
    # The operator dashboard (docs/dashboard.md), served on /dashboard by the same process.
    session_hours: float = Field(
        12.0, gt=0, le=168, description="a dashboard sign-in lasts this long (the token's revocation ends it at once)"
    )
    secure_cookie: bool = Field(
        True,
        description="the dashboard's session cookie goes over HTTPS only (browsers also keep it on http://localhost); "
        "false only for a plain-HTTP line-side screen on a trusted cell network",
    )
    trace_url: str | None = Field(
        None,
        pattern=r"^https?://\S*\{trace_id\}\S*$",
        description="the dashboard links a record's trace id here, e.g. http://jaeger:16686/trace/{trace_id}",
    )


class GatewaySettings(_Strict):
    result_grace_ms: int = Field(
        500, ge=0, description="past the recipe deadline, how long the gateway waits before giving FAIL itself"
    )
    watch_services: list[Literal["capture", "inference", "ocr", "decision"]] = Field(
        ["capture", "inference", "ocr", "decision"],
        description="the services a station needs: one silent puts every station in Error (services/gateway/health.py)",
    )
    missed_heartbeats: int = Field(
        3, ge=1, le=100, description="a watched service is down after this many of its heartbeat_s without one"
    )


class ServiceSettings(_Strict):
    http_host: str = "127.0.0.1"
    http_port: int = Field(0, ge=0, le=65535, description="/metrics, /healthz, /readyz; 0 = any free port")
    heartbeat_s: float = Field(5.0, gt=0)


class ServicesSettings(_Strict):
    capture: ServiceSettings = ServiceSettings()
    inference: ServiceSettings = ServiceSettings()
    ocr: ServiceSettings = ServiceSettings()
    decision: ServiceSettings = ServiceSettings()
    gateway: ServiceSettings = ServiceSettings()
    results: ServiceSettings = ServiceSettings()


class TracingSettings(_Strict):
    """OpenTelemetry traces, one per inspection (docs/observability.md); off unless `endpoint` is set."""

    endpoint: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="the OTLP/HTTP traces URL (http://collector:4318/v1/traces); none: tracing off, at no cost",
    )
    sample_ratio: float = Field(
        1.0, ge=0, le=1, description="the share of parts traced, chosen by the gateway at the trigger"
    )
    ca_file: str | None = Field(None, description="the CA an https collector's certificate is checked with")
    timeout_s: float = Field(5.0, gt=0, description="how long one export to the collector may take")


class LineConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LINEGUARD_", env_nested_delimiter="__", extra="forbid", nested_model_default_partial_update=True
    )

    line: str = Field("l1", pattern=_ID)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    nats: NatsSettings = NatsSettings()
    stations: list[StationSettings] = Field(min_length=1)
    recipes: dict[str, RecipeSettings] = Field(min_length=1)
    # A factory, not an instance: validating the default backend imports its module, which must not happen
    # while lineguard.config itself is still being imported.
    model: ModelSettings = Field(default_factory=ModelSettings)
    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    calendar: ShiftCalendar = ShiftCalendar()
    gateway: GatewaySettings = GatewaySettings()
    services: ServicesSettings = ServicesSettings()
    archive: ArchiveField = Field(
        {"kind": "folder"},
        validate_default=True,
        description="where inspected images are kept (`kind`: folder, s3) and its budget; see lineguard.config.seams",
    )
    tracing: TracingSettings = TracingSettings()
    drift: DriftSettings = Field(default_factory=DriftSettings, description="the drift watch (docs/drift.md)")

    @model_validator(mode="after")
    def _stations_name_known_recipes(self) -> LineConfig:
        ids = [s.id for s in self.stations]
        if len(set(ids)) != len(ids):
            raise ValueError(f"station ids must be unique, got {ids}")
        for station in self.stations:
            if station.recipe not in self.recipes:
                known = ", ".join(sorted(self.recipes))
                raise ValueError(
                    f"station {station.id!r} names recipe {station.recipe!r}, which is not defined (known: {known})"
                )
        return self

    @model_validator(mode="after")
    def _plc_recipe_numbers_unique(self) -> LineConfig:
        by_number: dict[int, str] = {}
        for recipe_id, recipe in sorted(self.recipes.items()):
            number = recipe.plc_recipe_number
            if number is not None and number in by_number:
                raise ValueError(
                    f"recipes {by_number[number]!r} and {recipe_id!r} have the same plc_recipe_number {number}"
                )
            if number is not None:
                by_number[number] = recipe_id
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML arrives as init arguments; the environment overrides it.
        return (env_settings, init_settings)

    def station(self, station_id: str) -> StationSettings:
        for station in self.stations:
            if station.id == station_id:
                return station
        raise KeyError(f"station {station_id!r} is not configured on line {self.line!r}")

    def recipe(self, recipe_id: str) -> RecipeSettings:
        try:
            return self.recipes[recipe_id]
        except KeyError:
            known = ", ".join(sorted(self.recipes))
            raise KeyError(f"unknown recipe {recipe_id!r} (known: {known})") from None
