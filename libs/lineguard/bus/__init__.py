"""The bus: NATS JetStream with message ids, pull workers and dead letters."""

from lineguard.bus.acks import PublishUnconfirmed
from lineguard.bus.client import DEAD_REASON, DEAD_SERVICE, DEAD_SUBJECT, Bus, PublishRefused
from lineguard.bus.errors import BadMessage, HandBack, Retry
from lineguard.bus.streams import StreamSpec, line_streams, provision_streams
from lineguard.bus.worker import Delivery, Handler, Worker

__all__ = [
    "DEAD_REASON",
    "DEAD_SERVICE",
    "DEAD_SUBJECT",
    "BadMessage",
    "Bus",
    "Delivery",
    "HandBack",
    "Handler",
    "PublishRefused",
    "PublishUnconfirmed",
    "Retry",
    "StreamSpec",
    "Worker",
    "line_streams",
    "provision_streams",
]
