"""The GigE Vision camera (`kind: gige`): a GenICam camera through Aravis, picked by serial, user id or IP
address, set up once at open (pixel format, exposure, gain, ROI, trigger, any other feature by name), streaming
into a pool of buffers the camera fills and capture hands back at once.

Two ways a frame belongs to a part:
- `trigger: software` (the default): each PLC trigger is a TriggerSoftware command and the next frame is its
  frame; frames already waiting are handed back first, so a grab never returns an older part's image.
- `trigger: hardware`: the camera is triggered by a line (`hardware_source`, wired to the same sensor as the
  PLC) or free-runs (no `hardware_source`); frames are read as they come and each PLC trigger takes the
  earliest frame not yet taken that arrived between `match_lead_ms` before and `match_window_ms` after the
  trigger's time (Part.triggered_unix_ns; host and gateway clocks agree through NTP). A frame stays in its
  Aravis buffer until a trigger takes it (then its pixels are copied out, once) or a quarter of the pool is held
  (then the oldest goes back; with a trigger line it is copied out first, since every frame there is some
  part's).

A camera that goes away (unplugged, powered off) is opened again with backoff by a watcher thread; meanwhile a
grab fails at once with a CameraError naming the camera and why, the station's health says so, and the PLC
gets a FAIL. A camera that lacks a feature the settings ask for is a clear error at open."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lineguard.cameras.aravis import (
    AravisUnavailable,
    CameraNotFound,
    FeatureError,
    GrabError,
    Region,
    Selector,
    aravis,
    buffer_image,
    configure,
    glib_error,
    set_exposure_and_gain,
    stream_counters,
)
from lineguard.cameras.aravis import (
    open_camera as open_aravis_camera,
)
from lineguard.config import CameraSettings
from lineguard.config.model import ProductCamera
from lineguard.runtime.metrics import CAMERA_CONNECTED, CAMERA_FRAMES, CAMERA_PACKETS, CAMERA_RECONNECTS
from lineguard.services.capture.sources import CameraError, CameraSource, CapturedImage
from lineguard.v1.common_pb2 import Part

KEY = "gige"
WIDE_FORMATS = ("Mono10", "Mono12", "Mono16")  # 16-bit pixels: only PNG keeps them
# Stream counters -> (metric, outcome label).
PACKET_OUTCOMES = {
    "received_packets": "received",
    "missing_packets": "missing",
    "resent_packets": "resent",
    "resend_requests": "resend_requests",
    "error_packets": "error",
    "duplicated_packets": "duplicated",
}
FRAME_OUTCOMES = {
    "completed_buffers": "completed",
    "failures": "failures",
    "underruns": "underruns",
    "timeouts": "timeouts",
    "missing_frames": "missing",
}
WATCH_INTERVAL_S = 1.0
# Reading the stream's counters takes some 30 Aravis calls: a grab adds them to the metrics at most this often
# (a failed grab at once; the watcher every WATCH_INTERVAL_S besides).
COUNT_EVERY_S = 0.5
CONTROL_MARGIN_S = 0.25  # on top of grab_timeout_ms, for the trigger command's round trip


class Roi(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: int = Field(0, ge=0)
    y: int = Field(0, ge=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class Settings(CameraSettings):
    kind: Literal["gige"] = "gige"
    serial: str | None = Field(None, min_length=1, description="the camera's serial number (DeviceSerialNumber)")
    user_id: str | None = Field(None, min_length=1, description="the camera's user-defined name (DeviceUserID)")
    address: str | None = Field(
        None, pattern=r"^\d{1,3}(\.\d{1,3}){3}$", description="the camera's IPv4 address (no discovery needed)"
    )
    pixel_format: str = Field("Mono8", description="GenICam PixelFormat: Mono8/10/12/16, RGB8, BGR8, Bayer**8")
    exposure_us: float | None = Field(None, gt=0, description="ExposureTime in µs; none = as the camera is")
    gain: float | None = Field(None, ge=0, description="Gain (dB on most cameras); none = as the camera is")
    roi: Roi | None = Field(None, description="the sensor region read out; none = as the camera is")
    trigger: Literal["software", "hardware"] = Field("software", description="who starts each exposure")
    hardware_source: str | None = Field(
        None, description="with trigger: hardware, the TriggerSource line (Line0, ...); none = free run"
    )
    match_window_ms: float = Field(100.0, gt=0, description="hardware: a frame may arrive this long after the trigger")
    match_lead_ms: float = Field(20.0, ge=0, description="hardware: ... or this long before it (the PLC's latency)")
    buffers: int = Field(8, ge=2, le=256, description="the stream's buffer pool")
    grab_timeout_ms: float = Field(1000.0, gt=0, description="software: how long a grab waits for its frame")
    reconnect_min_s: float = Field(0.5, gt=0, description="first wait before opening a lost camera again")
    reconnect_max_s: float = Field(10.0, gt=0, description="the longest wait between tries (doubling up to it)")
    packet_resend: bool = Field(True, description="ask the camera to resend lost stream packets")
    encoding: Literal["png", "bmp", "jpeg"] = Field("png", description="how frames go on the bus")
    features: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="other GenICam features set at open, by name (GainAuto: 'Off', ...)"
    )

    @model_validator(mode="after")
    def _one_selector(self) -> Settings:
        given = [name for name in ("serial", "user_id", "address") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                f"a gige camera is picked by exactly one of serial, user_id or address (got {given or 'none'})"
            )
        if self.pixel_format in WIDE_FORMATS and self.encoding != "png":
            raise ValueError(f"pixel_format {self.pixel_format} has 16-bit pixels: only encoding png keeps them")
        if self.trigger == "software" and self.hardware_source:
            raise ValueError("hardware_source is for trigger: hardware")
        return self

    @property
    def selector(self) -> Selector:
        return Selector(self.serial, self.user_id, self.address)


def open_camera(station_id: str, settings: Settings) -> CameraSource:
    return GigeSource(station_id, settings)


@dataclass
class Connection:
    """One opening of the camera: its Aravis objects and what the watcher needs to know about them."""

    camera: Any
    stream: Any
    address: str
    serial: str
    lost: threading.Event = field(default_factory=threading.Event)  # Aravis's control-lost signal
    suspect: bool = False  # a grab timed out: the watcher checks the control channel
    seen: dict[str, int] = field(default_factory=dict)  # the stream's counters already counted
    handler: int = 0  # the control-lost signal's connection, undone when the camera is dropped
    counted_at: float = 0.0  # time.monotonic() of the last _count


@dataclass(frozen=True)
class Arrived:
    """A frame read from a hardware-triggered stream and copied out of its buffer, waiting for its trigger."""

    unix_ns: int
    frame_id: int
    pixels: np.ndarray


@dataclass(frozen=True)
class Held:
    """A frame read from a hardware-triggered stream, still in its buffer (out of the pool) until a trigger takes
    it: a free-running camera sends far more frames than triggers take, and copying each cost the CPU the camera's
    own packets needed."""

    unix_ns: int
    frame_id: int
    buffer: Any
    stream: Any  # the buffer goes back to the stream it came from, even after the camera was opened again


class GigeSource:
    def __init__(self, station_id: str, settings: Settings):
        self.station = station_id
        self.settings = settings
        self.camera_id = f"gige:{station_id}"
        self.label = f"camera {self.camera_id} ({settings.selector})"
        self._lock = threading.Lock()  # the connection: grabs, and the watcher replacing it
        self._counting = threading.Lock()
        self._conn: Connection | None = None
        self._connected_once = False
        self._problem = "not opened yet"
        self._attempt = 0
        self._next_try = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._arrived: deque[Arrived] = deque(maxlen=max(64, settings.buffers * 4))
        self._held: deque[Held] = deque()
        # The rest stay with the camera: holding half cost a free-running camera frames for want of a buffer.
        self._hold_max = max(1, settings.buffers // 4)
        self._arrival = threading.Condition()  # _arrived and _held
        self._grabber = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"gige-grab-{station_id}")
        self._pending: concurrent.futures.Future[CapturedImage] | None = None
        # Exposure and gain in force: the station's, or the product's (set_product); set again on every reopening.
        self._exposure_us, self._gain = settings.exposure_us, settings.gain
        CAMERA_CONNECTED.labels(station_id, self.camera_id).set(0)
        try:
            self._connect()
        except AravisUnavailable as exc:
            raise CameraError(f"{self.label}: {exc}") from None
        except FeatureError as exc:
            # The settings ask for what the camera does not have: no retry mends that.
            raise CameraError(f"{self.label}: {exc}") from None
        except (CameraNotFound, GrabError, glib_error()) as exc:
            self._retry_later(_reason(exc))
        self._watcher = threading.Thread(target=self._watch, name=f"gige-watch-{station_id}", daemon=True)
        self._watcher.start()

    # --- what capture calls

    def grab(self, part: Part) -> CapturedImage:
        if self.settings.trigger == "hardware":
            return self._matched(part)
        # Aravis retries a control write for seconds on a camera that is gone: the grab runs on the source's own
        # thread and is given up after its timeout, so a station never waits longer than grab_timeout_ms.
        limit_s = self.settings.grab_timeout_ms / 1000 + CONTROL_MARGIN_S
        if self._pending is not None and not self._pending.done():
            raise CameraError(f"{self.label}: the previous grab still waits on the camera (it does not answer)")
        self._pending = self._grabber.submit(self._locked_grab, limit_s)
        try:
            return self._pending.result(timeout=limit_s)
        except concurrent.futures.TimeoutError:
            if (conn := self._conn) is not None:
                conn.suspect = True
                self._wake.set()
            raise CameraError(
                f"{self.label}: no frame within {self.settings.grab_timeout_ms:g} ms of the software trigger "
                "(the camera does not answer)"
            ) from None

    def _locked_grab(self, limit_s: float) -> CapturedImage:
        if not self._lock.acquire(timeout=limit_s):
            raise CameraError(f"{self.label}: busy opening the camera again ({self._problem})")
        try:
            return self._triggered(self._connected())
        finally:
            self._lock.release()

    def set_product(self, product: ProductCamera) -> None:
        """A product change (capture calls it between parts): the recipe's exposure and gain, the station's own
        where the recipe gives none. Set on the streaming camera now (the next trigger's frame has them) and on
        every reopening; a camera that is away gets them when it is back. CameraError naming the feature or value
        the camera lacks (the settings in force stay)."""
        exposure = product.exposure_us if product.exposure_us is not None else self.settings.exposure_us
        gain = product.gain if product.gain is not None else self.settings.gain
        with self._lock:
            conn = self._conn
            if conn is not None:
                try:
                    set_exposure_and_gain(conn.camera, exposure_us=exposure, gain=gain)
                except FeatureError as exc:
                    raise CameraError(f"{self.label}: the product's camera settings: {exc}") from None
            self._exposure_us, self._gain = exposure, gain

    def problem(self) -> str | None:
        """Why the camera cannot grab now (for the station's health); None while it can."""
        if self._conn is not None:
            return None
        wait = max(0.0, self._next_try - time.monotonic())
        again = f"opening it again (attempt {self._attempt + 1} in {wait:.1f} s)"
        return f"{self.label} disconnected: {self._problem}; {again}"

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._watcher.join(timeout=10)
        with self._lock:
            self._drop()
        self._grabber.shutdown(wait=False, cancel_futures=True)

    # --- software trigger

    def _triggered(self, conn: Connection) -> CapturedImage:
        error = glib_error()
        timeout_ms = self.settings.grab_timeout_ms
        # Frames already in the queue are older than this trigger: back to the pool.
        while (stale := conn.stream.try_pop_buffer()) is not None:
            conn.stream.push_buffer(stale)
        try:
            conn.camera.software_trigger()
        except error as exc:
            self._lose(conn, f"the trigger was not taken: {exc.message}")
            raise CameraError(f"{self.label}: the software trigger failed: {exc.message}") from None
        buffer = conn.stream.timeout_pop_buffer(int(timeout_ms * 1000))
        if buffer is None:
            conn.suspect = True
            self._wake.set()
            self._count(conn)
            raise CameraError(f"{self.label}: no frame within {timeout_ms:g} ms of the software trigger")
        try:
            status = buffer.get_status()
            if status != aravis().BufferStatus.SUCCESS:
                self._count(conn)
                raise CameraError(f"{self.label}: frame {buffer.get_frame_id()} is incomplete ({status.value_nick})")
            try:
                pixels = buffer_image(buffer, self.settings.pixel_format)
            except GrabError as exc:
                raise CameraError(f"{self.label}: {exc}") from None
            captured, frame_id = buffer.get_system_timestamp(), buffer.get_frame_id()
        finally:
            conn.stream.push_buffer(buffer)
        self._count(conn, every_s=COUNT_EVERY_S)
        return self._image(conn, pixels, captured, frame_id)

    # --- hardware trigger: frames read as they come, matched to triggers by time

    def _read_frames(self, conn: Connection) -> None:
        stream = conn.stream  # its own reference: dropping the connection clears conn.stream
        # Until the connection is dropped, close() too: a stream nobody pops runs out of buffers (underruns).
        while self._conn is conn:
            buffer = stream.timeout_pop_buffer(100_000)
            if buffer is not None:
                self._keep(stream, buffer)

    def _keep(self, stream: Any, buffer: Any) -> None:
        """A buffer popped from a hardware-triggered stream: held for a trigger, or back to the pool."""
        if buffer.get_status() != aravis().BufferStatus.SUCCESS:
            stream.push_buffer(buffer)  # counted by the stream's own counters; a trigger that needed it times out
            return
        with self._arrival:
            if self._conn is None or self._conn.stream is not stream:
                stream.push_buffer(buffer)  # dropped meanwhile: held, it would keep the old stream alive
                return
            self._held.append(Held(buffer.get_system_timestamp(), buffer.get_frame_id(), buffer, stream))
            oldest = self._held.popleft() if len(self._held) > self._hold_max else None
            self._arrival.notify_all()
        if oldest is None:
            return
        try:
            if self.settings.hardware_source:
                pixels = buffer_image(oldest.buffer, self.settings.pixel_format)
                with self._arrival:
                    self._arrived.append(Arrived(oldest.unix_ns, oldest.frame_id, pixels))
        except GrabError:
            pass  # as one taken by a trigger would be: skipped
        finally:
            oldest.stream.push_buffer(oldest.buffer)

    def _matched(self, part: Part) -> CapturedImage:
        trigger_ns = part.triggered_unix_ns or time.time_ns()
        earliest = trigger_ns - int(self.settings.match_lead_ms * 1e6)
        latest = trigger_ns + int(self.settings.match_window_ms * 1e6)
        skipped = ""
        while True:
            conn, found = self._wait_for(earliest, latest, skipped)
            if isinstance(found, Arrived):
                frame = found
                break
            try:
                frame = Arrived(found.unix_ns, found.frame_id, buffer_image(found.buffer, self.settings.pixel_format))
                break
            except GrabError as exc:
                skipped = f"; frame {found.frame_id} skipped: {exc}"
            finally:
                found.stream.push_buffer(found.buffer)
        self._count(conn, every_s=COUNT_EVERY_S)
        return self._image(conn, frame.pixels, frame.unix_ns, frame.frame_id)

    def _wait_for(self, earliest: int, latest: int, skipped: str) -> tuple[Connection, Arrived | Held]:
        """The earliest frame not yet taken that arrived in [earliest, latest], waited for until `latest`."""
        with self._arrival:
            while True:
                conn = self._conn
                if conn is None:
                    raise CameraError(f"{self.label}: {self.problem()}")
                found = self._take(earliest, latest)
                if found is not None:
                    return conn, found
                wait_s = (latest - time.time_ns()) / 1e9
                if wait_s <= 0:
                    self._count(conn)
                    raise CameraError(
                        f"{self.label}: no frame arrived within {self.settings.match_window_ms:g} ms after the "
                        f"trigger (or {self.settings.match_lead_ms:g} ms before it){skipped}"
                    )
                self._arrival.wait(timeout=min(wait_s, 0.1))

    def _take(self, earliest: int, latest: int) -> Arrived | Held | None:
        """Under _arrival: the earliest frame in [earliest, latest], taken; held frames older than any trigger
        still to come may want go back to the pool."""
        while self._arrived and self._arrived[0].unix_ns < earliest:
            self._arrived.popleft()
        if self._arrived:  # copied frames are older than held ones
            return self._arrived.popleft() if self._arrived[0].unix_ns <= latest else None
        while self._held and self._held[0].unix_ns < earliest:
            old = self._held.popleft()
            old.stream.push_buffer(old.buffer)
        if self._held and self._held[0].unix_ns <= latest:
            return self._held.popleft()
        return None

    # --- both

    def _image(self, conn: Connection, pixels: np.ndarray, captured_ns: int, frame_id: int) -> CapturedImage:
        uri = f"gige://{conn.address}/{conn.serial}#frame={frame_id}"
        return CapturedImage.encoded(pixels, self.settings.encoding, uri, captured_ns)

    def _connected(self) -> Connection:
        conn = self._conn
        if conn is None:
            raise CameraError(f"{self.label}: {self.problem()}")
        return conn

    # --- opening, losing, opening again

    def _connect(self) -> None:
        arv = aravis()
        s = self.settings
        camera = open_aravis_camera(s.selector)
        configure(
            camera,
            pixel_format=s.pixel_format,
            exposure_us=self._exposure_us,
            gain=self._gain,
            region=Region(s.roi.x, s.roi.y, s.roi.width, s.roi.height) if s.roi else None,
            trigger_source="Software" if s.trigger == "software" else s.hardware_source,
            extra=s.features,
        )
        stream = camera.create_stream(None, None)
        if stream is None:
            raise GrabError("the camera opened no stream channel")
        if camera.is_gv_device():
            resend = arv.GvStreamPacketResend.ALWAYS if s.packet_resend else arv.GvStreamPacketResend.NEVER
            stream.set_property("packet-resend", resend)
        payload = camera.get_payload()
        for _ in range(s.buffers):
            stream.push_buffer(arv.Buffer.new_allocate(payload))
        device = camera.get_device()
        conn = Connection(camera, stream, device.get_device_address().to_string(), camera.get_device_serial_number())

        def control_lost(_device: Any) -> None:  # on Aravis's heartbeat thread
            conn.lost.set()
            self._wake.set()

        conn.handler = device.connect("control-lost", control_lost)
        camera.start_acquisition()
        self._conn = conn
        self._attempt = 0
        self._problem = ""
        CAMERA_CONNECTED.labels(self.station, self.camera_id).set(1)
        if self._connected_once:
            CAMERA_RECONNECTS.labels(self.station, self.camera_id).inc()
        self._connected_once = True
        if s.trigger == "hardware":
            threading.Thread(
                target=self._read_frames, args=(conn,), name=f"gige-read-{self.station}", daemon=True
            ).start()

    def _lose(self, conn: Connection, reason: str) -> None:
        if self._conn is conn:
            self._retry_later(reason)  # first: dropping a camera that is gone takes Aravis's retries
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        CAMERA_CONNECTED.labels(self.station, self.camera_id).set(0)
        if conn is None:
            return
        self._count(conn)
        with self._arrival:
            self._held.clear()  # their buffers hold the stream, and it the camera's control channel
        try:
            conn.camera.stop_acquisition()
        except glib_error():
            pass  # a camera that is gone cannot stop: its objects are released all the same
        # The signal's closure holds the connection: undone, the last references go and Aravis releases the
        # camera's control channel now (another process, or this one reopening it, can then take control).
        conn.camera.get_device().disconnect(conn.handler)
        conn.stream = conn.camera = None

    def _retry_later(self, reason: str) -> None:
        self._problem = reason
        wait = min(self.settings.reconnect_max_s, self.settings.reconnect_min_s * 2**self._attempt)
        self._attempt += 1
        self._next_try = time.monotonic() + wait

    def _watch(self) -> None:
        error = glib_error()
        while not self._stop.is_set():
            self._wake.wait(WATCH_INTERVAL_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            conn = self._conn
            if conn is not None:
                if conn.lost.is_set():
                    self._lose_locked(conn, "the camera stopped answering (control channel lost)")
                elif conn.suspect:
                    conn.suspect = False
                    try:
                        conn.camera.get_device().read_register(0)  # the bootstrap's version register
                    except error as exc:
                        self._lose_locked(conn, f"the camera stopped answering: {exc.message}")
                else:
                    self._count(conn)
                continue
            if time.monotonic() < self._next_try:
                continue
            with self._lock:
                try:
                    self._connect()
                except (CameraNotFound, FeatureError, GrabError, error) as exc:
                    self._retry_later(_reason(exc))

    def _lose_locked(self, conn: Connection, reason: str) -> None:
        with self._lock:
            self._lose(conn, reason)
        with self._arrival:
            self._arrival.notify_all()

    def _count(self, conn: Connection, every_s: float = 0.0) -> None:
        """Add what the stream counted since last time to the camera's metrics (not again within `every_s`)."""
        with self._counting:
            if conn.stream is None or time.monotonic() - conn.counted_at < every_s:
                return
            conn.counted_at = time.monotonic()
            try:
                counters = stream_counters(conn.stream)
            except glib_error():
                return
            for name, value in counters.items():
                delta = value - conn.seen.get(name, 0)
                if delta <= 0:
                    continue
                conn.seen[name] = value
                if name in PACKET_OUTCOMES:
                    CAMERA_PACKETS.labels(self.station, self.camera_id, PACKET_OUTCOMES[name]).inc(delta)
                elif name in FRAME_OUTCOMES:
                    CAMERA_FRAMES.labels(self.station, self.camera_id, FRAME_OUTCOMES[name]).inc(delta)


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc)
