"""GigE Vision / GenICam cameras through Aravis 0.8 (Debian's `gir1.2-aravis-0.8`, reached through PyGObject):
what is on the network, a camera opened by serial, user id or IP address, its GenICam features, the settings
a station asks for checked against what the camera has, and a stream buffer turned into pixels.

`lineguard camera` and capture's `gige` kind both use it. `gi` is imported on first use only, so a box that
has no GigE camera never needs PyGObject or Aravis."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import cv2
import numpy as np

INSTALL_HINT = (
    "install Debian's gir1.2-aravis-0.8 (and aravis-tools for the fake camera) and PyGObject: "
    "`pip install 'lineguard[gige]'` in a virtual environment, which builds against libgirepository1.0-dev, "
    "libcairo2-dev and pkg-config, or Debian's python3-gi for the system Python"
)
GIGE_PROTOCOL = "GigEVision"
# The GigE Vision bootstrap register of the user-defined name (DeviceUserID), 16 bytes: every device has it,
# whether or not its GenICam file declares DeviceUserID.
USER_NAME_ADDRESS = 0xE8
USER_NAME_SIZE = 16

# GenICam pixel format -> how its bytes become an OpenCV image: (dtype, channels, colour conversion).
# OpenCV names Bayer patterns by their second row; its *RGGB-style aliases name them as GenICam does.
PIXEL_FORMATS: dict[str, tuple[type[np.generic], int, int | None]] = {
    "Mono8": (np.uint8, 1, None),
    "Mono10": (np.uint16, 1, None),
    "Mono12": (np.uint16, 1, None),
    "Mono16": (np.uint16, 1, None),
    "RGB8": (np.uint8, 3, cv2.COLOR_RGB2BGR),
    "BGR8": (np.uint8, 3, None),
    "BayerRG8": (np.uint8, 1, cv2.COLOR_BayerRGGB2BGR),
    "BayerGR8": (np.uint8, 1, cv2.COLOR_BayerGRBG2BGR),
    "BayerBG8": (np.uint8, 1, cv2.COLOR_BayerBGGR2BGR),
    "BayerGB8": (np.uint8, 1, cv2.COLOR_BayerGBRG2BGR),
}
# The PFNC codes buffers carry, for the same names (Aravis.PIXEL_FORMAT_*).
PIXEL_FORMAT_CODES = {
    0x01080001: "Mono8",
    0x01100003: "Mono10",
    0x01100005: "Mono12",
    0x01100007: "Mono16",
    0x02180014: "RGB8",
    0x02180015: "BGR8",
    0x01080009: "BayerRG8",
    0x01080008: "BayerGR8",
    0x0108000B: "BayerBG8",
    0x0108000A: "BayerGB8",
}


class AravisUnavailable(RuntimeError):
    """Aravis or PyGObject is not installed; the message says what to install."""


class CameraNotFound(LookupError):
    """No camera answers to the selector; the message lists what is on the network."""


class FeatureError(ValueError):
    """The camera lacks a feature (or a value of one) the settings ask for; the message names it."""


class GrabError(RuntimeError):
    """A frame could not be had from the stream (timeout, incomplete, another pixel format)."""


_aravis: ModuleType | None = None


def aravis() -> ModuleType:
    """The Aravis 0.8 module (gi.repository.Aravis); AravisUnavailable naming what to install without it."""
    global _aravis
    if _aravis is None:
        try:
            import gi

            gi.require_version("Aravis", "0.8")
            from gi.repository import Aravis
        except (ImportError, ValueError) as exc:
            raise AravisUnavailable(
                f"GigE Vision cameras need Aravis 0.8 and PyGObject ({exc}): {INSTALL_HINT}"
            ) from None
        _aravis = Aravis
    return _aravis


def glib_error() -> Any:
    """The exception class Aravis calls raise (GLib.Error, whose `message` says what went wrong)."""
    aravis()
    from gi.repository import GLib

    return GLib.Error


@dataclass(frozen=True)
class Selector:
    """Which camera: by its serial number, its user-defined name (DeviceUserID) or its IP address."""

    serial: str | None = None
    user_id: str | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.serial, self.user_id, self.address) if v]
        if len(given) != 1:
            raise ValueError("a camera is picked by exactly one of serial, user_id or address")

    def __str__(self) -> str:
        if self.serial:
            return f"serial {self.serial!r}"
        if self.user_id:
            return f"user id {self.user_id!r}"
        return f"address {self.address}"

    @classmethod
    def parse(cls, text: str) -> Selector:
        """`serial=X`, `user_id=X`, `address=X`; a bare IPv4 address is an address, anything else a serial."""
        key, sep, value = text.partition("=")
        if sep:
            if key not in ("serial", "user_id", "address"):
                raise ValueError(f"camera {text!r}: pick it by serial=, user_id= or address=")
            return cls(**{key: value})
        parts = text.split(".")
        if len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts):
            return cls(address=text)
        return cls(serial=text)


@dataclass(frozen=True)
class DeviceInfo:
    """A camera that answered discovery."""

    device_id: str  # Aravis's id: vendor-model-serial
    vendor: str
    model: str
    serial: str
    address: str
    mac: str
    user_id: str = ""


def discover() -> list[DeviceInfo]:
    """The GigE Vision cameras that answer a discovery broadcast on every interface (loopback too)."""
    arv = aravis()
    arv.update_device_list()
    found = []
    for i in range(arv.get_n_devices()):
        if arv.get_device_protocol(i) != GIGE_PROTOCOL:
            continue
        found.append(
            DeviceInfo(
                device_id=arv.get_device_id(i),
                vendor=arv.get_device_vendor(i) or "",
                model=arv.get_device_model(i) or "",
                serial=arv.get_device_serial_nbr(i) or "",
                address=arv.get_device_address(i) or "",
                mac=arv.get_device_physical_id(i) or "",
            )
        )
    return sorted(found, key=lambda d: d.device_id)


def with_user_ids(devices: list[DeviceInfo]) -> list[DeviceInfo]:
    """The devices with their user-defined names, read from each camera (Aravis's discovery does not hand
    them out); a camera that does not open keeps an empty one."""
    named = []
    for device in devices:
        try:
            camera = aravis().Camera.new(device.address)
            named.append(DeviceInfo(**{**device.__dict__, "user_id": read_user_id(camera)}))
        except glib_error():
            named.append(device)
    return named


def open_camera(selector: Selector) -> Any:
    """The Aravis.Camera `selector` names; CameraNotFound listing what is on the network when none does."""
    arv = aravis()
    error = glib_error()
    if selector.address:
        try:
            camera = arv.Camera.new(selector.address)
        except error as exc:
            raise CameraNotFound(f"no GigE Vision camera answers at {selector.address}: {exc.message}") from None
        return camera
    devices = discover()
    if selector.serial:
        matches = [d for d in devices if d.serial == selector.serial]
    else:
        matches = [d for d in with_user_ids(devices) if d.user_id == selector.user_id]
    if not matches:
        seen = ", ".join(f"{d.device_id} at {d.address}" for d in devices) or "no camera answered discovery"
        raise CameraNotFound(f"no GigE Vision camera with {selector} on the network (found: {seen})")
    if len(matches) > 1:
        raise CameraNotFound(f"{len(matches)} cameras have {selector}: {', '.join(d.address for d in matches)}")
    try:
        camera = arv.Camera.new(matches[0].address)
    except error as exc:
        raise CameraNotFound(f"camera with {selector} at {matches[0].address} does not open: {exc.message}") from None
    return camera


def read_user_id(camera: Any) -> str:
    device = camera.get_device()
    raw = b"".join(struct.pack(">I", device.read_register(USER_NAME_ADDRESS + 4 * i)) for i in range(4))
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def write_user_id(camera: Any, user_id: str) -> None:
    """Set the camera's user-defined name (up to 15 ASCII characters), as a camera vendor's tool does."""
    raw = user_id.encode("ascii")
    if len(raw) >= USER_NAME_SIZE:
        raise ValueError(f"a user id has at most {USER_NAME_SIZE - 1} characters: {user_id!r}")
    raw = raw.ljust(USER_NAME_SIZE, b"\0")
    device = camera.get_device()
    for i in range(4):
        device.write_register(USER_NAME_ADDRESS + 4 * i, struct.unpack(">I", raw[4 * i : 4 * i + 4])[0])


@dataclass(frozen=True)
class Feature:
    """One GenICam feature as the camera reports it now."""

    name: str
    category: str
    type: str  # Integer, Float, Enumeration, Boolean, String, Command, ...
    access: str  # RO, RW, WO
    value: str
    description: str = ""
    choices: tuple[str, ...] = ()


def features(camera: Any) -> list[Feature]:
    """Every feature under the GenICam Root category, in the camera's own order."""
    arv = aravis()
    error = glib_error()
    genicam = camera.get_device().get_genicam()
    found: list[Feature] = []

    def walk(name: str, category: str) -> None:
        node = genicam.get_node(name)
        if node is None:
            return
        if isinstance(node, arv.GcCategory):
            for child in node.get_features() or []:
                walk(child, name)
            return
        if not node.is_implemented() or not node.is_available():
            return
        kind = type(node).__name__.removeprefix("Gc").removesuffix("Node")
        if isinstance(node, arv.GcCommand):
            value = ""
        else:
            try:
                value = node.get_value_as_string()
            except error as exc:
                value = f"<unreadable: {exc.message}>"
        choices: tuple[str, ...] = ()
        if isinstance(node, arv.GcEnumeration):
            choices = tuple(camera.dup_available_enumerations_as_strings(name) or ())
        access = node.get_actual_access_mode().value_nick.upper()
        found.append(Feature(name, category, kind, access, value, node.get_description() or "", choices))

    walk("Root", "")
    return found


