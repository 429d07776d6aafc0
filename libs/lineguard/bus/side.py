"""Side subscriptions: plain NATS subscriptions to a line's kinds beside the durable consumers (no ack, nothing
stored for them; who may hold one is in lineguard.bus.permissions, SIDE_SUBSCRIPTIONS). The dashboard's live view
and the frame services' decided parts (lineguard.runtime.decided) follow the line through them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from google.protobuf.message import DecodeError, Message
from nats.aio.msg import Msg

log = structlog.get_logger("lineguard.bus")


def side_handler(message_type: type[Message], apply: Callable[[Any], None]) -> Callable[[Msg], Any]:
    """A subscription callback: each message decoded as `message_type` and given to `apply`; one that does not
    decode is passed over (a side subscription only ever shortens a path the durable consumers take anyway)."""

    async def on_message(msg: Msg) -> None:
        try:
            apply(message_type.FromString(msg.data))
        except DecodeError:
            log.debug("undecodable message on a side subscription: ignored", subject=msg.subject)

    return on_message


async def unsubscribe(subscriptions: list[Any]) -> None:
    for sub in subscriptions:
        with contextlib.suppress(Exception):  # the bus may be closing
            await sub.unsubscribe()
