"""What the live view shows, kept as the line runs: each station's last part and image, the PLC's last result,
each service's last heartbeat. Plain bookkeeping, no I/O: follow.py feeds it from a side subscription (or from
the database) and the pages read it.

It keeps only the newest of each, so a burst of parts costs nothing but replacing them: the live view may skip
parts and images, never blocks the line, and counts nothing (the counters are read from the database, where
every part is)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lineguard.config import LineConfig
from lineguard.contracts import VERDICT_NAMES
from lineguard.imaging import content_type
from lineguard.services.results.archive.images import Box
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.heartbeat_pb2 import HealthStatus, Heartbeat
from lineguard.v1.plc_pb2 import PlcAck

# The frames kept for the live tiles (and for records whose archived image is not written yet): a few per station.
FRAMES_KEPT = 32
_HEALTH = {
    HealthStatus.HEALTH_STATUS_OK: "ok",
    HealthStatus.HEALTH_STATUS_DEGRADED: "degraded",
    HealthStatus.HEALTH_STATUS_STOPPING: "stopping",
}


@dataclass(frozen=True)
class PartView:
    """One inspection as a station tile shows it."""

    inspection_id: str
    station: str
    verdict: str
    reasons: tuple[str, ...]
    serial: str | None
    decided_at: datetime
    width: int | None
    height: int | None
    boxes: tuple[Box, ...]
    recipe_id: str
    recipe_version: str | None
    model_id: str | None
    model_version: str | None
    total_ms: float | None

    @classmethod
    def from_decision(cls, decision: Decision) -> PartView:
        inference = decision.inference if decision.HasField("inference") else None
        boxes = tuple(
            Box(
                d.class_name,
                d.score,
                d.box.x1,
                d.box.y1,
                d.box.x2,
                d.box.y2,
                tuple((p.x, p.y) for p in d.mask.points),
            )
            for d in (inference.detections if inference is not None else ())
        )
        total = next((t.ms for t in decision.timings if t.stage == "total"), None)
        return cls(
            inspection_id=decision.part.inspection_id,
            station=decision.part.station,
            verdict=VERDICT_NAMES.get(decision.verdict, "ERROR"),
            reasons=tuple(decision.reason_codes),
            serial=decision.serial or None,
            decided_at=datetime.fromtimestamp(decision.decided_unix_ns / 1e9, UTC),
            width=(inference.image_width or None) if inference is not None else None,
            height=(inference.image_height or None) if inference is not None else None,
            boxes=boxes,
            recipe_id=decision.part.recipe_id,
            recipe_version=decision.recipe_version or None,
            model_id=decision.model_id or None,
            model_version=decision.model_version or None,
            total_ms=total,
        )

    @classmethod
    def from_row(cls, row: dict[str, Any], defects: list[dict[str, Any]]) -> PartView:
        """From an inspections row and its defects rows (dashboard.queries)."""
        return cls(
            inspection_id=row["inspection_id"],
            station=row["station"],
            verdict=row["verdict"],
            reasons=tuple(c for c in row["reason_codes"].split(",") if c),
            serial=row["serial"],
            decided_at=row["decided_at"],
            width=row["image_width"],
            height=row["image_height"],
            boxes=tuple(
                Box(
                    d["class_name"],
                    d["score"],
                    d["x1"],
                    d["y1"],
                    d["x2"],
                    d["y2"],
                    tuple((float(x), float(y)) for x, y in d["mask"] or ()),
                )
                for d in defects
            ),
            recipe_id=row["recipe_id"],
            recipe_version=row["recipe_version"],
            model_id=row["model_id"],
            model_version=row["model_version"],
            total_ms=row["total_ms"],
        )


@dataclass(frozen=True)
class StoredFrame:
    content_type: str
    data: bytes


@dataclass(frozen=True)
class PlcState:
    """The PLC's side of a station's handshake, as the gateway's last ack of it says."""

    protocol: str
    sequence: int
    verdict: str
    delivered: bool
    gateway_timeout: bool
    at: datetime


@dataclass(frozen=True)
class Beat:
    service: str
    instance: str
    status: str
    detail: str
    version: str
    seen: float  # monotonic


@dataclass
class LiveFeed:
    """The newest of everything, with a version per thing that changed, for the event stream to wait on."""

    line: str
    stations: tuple[str, ...]
    frames_kept: int = FRAMES_KEPT
    parts: dict[str, PartView] = field(default_factory=dict)
    plc: dict[str, PlcState] = field(default_factory=dict)
    beats: dict[str, Beat] = field(default_factory=dict)
    frames: OrderedDict[str, StoredFrame] = field(default_factory=OrderedDict)
    versions: dict[str, int] = field(default_factory=dict)  # "station:<id>", "counters", "health"
    follows_bus: bool = False  # heartbeats and PLC acks come only over the bus (follow.follow_bus)
    closed: bool = False
    _tick: asyncio.Event | None = None

    @classmethod
    def of(cls, config: LineConfig) -> LiveFeed:
        return cls(config.line, tuple(s.id for s in config.stations))

    def _changed(self, *keys: str) -> None:
        for key in keys:
            self.versions[key] = self.versions.get(key, 0) + 1
        if self._tick is not None:
            self._tick.set()
            self._tick = None

    async def wait(self, timeout_s: float) -> None:
        """Until something changes, the feed closes, or `timeout_s` passes."""
        if self.closed:
            return
        if self._tick is None:
            self._tick = asyncio.Event()
        tick = self._tick
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tick.wait(), timeout_s)

    def close(self) -> None:
        self.closed = True
        self._changed("closed")

    def on_part(self, part: PartView) -> None:
        if part.station not in self.stations:
            return
        shown = self.parts.get(part.station)
        if shown is not None and shown.decided_at > part.decided_at:
            return  # a redelivered or late older part does not replace the newer one
        self.parts[part.station] = part
        self._changed(f"station:{part.station}", "counters")

    def on_decision(self, decision: Decision) -> None:
        self.on_part(PartView.from_decision(decision))

    def on_frame(self, frame: Frame) -> None:
        # Frames in the object store (over the inline limit) are not fetched: the live view skips them.
        if frame.WhichOneof("payload") != "data" or frame.part.station not in self.stations:
            return
        self.frames[frame.part.inspection_id] = StoredFrame(content_type(frame.encoding), frame.data)
        while len(self.frames) > self.frames_kept:
            self.frames.popitem(last=False)

    def on_ack(self, ack: PlcAck) -> None:
        if ack.part.station not in self.stations:
            return
        at = ack.delivered_unix_ns or time.time_ns()
        self.plc[ack.part.station] = PlcState(
            protocol=ack.protocol,
            sequence=ack.part.sequence,
            verdict=VERDICT_NAMES.get(ack.verdict, "ERROR"),
            delivered=ack.delivered,
            gateway_timeout=ack.gateway_timeout,
            at=datetime.fromtimestamp(at / 1e9, UTC),
        )
        self._changed("health")

    def on_heartbeat(self, beat: Heartbeat, now: float | None = None) -> None:
        if beat.line != self.line or not beat.service:
            return
        known = self.beats.get(beat.service)
        status = _HEALTH.get(beat.status, "unknown")
        self.beats[beat.service] = Beat(
            beat.service, beat.instance, status, beat.detail, beat.version, time.monotonic() if now is None else now
        )
        if known is None or (known.status, known.detail) != (status, beat.detail):
            self._changed("health")