@dataclass(frozen=True)
class Region:
    x: int
    y: int
    width: int
    height: int


def configure(
    camera: Any,
    *,
    pixel_format: str,
    exposure_us: float | None = None,
    gain: float | None = None,
    region: Region | None = None,
    trigger_source: str | None = None,
    extra: dict[str, str | int | float | bool] | None = None,
) -> None:
    """Set what a station asks for, each checked against what the camera has first: FeatureError naming the
    feature (or value) the camera lacks. `trigger_source` None is free run; "Software" or a line is triggered."""
    error = glib_error()
    model = f"{camera.get_vendor_name()} {camera.get_model_name()}"
    if pixel_format not in PIXEL_FORMATS:
        raise FeatureError(f"pixel format {pixel_format!r} is not one capture decodes ({', '.join(PIXEL_FORMATS)})")
    available = list(camera.dup_available_pixel_formats_as_strings() or [])
    if pixel_format not in available:
        raise FeatureError(f"the {model} has no pixel format {pixel_format!r} (it has: {', '.join(available)})")
    try:
        camera.set_pixel_format_from_string(pixel_format)
        if region is not None:
            _check_region(camera, model, region)
            camera.set_region(region.x, region.y, region.width, region.height)
        _exposure_and_gain(camera, model, exposure_us, gain)
        if trigger_source is None:
            camera.clear_triggers()
            camera.set_acquisition_mode(aravis().AcquisitionMode.CONTINUOUS)
        else:
            sources = list(camera.dup_available_trigger_sources() or [])
            if trigger_source not in sources:
                raise FeatureError(
                    f"the {model} has no TriggerSource {trigger_source!r} (it has: {', '.join(sources)})"
                )
            # FrameStart triggered by the source, in continuous acquisition (Aravis's set_trigger).
            camera.set_trigger(trigger_source)
        for name, value in (extra or {}).items():
            set_feature(camera, name, value)
    except error as exc:
        raise FeatureError(f"the {model} refused a setting: {exc.message}") from None


