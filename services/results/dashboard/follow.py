"""Feeding the live view: a side subscription to the line's subjects, or (no bus) the database.

The side subscription is plain NATS (no durable consumer, nothing acked, nothing stored for it): the
line's streams keep every message for their own consumers whatever the dashboard does, so it adds
nothing to a part's path. A slow dashboard drops messages at its own subscription's pending limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from google.protobuf.message import Message
from nats.aio.client import Client
from sqlalchemy import Engine

from lineguard.bus.side import side_handler
from lineguard.contracts import line_subjects
from lineguard.services.results.dashboard import queries
from lineguard.services.results.dashboard.live import LiveFeed
from lineguard.v1.decision_pb2 import Decision
from lineguard.v1.frame_pb2 import Frame
from lineguard.v1.heartbeat_pb2 import Heartbeat
from lineguard.v1.plc_pb2 import PlcAck

log = structlog.get_logger("lineguard.dashboard")

# Messages the subscription may hold unread before NATS drops them for it (nats-py's slow-consumer limit): frames
# are large and only the newest matters, so few; the rest are small.
PENDING = {"frame": 8, "decision": 2000, "ack": 2000, "heartbeat": 200}
FRAME_BYTES_PENDING = 64 * 1024 * 1024
DATABASE_POLL_S = 1.0


async def follow_bus(feed: LiveFeed, nc: Client) -> list[Any]:
    """Subscribe the feed to the line's frames, decisions, acks and heartbeats; returns the subscriptions."""
    wiring: dict[str, tuple[type[Message], Callable[[Any], None]]] = {
        "frame": (Frame, feed.on_frame),
        "decision": (Decision, feed.on_decision),
        "ack": (PlcAck, feed.on_ack),
        "heartbeat": (Heartbeat, feed.on_heartbeat),
    }
    subscriptions = []
    feed.follows_bus = True
    for kind, (message_type, apply) in wiring.items():
        subscriptions.append(
            await nc.subscribe(
                line_subjects(kind, feed.line),
                cb=side_handler(message_type, apply),
                pending_msgs_limit=PENDING[kind],
                pending_bytes_limit=FRAME_BYTES_PENDING,
            )
        )
    return subscriptions


async def follow_database(feed: LiveFeed, engine: Engine, stopping: asyncio.Event) -> None:
    """No bus (`lineguard-api` on its own): each station's newest row, every DATABASE_POLL_S. No images, no health."""
    while not stopping.is_set() and not feed.closed:
        try:
            for part in await asyncio.to_thread(queries.latest_parts, engine, feed.line, feed.stations):
                feed.on_part(part)
        except Exception as exc:  # noqa: BLE001 - the database away: the live view waits, the pages say so
            log.warning("the live view cannot read the database", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), DATABASE_POLL_S)
