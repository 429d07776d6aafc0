"""The GenTL camera (`kind: gentl`): a GenICam camera through a vendor's GenTL producer (a `.cti` file: Basler
pylon, FLIR Spinnaker, Baumer) and harvesters, for cameras Aravis cannot reach (USB3 Vision through a vendor's
driver, CoaXPress, Camera Link frame grabbers). The same settings as `gige` where they mean the same.

What is written to the camera and how a buffer becomes pixels are plain functions (`node_writes`,
`component_image`), tested without a producer; the source only opens, applies them and fetches.

- `trigger: software` (the default): each PLC trigger executes TriggerSoftware and the next buffer is its frame;
  buffers already waiting are queued back first, so a grab never returns an older part's image.
- `trigger: hardware`: the camera is triggered by `hardware_source` (Line0, ...) wired to the PLC's sensor; each
  grab takes the oldest buffer waiting (one pulse, one part, in order). No free run: without time stamps matched
  against the trigger's (as gige does), a free-running camera's next frame is no particular part's.

A grab that fails drops the acquirer; the next grab after a backoff opens the camera again (the station is
DEGRADED meanwhile, `problem()` says why, the PLC gets a FAIL). harvesters is imported on opening only, so a
configuration naming this kind validates on a box without it."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from lineguard.cameras.aravis import PIXEL_FORMATS
from lineguard.config import CameraSettings
from lineguard.runtime.metrics import CAMERA_CONNECTED, CAMERA_RECONNECTS
from lineguard.services.capture.sources import CameraError, CameraSource, CapturedImage
from lineguard.services.capture.sources.gige import WIDE_FORMATS, Roi
from lineguard.v1.common_pb2 import Part

KEY = "gentl"
ENV = "GENICAM_GENTL64_PATH"
INSTALL_HINT = "install your camera vendor's SDK (it installs the .cti and sets GENICAM_GENTL64_PATH)"
SERIES = ("serial", "user_id", "model")
# Our selector field -> harvesters' DeviceInfo search key (GenTL's DEVICE_INFO_* names).
SEARCH_KEYS = {"serial": "serial_number", "user_id": "user_defined_name", "model": "model"}
EXECUTE = None  # a write of this value is a command node's execute()
Write = tuple[str, str | int | float | None]


class Settings(CameraSettings):
    kind: Literal["gentl"] = "gentl"
    cti: list[Path] | None = Field(
        None,
        min_length=1,
        description=f"the GenTL producer files (.cti); none = every .cti in the folders {ENV} lists",
    )
    serial: str | None = Field(None, min_length=1, description="the camera's serial number (DeviceSerialNumber)")
    user_id: str | None = Field(None, min_length=1, description="the camera's user-defined name (DeviceUserID)")
    model: str | None = Field(None, min_length=1, description="the camera's model name (the first found of it)")
    pixel_format: str = Field("Mono8", description="GenICam PixelFormat: Mono8/10/12/16, RGB8, BGR8, Bayer**8")
    exposure_us: float | None = Field(None, gt=0, description="ExposureTime in µs; none = as the camera is")
    gain: float | None = Field(None, ge=0, description="Gain (dB on most cameras); none = as the camera is")
    roi: Roi | None = Field(None, description="the sensor region read out; none = as the camera is")
    trigger: Literal["software", "hardware"] = Field("software", description="who starts each exposure")
    hardware_source: str | None = Field(None, description="with trigger: hardware, the TriggerSource line (Line0)")
    buffers: int = Field(8, ge=2, le=256, description="the producer's buffer pool")
    grab_timeout_ms: float = Field(1000.0, gt=0, description="how long a grab waits for its frame")
    reconnect_min_s: float = Field(0.5, gt=0, description="first wait before opening a lost camera again")
    reconnect_max_s: float = Field(10.0, gt=0, description="the longest wait between tries (doubling up to it)")
    encoding: Literal["png", "bmp", "jpeg"] = Field("png", description="how frames go on the bus")

    @field_validator("cti")
    @classmethod
    def _files_exist(cls, paths: list[Path] | None) -> list[Path] | None:
        missing = [str(p) for p in paths or () if not p.is_file()]
        if missing:
            raise ValueError(f"no GenTL producer file {', '.join(missing)}: {INSTALL_HINT}")
        return paths

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        given = [name for name in SERIES if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                f"a gentl camera is picked by exactly one of serial, user_id or model (got {given or 'none'})"
            )
        if self.pixel_format not in PIXEL_FORMATS:
            raise ValueError(f"pixel_format {self.pixel_format} is not one of {', '.join(PIXEL_FORMATS)}")
        if self.pixel_format in WIDE_FORMATS and self.encoding != "png":
            raise ValueError(f"pixel_format {self.pixel_format} has 16-bit pixels: only encoding png keeps them")
        if self.trigger == "software" and self.hardware_source:
            raise ValueError("hardware_source is for trigger: hardware")
        if self.trigger == "hardware" and not self.hardware_source:
            raise ValueError("trigger: hardware needs hardware_source (the line the sensor is wired to)")
        return self

    @property
    def search_key(self) -> dict[str, str]:
        return {SEARCH_KEYS[name]: getattr(self, name) for name in SERIES if getattr(self, name)}


def producer_files(settings: Settings, environ: dict[str, str] | None = None) -> tuple[list[Path], list[str]]:
    """The .cti files to load and the places looked at: the settings' files, else every .cti in the folders
    GENICAM_GENTL64_PATH lists (os.pathsep-separated, as GenTL specifies)."""
    if settings.cti:
        return list(settings.cti), [str(p) for p in settings.cti]
    env = (os.environ if environ is None else environ).get(ENV, "")
    folders = [Path(f) for f in env.split(os.pathsep) if f]
    found = sorted(p for folder in folders if folder.is_dir() for p in folder.glob("*.cti") if p.is_file())
    return found, [f"{ENV}={env!r}" if env else f"{ENV} (not set)"]


def node_writes(settings: Settings, exposure_us: float | None = None, gain: float | None = None) -> list[Write]:
    """The SFNC nodes written at open, in order, and their values (EXECUTE: a command). Offsets go to 0 before
    the size is set, so a smaller region's offset never lies outside the sensor's current width."""
    # Trigger off first: some cameras lock PixelFormat and the region while a trigger mode is on.
    writes: list[Write] = [("TriggerMode", "Off"), ("PixelFormat", settings.pixel_format)]
    if (roi := settings.roi) is not None:
        writes += [("OffsetX", 0), ("OffsetY", 0), ("Width", roi.width), ("Height", roi.height)]
        writes += [("OffsetX", roi.x), ("OffsetY", roi.y)]
    if exposure_us is not None:
        writes += [("ExposureAuto", "Off"), ("ExposureTime", float(exposure_us))]
    if gain is not None:
        writes += [("GainAuto", "Off"), ("Gain", float(gain))]
    source = "Software" if settings.trigger == "software" else settings.hardware_source
    writes += [("TriggerSelector", "FrameStart"), ("TriggerSource", source), ("TriggerMode", "On")]
    return writes


# Auto features a camera may lack: turning off what is not there is no error.
OPTIONAL_NODES = {"ExposureAuto", "GainAuto", "TriggerSelector"}


def genicam_errors() -> tuple[type[Exception], ...]:
    """What genicam raises for a node or a producer (its classes come with the optional package)."""
    from genicam import genapi, gentl  # type: ignore[import-untyped, import-not-found, unused-ignore]

    return (genapi.GenericException, gentl.GenericException)


def apply(node_map: Any, writes: Sequence[Write], errors: tuple[type[Exception], ...]) -> None:
    """Write each node; CameraError naming the node and value the camera lacks or refuses (`errors`)."""
    for name, value in writes:
        node = getattr(node_map, name, None)
        if node is None:
            if name in OPTIONAL_NODES:
                continue
            raise CameraError(f"the camera has no feature {name} (to set it to {value!r})")
        try:
            if value is EXECUTE:
                node.execute()
            else:
                node.value = value
        except errors as exc:
            raise CameraError(f"the camera refused {name} = {value!r}: {exc}") from None


def component_image(width: int, height: int, data_format: str, data: Any) -> np.ndarray:
    """A buffer component's pixels as an OpenCV image (grey, 16-bit grey or BGR), a copy the buffer can go back
    after; CameraError naming an unknown format or too few bytes."""
    if data_format not in PIXEL_FORMATS:
        raise CameraError(f"frame is in pixel format {data_format!r}, not one of {', '.join(PIXEL_FORMATS)}")
    dtype, depth, conversion = PIXEL_FORMATS[data_format]
    raw = np.ascontiguousarray(data)
    # harvesters gives 16-bit formats as uint16 already; a raw byte buffer is read as little-endian (PFNC's order).
    pixels = raw.reshape(-1).view(np.dtype(dtype).newbyteorder("<")) if raw.dtype != dtype else raw.reshape(-1)
    need = width * height * depth
    if pixels.size < need:
        raise CameraError(
            f"frame holds {raw.nbytes} bytes, {width}x{height} {data_format} needs {need * pixels.itemsize}"
        )
    image = pixels[:need].reshape((height, width, depth) if depth > 1 else (height, width)).astype(dtype, copy=True)
    return cv2.cvtColor(image, conversion) if conversion is not None else image


def open_camera(station_id: str, settings: Settings) -> CameraSource:
    return GentlSource(station_id, settings)


class NoProducer(CameraError):
    """No .cti to load: the vendor's SDK is not installed (or not where the settings say)."""


