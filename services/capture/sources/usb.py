"""The USB camera (`kind: usb`): a UVC camera through OpenCV's V4L2 backend, read continuously, a trigger taking the
newest frame after it, with a watchdog and reconnects (stream.py): unplugged, it is opened again when it is back.

Name the device by its stable path (/dev/v4l/by-id/usb-...-video-index0): /dev/videoN can change between boots. The
format asked for (fourcc, width, height, fps) is read back once opened; a camera that gives another is a
configuration error naming both, not frames of the wrong size."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
from pydantic import Field

from lineguard.services.capture.sources import CameraSource
from lineguard.services.capture.sources.stream import StreamCamera, StreamDown, StreamMismatch, StreamSettings

KEY = "usb"


class Settings(StreamSettings):
    kind: Literal["usb"] = "usb"
    device: str = Field(pattern=r"^/dev/\S+$", description="the V4L2 device, best by id: /dev/v4l/by-id/...")
    fourcc: str | None = Field(
        None, pattern=r"^[A-Z0-9]{4}$", description="the camera's pixel format (MJPG, YUYV, ...); none = as it is"
    )
    width: int | None = Field(None, gt=0, description="frame width; none = as the camera is")
    height: int | None = Field(None, gt=0, description="frame height; none = as the camera is")
    fps: float | None = Field(None, gt=0, description="frames per second; none = as the camera is")


def open_camera(station_id: str, settings: Settings) -> CameraSource:
    return StreamCamera(station_id, KEY, settings, f"v4l2://{settings.device}", lambda: open_device(settings))


def open_device(settings: Settings) -> cv2.VideoCapture:
    """The device opened and set to the format asked; StreamDown (StreamMismatch) naming why when it cannot be."""
    try:
        return _open(settings)
    except cv2.error as exc:  # OpenCV's own failure (a driver's refusal): the device, not the settings
        raise StreamDown(f"{settings.device}: {exc.err or exc}") from None


def _open(settings: Settings) -> cv2.VideoCapture:
    device = settings.device
    if not Path(device).exists():
        raise StreamDown(f"no device {device} (unplugged, or another path: see /dev/v4l/by-id)")
    capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
    if not capture.isOpened():
        capture.release()
        raise StreamDown(f"{device} did not open (not a video capture device, in use, or no permission)")
    asked: dict[str, tuple[int, float]] = {}
    if settings.fourcc:
        asked["fourcc"] = (cv2.CAP_PROP_FOURCC, float(cv2.VideoWriter.fourcc(*settings.fourcc)))
    for name, prop, value in (
        ("width", cv2.CAP_PROP_FRAME_WIDTH, settings.width),
        ("height", cv2.CAP_PROP_FRAME_HEIGHT, settings.height),
        ("fps", cv2.CAP_PROP_FPS, settings.fps),
    ):
        if value is not None:
            asked[name] = (prop, float(value))
    for prop, value in asked.values():
        capture.set(prop, value)
    # V4L2's own read waits seconds for a frame: bounded by stall_ms where the backend takes it.
    capture.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, settings.stall_ms)
    wrong = [
        f"{name} {_shown(name, capture.get(prop))} (asked {_shown(name, value)})"
        for name, (prop, value) in asked.items()
        if abs(capture.get(prop) - value) > (0.5 if name == "fps" else 0)
    ]
    if wrong:
        capture.release()
        raise StreamMismatch(f"{device} gives {', '.join(wrong)}: see `v4l2-ctl -d {device} --list-formats-ext`")
    return capture


def _shown(name: str, value: float) -> str:
    if name == "fourcc":
        code = int(value)
        return "".join(chr((code >> 8 * i) & 0xFF) for i in range(4))
    return f"{value:g}"
