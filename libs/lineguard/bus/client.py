"""The connection to NATS: publishing with message ids, and dead letters."""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path
from typing import Any

import nats
import stamina
import structlog
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck

from lineguard.bus.acks import PendingAcks
from lineguard.bus.credentials import read_public_key, seed_file
from lineguard.bus.permissions import inbox_prefix
from lineguard.bus.streams import line_streams, provision_streams, require_streams
from lineguard.config import NatsSettings, NatsTlsSettings
from lineguard.contracts import dead_subject
from lineguard.runtime import tracing

log = structlog.get_logger("lineguard.bus")


class _TlsCloseNoise(logging.Filter):
    """nats-py's transport answers EOF with True, which asyncio ignores under TLS and warns about at every close."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_TlsCloseNoise())

# Headers a dead letter carries besides the original message's own.
DEAD_REASON = "Lg-Dead-Reason"
DEAD_SUBJECT = "Lg-Dead-Subject"
DEAD_SERVICE = "Lg-Dead-Service"
DEAD_DELIVERIES = "Lg-Dead-Deliveries"
INSPECTION_ID = "Lg-Inspection-Id"

# The status header of the reply the server sends itself when nothing subscribes to a subject.
STATUS = "Status"
NO_RESPONDERS = "503"


class PublishRefused(RuntimeError):
    """The stream did not store the message (full, or none takes the subject); says what the server said."""

    def __init__(self, subject: str, reason: str):
        super().__init__(f"publish to {subject} refused: {reason}")
        self.subject = subject
        self.reason = reason


class Bus:
    """One service's connection: JetStream publishing and dead-lettering."""

    def __init__(self, nc: Client, settings: NatsSettings, service: str):
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.settings = settings
        self.service = service
        self._acks = PendingAcks(nc, settings.publish_timeout_s)

    @classmethod
    async def connect(
        cls, settings: NatsSettings, service: str, *, identity: str | None = None, provision: bool | None = None
    ) -> Bus:
        """Connect (retrying while the server comes up) as `identity` (default: the service's own) and make sure the
        streams exist: an unauthenticated connection makes them (an open server has no admin to), an
        authenticated one only checks they were provisioned (`lineguard nats provision`), as its permissions allow."""

        async def _connect() -> Client:
            return await nats.connect(
                **connect_options(settings, identity or service),
                name=f"lineguard-{service}",
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                drain_timeout=5,
            )

        nc = None
        async for attempt in stamina.retry_context(
            on=(OSError, nats.errors.NoServersError, TimeoutError), attempts=20, timeout=60, wait_max=2.0
        ):
            with attempt:
                nc = await _connect()
        assert nc is not None
        bus = cls(nc, settings, service)
        if provision if provision is not None else not settings.authenticated:
            await provision_streams(bus.js, line_streams(settings))
        else:
            await require_streams(bus.js, line_streams(settings))
        return bus

    async def publish(
        self, subject: str, message: Message | bytes, *, msg_id: str, headers: dict[str, str] | None = None
    ) -> PubAck:
        """Store `message` once: a retry with the same `msg_id` is not stored twice; returns once it is stored.

        Raises PublishRefused with the server's reason when the stream did not store it, PublishUnconfirmed
        when no ack came within `publish_timeout_s`."""
        payload = message if isinstance(message, bytes) else message.SerializeToString()
        all_headers = {"Nats-Msg-Id": msg_id}
        if headers:
            all_headers.update(headers)
        if tracing.TRACER is not None:  # the one check tracing off costs
            tracing.inject(all_headers)
        reply = await self._acks.request(subject, payload, all_headers)
        if reply.headers and reply.headers.get(STATUS) == NO_RESPONDERS:
            raise PublishRefused(subject, "no stream takes this subject (or JetStream is not running)")
        answer = json.loads(reply.data)
        if "error" in answer:
            error = answer["error"]
            raise PublishRefused(
                subject, f"{error.get('description')} (code {error.get('code')}, {error.get('err_code')})"
            )
        # Built directly: PubAck.from_response walks the dataclass's fields for every message.
        return PubAck(
            stream=answer["stream"], seq=answer["seq"], domain=answer.get("domain"), duplicate=answer.get("duplicate")
        )

    async def dead_letter(self, msg: Msg, kind: str, reason: str) -> None:
        """Copy `msg` to `lg.dead.<kind>` with why it could not be handled."""
        headers: dict[str, Any] = dict(msg.headers or {})
        meta = _metadata(msg)
        headers.update(
            {
                DEAD_REASON: _header_safe(reason),
                DEAD_SUBJECT: msg.subject,
                DEAD_SERVICE: self.service,
                DEAD_DELIVERIES: str(meta.num_delivered if meta else 1),
            }
        )
        stream_seq = meta.sequence.stream if meta else id(msg)
        headers["Nats-Msg-Id"] = f"dead:{self.service}:{msg.subject}:{stream_seq}"
        await self.js.publish(dead_subject(kind), msg.data, headers=headers)
        log.warning("dead-lettered", subject=msg.subject, reason=reason, service=self.service)

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()


def connect_options(settings: NatsSettings, identity: str, *, seed: Path | None = None) -> dict[str, Any]:
    """nats.connect's arguments for `identity`: the server, its nkey seed (`seed`, else the one in
    `credentials_dir`) and own reply inbox, and TLS.

    A missing or unreadable seed is a CredentialError naming the file, before any connection is tried."""
    options: dict[str, Any] = {
        "servers": [settings.url],
        "connect_timeout": settings.connect_timeout_s,
        "error_cb": _log_refusal,
    }
    if seed is None and settings.credentials_dir is not None:
        seed = seed_file(settings.credentials_dir, identity)
    if seed is not None:
        read_public_key(seed)
        options["nkeys_seed"] = str(seed)
        options["inbox_prefix"] = inbox_prefix(identity)
    if settings.tls is not None:
        options["tls"] = tls_context(settings.tls)
    return options


def tls_context(tls: NatsTlsSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


async def _log_refusal(exc: Exception) -> None:
    """The server's asynchronous errors: a refused publish or subscription (a permission the table lacks, or a
    message this identity may not send) is an error in the log, not nats-py's own print."""
    log.error("NATS server error", error=str(exc) or type(exc).__name__)


def _metadata(msg: Msg) -> Any:
    try:
        return msg.metadata
    except Exception:  # noqa: BLE001 - a core NATS message has no JetStream metadata (nats-py raises its own kinds)
        return None


def _header_safe(text: str) -> str:
    # NATS headers are single-line; keep the reason readable rather than cut it off.
    return " ".join(text.split())[:1000]
