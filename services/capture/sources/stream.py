"""What the streaming cameras (`rtsp`, `usb`) share: OpenCV's capture read on a thread of its own that keeps only
the newest frame, a watchdog that notices a stream with no frame for `stall_ms`, and opening it again with backoff
(stamina).

A trigger takes the newest frame that arrived after it (`settle_ms` after it, for the stream's latency), waiting up
to `grab_timeout_ms`: never one from before it, so never a stale frame from a buffer or from before a stall. While
the stream is down or stalled a grab fails at once naming the cause, the station's health says so (capture's
heartbeat DEGRADED) and the PLC gets a FAIL; the watchdog's losses are counted by cause
(`lineguard_camera_stream_lost_total`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import stamina
import structlog
from pydantic import Field, model_validator

from lineguard.config import CameraSettings
from lineguard.runtime.metrics import CAMERA_CONNECTED, CAMERA_FRAMES, CAMERA_RECONNECTS, CAMERA_STREAM_LOST
from lineguard.services.capture.sources import CameraError, CapturedImage
from lineguard.v1.common_pb2 import Part

log = structlog.get_logger("lineguard.capture.stream")


class StreamSettings(CameraSettings):
    """What the streaming kinds share (not a kind itself: rtsp.py and usb.py add theirs)."""

    stall_ms: float = Field(
        2000.0, gt=0, description="no frame this long: the stream is stalled (reported, grabs refused, opened again)"
    )
    open_timeout_ms: float = Field(5000.0, gt=0, description="how long opening the stream may take")
    grab_timeout_ms: float = Field(
        500.0, gt=0, description="how long a trigger waits for a frame that arrived after it"
    )
    settle_ms: float = Field(
        0.0, ge=0, description="a trigger's frame arrives at least this long after it (the stream's own latency)"
    )
    reconnect_min_s: float = Field(0.5, gt=0, description="first wait before opening a lost stream again")
    reconnect_max_s: float = Field(10.0, gt=0, description="the longest wait between tries (doubling up to it)")
    encoding: Literal["jpeg", "png", "bmp"] = Field("jpeg", description="how frames go on the bus")

    @model_validator(mode="after")
    def _backoff(self) -> StreamSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s is shorter than reconnect_min_s")
        return self


class StreamDown(RuntimeError):
    """The stream cannot be opened now (the camera away, refusing, not answering); the message says why."""


class StreamMismatch(StreamDown):
    """The stream opened but is not what the settings ask (resolution, pixel format): a configuration error."""


# Opens the stream (raises StreamDown naming why); the reader thread calls it, again after each loss.
Opener = Callable[[], cv2.VideoCapture]


@dataclass(frozen=True)
class Latest:
    pixels: np.ndarray
    arrived_ns: int
    index: int  # frames read since the stream was opened


class StreamCamera:
    """A camera read as a continuous stream through OpenCV; see the module's docstring."""

    def __init__(self, station_id: str, kind: str, settings: StreamSettings, target: str, opener: Opener):
        self.station = station_id
        self.settings = settings
        self.camera_id = f"{kind}:{station_id}"
        self.label = f"camera {self.camera_id} ({target})"
        self.uri = target
        self._opener = opener
        self._cond = threading.Condition()
        self._latest: Latest | None = None
        self._down: str | None = "not opened yet"  # why it is not connected; None while it is
        self._stalled = False
        self._since_ns = 0  # when it was last opened or last gave a frame
        self._attempt = 0
        self._opened_once = False
        self._stop = threading.Event()
        self._connected = CAMERA_CONNECTED.labels(station_id, self.camera_id)
        self._frames = CAMERA_FRAMES.labels(station_id, self.camera_id, "completed")
        self._connected.set(0)
        try:
            capture: cv2.VideoCapture | None = self._open()
        except StreamMismatch as exc:
            # The settings ask what the camera does not give: no retry mends that.
            raise CameraError(f"{self.label}: {exc}") from None
        except StreamDown:
            capture = None  # the reader opens it again with backoff; meanwhile the station says why
        self._reader = threading.Thread(
            target=self._read_forever, args=(capture,), name=f"{kind}-read-{station_id}", daemon=True
        )
        self._watchdog = threading.Thread(target=self._watch, name=f"{kind}-watchdog-{station_id}", daemon=True)
        self._reader.start()
        self._watchdog.start()

    # --- what capture calls

    def grab(self, part: Part) -> CapturedImage:
        wanted_ns = (part.triggered_unix_ns or time.time_ns()) + int(self.settings.settle_ms * 1e6)
        timeout_s = self.settings.grab_timeout_ms / 1000
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if (problem := self._problem()) is not None:
                    raise CameraError(problem)
                latest = self._latest
                if latest is not None and latest.arrived_ns >= wanted_ns:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CameraError(
                        f"{self.label}: no frame within {self.settings.grab_timeout_ms:g} ms after the trigger"
                    )
                self._cond.wait(left)
        uri = f"{self.uri}#frame={latest.index}"
        return CapturedImage.encoded(latest.pixels, self.settings.encoding, uri, latest.arrived_ns)

    def problem(self) -> str | None:
        with self._cond:
            return self._problem()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._watchdog.join(timeout=5)
        # A read returns within stall_ms (the backends' read timeout); a reader asleep in its backoff is a daemon
        # that finds the stop when it wakes and opens nothing.
        self._reader.join(timeout=self.settings.stall_ms / 1000 + 1)

    # --- state, under self._cond

    def _problem(self) -> str | None:
        if self._down is not None:
            return f"{self.label} disconnected: {self._down}; opening it again (attempt {self._attempt + 1})"
        if self._stalled:
            silent_ms = (time.time_ns() - self._since_ns) / 1e6
            return (
                f"{self.label} stalled: no frame for {silent_ms:.0f} ms (stall_ms={self.settings.stall_ms:g}); "
                "opening it again"
            )
        return None

    def _up(self) -> None:
        with self._cond:
            self._down, self._stalled, self._since_ns = None, False, time.time_ns()
            self._attempt = 0
        self._connected.set(1)
        if self._opened_once:
            CAMERA_RECONNECTS.labels(self.station, self.camera_id).inc()
        self._opened_once = True

    def _lost(self, cause: str, reason: str) -> None:
        with self._cond:
            counted = self._stalled  # a stall was counted when the watchdog saw it
            self._down, self._latest, self._stalled = reason, None, False
            self._cond.notify_all()
        self._connected.set(0)
        if not counted:
            CAMERA_STREAM_LOST.labels(self.station, self.camera_id, cause).inc()
        log.warning("camera stream lost", camera=self.camera_id, cause=cause, reason=reason)

    # --- the reader thread: open, read until lost, open again

    def _open(self) -> cv2.VideoCapture:
        try:
            capture = self._opener()
        except StreamDown as exc:
            self._lost("open_failed", str(exc))
            raise
        self._up()
        return capture

    def _read_forever(self, capture: cv2.VideoCapture | None) -> None:
        if capture is None and self._stop.wait(self.settings.reconnect_min_s):
            return  # the first open failed: tried again after the backoff's first wait
        while not self._stop.is_set():
            if capture is None and (capture := self._reopen()) is None:
                return
            self._read(capture)
            capture = None

    def _reopen(self) -> cv2.VideoCapture | None:
        """The stream opened again: at once, then with backoff doubling up to reconnect_max_s; None when stopping."""
        s = self.settings
        for attempt in stamina.retry_context(
            on=StreamDown,
            attempts=None,
            timeout=None,
            wait_initial=s.reconnect_min_s,
            wait_max=s.reconnect_max_s,
            wait_jitter=s.reconnect_min_s / 4,
        ):
            with attempt:
                self._attempt = attempt.num
                if self._stop.is_set():
                    return None
                capture = self._open()
                if self._stop.is_set():
                    capture.release()
                    return None
                return capture
        return None

    def _read(self, capture: cv2.VideoCapture) -> None:
        index = 0
        stall_s = self.settings.stall_ms / 1000
        stalled = False
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                ok, pixels = capture.read()
                if not ok:
                    break
                # A read the backend gave up waiting on can still hand back a frame (FFMPEG flushes its decoder:
                # an old picture): not one of now. The stream is stalled; it is opened again.
                if index and time.monotonic() - started >= stall_s:
                    stalled = True
                    break
                index += 1
                with self._cond:
                    if self._stalled:
                        log.info("camera stream flows again", camera=self.camera_id)
                    self._latest = Latest(pixels, time.time_ns(), index)
                    self._since_ns, self._stalled = self._latest.arrived_ns, False
                    self._cond.notify_all()
                self._connected.set(1)
                self._frames.inc()
        finally:
            capture.release()
        if not self._stop.is_set():
            with self._cond:
                stalled = stalled or self._stalled
            if stalled:
                self._lost("stalled", f"no frame for {self.settings.stall_ms:g} ms (stalled)")
            else:
                self._lost("ended", "the stream ended (the camera closed it or stopped sending)")

    # --- the watchdog thread

    def _watch(self) -> None:
        period_s = min(self.settings.stall_ms / 4000, 0.25)
        while not self._stop.wait(period_s):
            with self._cond:
                silent_ns = time.time_ns() - self._since_ns
                if self._down is not None or self._stalled or silent_ns < self.settings.stall_ms * 1e6:
                    continue
                # No frame for stall_ms while connected: grabs are refused from now (the newest frame is dropped,
                # so none from before the stall is ever given) until frames come again or the stream is reopened.
                self._stalled, self._latest = True, None
                self._cond.notify_all()
            self._connected.set(0)
            CAMERA_STREAM_LOST.labels(self.station, self.camera_id, "stalled").inc()
            log.warning("camera stream stalled", camera=self.camera_id, stall_ms=self.settings.stall_ms)