def set_exposure_and_gain(camera: Any, *, exposure_us: float | None, gain: float | None) -> None:
    """Exposure and gain on an open, streaming camera (a recipe's, between parts), each checked against what the
    camera has first: FeatureError naming the feature or value it lacks. None leaves a setting as it is."""
    try:
        _exposure_and_gain(camera, f"{camera.get_vendor_name()} {camera.get_model_name()}", exposure_us, gain)
    except glib_error() as exc:
        raise FeatureError(f"the camera refused a setting: {exc.message}") from None


def _exposure_and_gain(camera: Any, model: str, exposure_us: float | None, gain: float | None) -> None:
    if exposure_us is not None:
        if not camera.is_exposure_time_available():
            raise FeatureError(f"the {model} has no ExposureTime feature (exposure_us)")
        low, high = camera.get_exposure_time_bounds()
        if not low <= exposure_us <= high:
            raise FeatureError(f"the {model} takes ExposureTime {low:g} to {high:g} µs, not {exposure_us:g}")
        camera.set_exposure_time(exposure_us)
    if gain is not None:
        if not camera.is_gain_available():
            raise FeatureError(f"the {model} has no Gain feature (gain)")
        low, high = camera.get_gain_bounds()
        if not low <= gain <= high:
            raise FeatureError(f"the {model} takes Gain {low:g} to {high:g}, not {gain:g}")
        camera.set_gain(gain)