@dataclass
class Opened:
    harvester: Any
    acquirer: Any
    serial: str


class GentlSource:
    def __init__(self, station_id: str, settings: Settings):
        self.station = station_id
        self.settings = settings
        self.camera_id = f"gentl:{station_id}"
        selector = ", ".join(f"{k} {v}" for k, v in settings.search_key.items())
        self.label = f"camera {self.camera_id} ({selector})"
        self._lock = threading.Lock()
        self._opened: Opened | None = None
        self._connected_once = False
        self._problem = "not opened yet"
        self._attempt = 0
        self._next_try = 0.0
        self._exposure_us, self._gain = settings.exposure_us, settings.gain
        CAMERA_CONNECTED.labels(station_id, self.camera_id).set(0)
        self._files, self._looked = producer_files(settings)
        try:
            self._open()
        except ImportError:
            raise CameraError(f"{self.label}: harvesters is not installed: `pip install 'lineguard[gentl]'`") from None
        except NoProducer as exc:  # no retry mends a missing SDK
            raise CameraError(f"{self.label}: {exc}") from None
        except CameraError as exc:
            self._retry_later(str(exc))

    def grab(self, part: Part) -> CapturedImage:
        with self._lock:
            opened = self._opened
            if opened is None:
                if time.monotonic() < self._next_try:
                    raise CameraError(str(self.problem()))
                try:
                    opened = self._open()
                except CameraError as exc:
                    self._retry_later(str(exc))
                    raise CameraError(str(self.problem())) from None
            try:
                return self._grab(opened)
            except CameraError as exc:
                self._drop()
                self._retry_later(str(exc))
                raise CameraError(f"{self.label}: {exc}") from None

    def _grab(self, opened: Opened) -> CapturedImage:
        ia = opened.acquirer
        timeout_s = self.settings.grab_timeout_ms / 1000
        try:
            if self.settings.trigger == "software":
                while (stale := ia.try_fetch(timeout=0.001)) is not None:
                    stale.queue()  # an earlier trigger's late frame: not this part's
                ia.remote_device.node_map.TriggerSoftware.execute()
            with ia.fetch(timeout=timeout_s) as buffer:
                captured_ns = time.time_ns()
                component = buffer.payload.components[0]
                pixels = component_image(component.width, component.height, component.data_format, component.data)
                frame_id = buffer.frame_id
        except genicam_errors() as exc:  # timeout, device lost, I/O
            kind = type(exc).__name__
            raise CameraError(f"no frame within {self.settings.grab_timeout_ms:g} ms ({kind}: {exc})") from None
        return self._image(opened, pixels, captured_ns, frame_id)

    def _image(self, opened: Opened, pixels: np.ndarray, captured_ns: int, frame_id: int) -> CapturedImage:
        uri = f"gentl://{opened.serial}#frame={frame_id}"
        return CapturedImage.encoded(pixels, self.settings.encoding, uri, captured_ns)

    def problem(self) -> str | None:
        if self._opened is not None:
            return None
        wait = max(0.0, self._next_try - time.monotonic())
        return f"{self.label} disconnected: {self._problem}; opening it again at the next grab in {wait:.1f} s"

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _open(self) -> Opened:
        # The optional extra: only a box with this kind needs it.
        from harvesters.core import Harvester  # type: ignore[import-untyped, import-not-found, unused-ignore]

        failures: tuple[type[Exception], ...] = (*genicam_errors(), OSError)
        harvester = Harvester()
        try:
            for path in self._files:
                try:
                    harvester.add_file(str(path), check_existence=True, check_validity=True)
                except OSError as exc:  # not a shared library, or one built for another machine
                    raise NoProducer(f"the GenTL producer {path} does not load ({exc}): {INSTALL_HINT}") from None
            if not harvester.files:
                raise NoProducer(f"no GenTL producer (.cti) found at {', '.join(self._looked)}: {INSTALL_HINT}")
            harvester.update()
            try:
                acquirer = harvester.create(self.settings.search_key)
            except ValueError:
                seen = [info.property_dict for info in harvester.device_info_list]
                raise CameraError(f"no such camera among {seen or 'none'} (producers {self._files})") from None
            try:
                acquirer.num_buffers = self.settings.buffers
                writes = node_writes(self.settings, self._exposure_us, self._gain)
                apply(acquirer.remote_device.node_map, writes, genicam_errors())
                acquirer.start()
            except BaseException:
                acquirer.destroy()
                raise
        except CameraError:
            harvester.reset()
            raise
        except failures as exc:  # a producer that does not load, a device that does not open
            harvester.reset()
            raise CameraError(f"{type(exc).__name__}: {exc}") from None
        opened = Opened(harvester, acquirer, str(self.settings.search_key))
        self._opened, self._attempt, self._problem = opened, 0, ""
        CAMERA_CONNECTED.labels(self.station, self.camera_id).set(1)
        if self._connected_once:
            CAMERA_RECONNECTS.labels(self.station, self.camera_id).inc()
        self._connected_once = True
        return opened

    def _drop(self) -> None:
        opened, self._opened = self._opened, None
        CAMERA_CONNECTED.labels(self.station, self.camera_id).set(0)
        if opened is None:
            return
        # A device that is gone cannot stop: the harvester is reset all the same.
        with contextlib.suppress(*genicam_errors()):
            opened.acquirer.destroy()
        opened.harvester.reset()

    def _retry_later(self, reason: str) -> None:
        self._problem = reason
        wait = min(self.settings.reconnect_max_s, self.settings.reconnect_min_s * 2**self._attempt)
        self._attempt += 1
        self._next_try = time.monotonic() + wait
