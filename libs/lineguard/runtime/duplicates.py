"""A publish JetStream reported as a duplicate: the same message again, or another under the same id.

JetStream drops a message whose `Nats-Msg-Id` it already holds (within the stream's duplicate window) and says
so in its ack (`duplicate: true`). A retry of the same message is what the id is for; a different payload under
an id already taken is a collision: the message published second is lost, whichever of the two was the genuine
one. Neither is silent: each is counted and logged with its id, and a collision is a warning naming both sizes."""

from __future__ import annotations

from typing import Literal

import structlog
from nats.js import JetStreamContext
from nats.js.api import PubAck

from lineguard.runtime.metrics import DUPLICATE_PUBLISHES

log = structlog.get_logger("lineguard.runtime")

Sameness = Literal["same", "different", "unknown"]


async def stored_payload(js: JetStreamContext, ack: PubAck) -> bytes | None:
    """The payload the stream holds at the duplicate ack's sequence (the first message under that id); None when it
    cannot be read (aged out, or the credential may not read the stream)."""
    try:
        stored = await js.get_msg(ack.stream, ack.seq)
    except Exception:  # noqa: BLE001 - nats-py raises its own kinds; not knowing is reported as such
        return None
    return stored.data


async def report_duplicate(
    js: JetStreamContext, service: str, kind: str, subject: str, msg_id: str, payload: bytes, ack: PubAck
) -> Sameness:
    """Count and log one duplicate ack; returns whether the stored payload is the one just published."""
    stored = await stored_payload(js, ack)
    sameness: Sameness = "unknown" if stored is None else "same" if stored == payload else "different"
    DUPLICATE_PUBLISHES.labels(service, kind, sameness).inc()
    fields = {"msg_id": msg_id, "subject": subject, "stream": ack.stream, "stored_seq": ack.seq}
    if sameness == "same":
        log.info("publish was a duplicate of the stored message (a retry); not stored again", **fields)
    elif sameness == "different":
        log.warning(
            "message id collision: the stream holds a different message under this id; this one was dropped",
            published_bytes=len(payload),
            stored_bytes=len(stored or b""),
            **fields,
        )
    else:
        log.warning("publish was dropped as a duplicate; the stored message could not be read to compare", **fields)
    return sameness