def _check_region(camera: Any, model: str, region: Region) -> None:
    for name, value, bounds in (
        ("Width", region.width, camera.get_width_bounds()),
        ("Height", region.height, camera.get_height_bounds()),
    ):
        if not bounds[0] <= value <= bounds[1]:
            raise FeatureError(f"the {model} takes {name} {bounds[0]} to {bounds[1]}, not {value} (roi)")
    if (region.x or region.y) and not camera.is_region_offset_available():
        raise FeatureError(f"the {model} has no OffsetX / OffsetY (roi x, y)")
    sensor = camera.get_sensor_size()
    if region.x + region.width > sensor[0] or region.y + region.height > sensor[1]:
        raise FeatureError(
            f"roi {region.x},{region.y} {region.width}x{region.height} lies outside the {model}'s "
            f"{sensor[0]}x{sensor[1]} sensor"
        )


def set_feature(camera: Any, name: str, value: str | int | float | bool) -> None:
    """One GenICam feature by name; FeatureError naming it when the camera has no such feature."""
    if not camera.is_feature_available(name):
        raise FeatureError(f"the {camera.get_vendor_name()} {camera.get_model_name()} has no feature {name!r}")
    if isinstance(value, bool):
        camera.set_boolean(name, value)
    elif isinstance(value, int):
        camera.set_integer(name, value)
    elif isinstance(value, float):
        camera.set_float(name, value)
    else:
        camera.set_string(name, value)


def buffer_image(buffer: Any, expected_format: str) -> np.ndarray:
    """The pixels of a completed buffer as an OpenCV image (BGR or grey), copied out of the buffer so it can go
    back to the stream at once; GrabError when the buffer holds another pixel format or too few bytes."""
    code = buffer.get_image_pixel_format()
    found = PIXEL_FORMAT_CODES.get(code, f"0x{code:08x}")
    if found != expected_format:
        raise GrabError(f"frame is in pixel format {found}, not the {expected_format} the camera was set to")
    dtype, channels, conversion = PIXEL_FORMATS[expected_format]
    width, height = buffer.get_image_width(), buffer.get_image_height()
    data = buffer.get_image_data()  # a copy (bytes)
    pixels = np.frombuffer(data, dtype)
    need = width * height * channels
    if pixels.size < need:
        raise GrabError(
            f"frame holds {len(data)} bytes, {width}x{height} {expected_format} needs {need * pixels.itemsize}"
        )
    image = pixels[:need].reshape((height, width, channels) if channels > 1 else (height, width))
    return cv2.cvtColor(image, conversion) if conversion is not None else image


STREAM_COUNTERS = (
    "n_completed_buffers",
    "n_failures",
    "n_underruns",
    "n_timeouts",
    "n_missing_frames",
    "n_received_packets",
    "n_missing_packets",
    "n_error_packets",
    "n_resend_requests",
    "n_resent_packets",
    "n_duplicated_packets",
)


def stream_counters(stream: Any) -> dict[str, int]:
    """The stream's running totals (packets received, missing, resent, ...), by Aravis's names less `n_`."""
    names = {stream.get_info_name(i): i for i in range(stream.get_n_infos())}
    return {
        name.removeprefix("n_"): int(stream.get_info_uint64(names[name])) for name in STREAM_COUNTERS if name in names
    }
