"""The RTSP camera (`kind: rtsp`): an IP camera's H.264 / H.265 / MJPEG stream through OpenCV's FFMPEG backend,
read continuously, a trigger taking the newest frame after it, with a watchdog and reconnects (stream.py).

Credentials go in `username` and `password` / `password_file`, not in the URL's text; whatever the URL holds, its
password never appears in a message, a metric or a frame's source_uri."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

import cv2
from pydantic import Field, SecretStr, model_validator

from lineguard.services.capture.sources import CameraSource
from lineguard.services.capture.sources.stream import StreamCamera, StreamDown, StreamSettings

KEY = "rtsp"
DEFAULT_PORT = 554
# OpenCV's FFMPEG backend reads its options from this variable when a capture opens: set per open, under a lock.
FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_OPENING = threading.Lock()


class Settings(StreamSettings):
    kind: Literal["rtsp"] = "rtsp"
    url: str = Field(pattern=r"^rtsps?://[^/\s]+(/\S*)?$", description="the stream, rtsp://host[:port]/path")
    transport: Literal["tcp", "udp"] = Field(
        "tcp", description="RTP over the RTSP connection (tcp: no lost packets, no smeared frames) or over UDP"
    )
    username: str | None = Field(None, min_length=1, description="the camera's user, when it asks for one")
    password: SecretStr | None = Field(None, description="the user's password (better in password_file)")
    password_file: str | None = Field(None, description="a file whose content (one line) is the password")

    @model_validator(mode="after")
    def _credentials(self) -> Settings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("password and password_file: give one")
        if (self.password is not None or self.password_file is not None) and self.username is None:
            raise ValueError("a password needs a username")
        if urlsplit(self.url).password is not None and self.username is not None:
            raise ValueError("credentials in the url and in username: give them once (username / password_file)")
        return self


def open_camera(station_id: str, settings: Settings) -> CameraSource:
    return StreamCamera(station_id, KEY, settings, redacted(settings.url), lambda: open_stream(settings))


def redacted(url: str) -> str:
    """The URL as it may be shown: a password in it replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def connect_url(settings: Settings) -> str:
    """The URL to open: `url` with the username and password merged in (it holds the password: never log it)."""
    if settings.username is None:
        return settings.url
    password = settings.password.get_secret_value() if settings.password is not None else None
    if settings.password_file is not None:
        try:
            password = Path(settings.password_file).expanduser().read_text().rstrip("\r\n")
        except OSError as exc:
            raise StreamDown(f"password_file {settings.password_file}: {exc.strerror}") from None
    parts = urlsplit(settings.url)
    userinfo = quote(settings.username, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


def open_stream(settings: Settings) -> cv2.VideoCapture:
    """The stream opened through FFMPEG; StreamDown naming why when it cannot be."""
    parts = urlsplit(settings.url)
    host, port = parts.hostname or "", parts.port or DEFAULT_PORT
    timeout_s = settings.open_timeout_ms / 1000
    # OpenCV says only that it failed: the server's port is tried first, so the station says which it is.
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except TimeoutError:
        raise StreamDown(f"no answer from {host}:{port} within {settings.open_timeout_ms:g} ms") from None
    except OSError as exc:
        raise StreamDown(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    url = connect_url(settings)
    with _OPENING:
        before = os.environ.get(FFMPEG_OPTIONS)
        os.environ[FFMPEG_OPTIONS] = f"rtsp_transport;{settings.transport}"
        try:
            capture = cv2.VideoCapture(
                url,
                cv2.CAP_FFMPEG,
                [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                    int(settings.open_timeout_ms),
                    # A read waits this long for a frame before it gives up, so a stalled stream ends its read.
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                    int(settings.stall_ms),
                ],
            )
        finally:
            if before is None:
                os.environ.pop(FFMPEG_OPTIONS, None)
            else:
                os.environ[FFMPEG_OPTIONS] = before
    if not capture.isOpened():
        capture.release()
        raise StreamDown(
            f"{host}:{port} answers but the stream {redacted(settings.url)} did not open within "
            f"{settings.open_timeout_ms:g} ms (a wrong path or credentials, or no stream FFMPEG can read)"
        )
    return capture
