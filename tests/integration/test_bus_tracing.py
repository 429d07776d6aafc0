"""Tracing in the bus against a real nats-server and a real OTLP/HTTP receiver: the publish carries the current
span as `traceparent`, the worker opens the consumer's span under it, a bad header starts a new trace and is never
a reason to refuse the message, and tracing off adds no header and no span."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from lineguard.bus import BadMessage, Delivery, Worker
from lineguard.config import TracingSettings
from lineguard.contracts import msg_id, stream_name, subject
from lineguard.runtime import tracing
from lineguard.runtime.logging import configure_logging
from lineguard.testing.otlp import OtlpReceiver
from lineguard.testing.records import triggered_part
from lineguard.testing.streams import stored
from lineguard.v1.trigger_pb2 import Trigger

SUBJECT = subject("trigger", "l1", "s1")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def traced(receiver: OtlpReceiver) -> Iterator[OtlpReceiver]:
    assert tracing.configure(TracingSettings(endpoint=receiver.endpoint), "test", "l1")
    try:
        yield receiver
    finally:
        tracing.shutdown()


async def handle_all(bus, count: int, handler=None) -> list[Delivery[Trigger]]:
    got: list[Delivery[Trigger]] = []

    async def handle(delivery: Delivery[Trigger]) -> None:
        got.append(delivery)
        if handler is not None:
            await handler(delivery)

    worker = Worker(bus, kind="trigger", line="l1", message_type=Trigger, handler=handle, durable="capture-trigger")
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:
        async with asyncio.timeout(10):
            while len(got) < count:
                await asyncio.sleep(0.02)
    finally:
        stopping.set()
        await task
    return got


def trigger() -> Trigger:
    return Trigger(part=triggered_part())


async def test_a_message_published_in_a_span_is_handled_in_a_child_span_named_by_the_consumer(
    bus_factory, traced: OtlpReceiver
) -> None:
    bus = await bus_factory()
    message = trigger()
    with tracing.step("trigger", parent=tracing.NEW_TRACE):
        await bus.publish(SUBJECT, message, msg_id=msg_id(message.part.inspection_id, "trigger"))
    [delivery] = await handle_all(bus, 1)
    tracing.shutdown()  # exports what is held

    [root] = [s for s in traced.snapshot() if s.name == "trigger"]
    [consumer] = [s for s in traced.snapshot() if s.name == "capture-trigger"]
    assert root.parent_span_id == "" and root.service == "lineguard-test"
    assert (consumer.trace_id, consumer.parent_span_id) == (root.trace_id, root.span_id)
    assert consumer.kind == "SPAN_KIND_CONSUMER" and not consumer.error
    assert consumer.attributes["messaging.destination.name"] == SUBJECT
    assert consumer.attributes["lineguard.inspection_id"] == message.part.inspection_id
    # What the results service stores on the row: the part's trace, read from the header.
    assert delivery.trace_id == root.trace_id
    assert traced.refused == []


async def test_a_failed_message_is_a_failed_span(bus_factory, traced: OtlpReceiver) -> None:
    bus = await bus_factory()
    message = trigger()
    await bus.publish(SUBJECT, message, msg_id=msg_id(message.part.inspection_id, "trigger"))

    async def refuse(delivery: Delivery[Trigger]) -> None:
        raise BadMessage("this part is refused")

    await handle_all(bus, 1, refuse)
    tracing.shutdown()
    [span] = [s for s in traced.snapshot() if s.name == "capture-trigger"]
    assert span.error


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",  # an all-zero trace id is invalid
        "00-'; DROP TABLE inspections; --",
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01" + "x" * 5000,
    ],
)
async def test_a_malformed_traceparent_starts_a_new_trace_and_the_message_is_handled(
    bus_factory, traced: OtlpReceiver, header: str
) -> None:
    bus = await bus_factory()
    message = trigger()
    # Published as any client could: the header is what it is.
    await bus.js.publish(SUBJECT, message.SerializeToString(), headers={tracing.TRACEPARENT: header})
    [delivery] = await handle_all(bus, 1)
    assert delivery.message.part.inspection_id == message.part.inspection_id
    tracing.shutdown()
    [span] = [s for s in traced.snapshot() if s.name == "capture-trigger"]
    assert span.parent_span_id == "" and not span.error
    assert delivery.trace_id is None  # nothing of it reaches the row


async def test_an_unsampled_part_has_no_trace_id(bus_factory) -> None:
    bus = await bus_factory()
    message = trigger()
    unsampled = "00-" + "a" * 32 + "-" + "b" * 16 + "-00"
    await bus.js.publish(SUBJECT, message.SerializeToString(), headers={tracing.TRACEPARENT: unsampled})
    [delivery] = await handle_all(bus, 1)
    assert delivery.trace_id is None


async def test_tracing_off_adds_no_header_and_no_span(bus_factory, receiver: OtlpReceiver) -> None:
    assert not tracing.configure(TracingSettings(), "test", "l1")  # no endpoint: off
    assert tracing.TRACER is None
    bus = await bus_factory()
    message = trigger()
    with tracing.step("trigger", parent=tracing.NEW_TRACE) as span:
        assert span is None
        await bus.publish(SUBJECT, message, msg_id=msg_id(message.part.inspection_id, "trigger"))
    [delivery] = await handle_all(bus, 1)
    assert tracing.TRACEPARENT not in (delivery.msg.headers or {})
    assert delivery.trace is None and delivery.trace_id is None
    [stored_message] = await stored(bus, SUBJECT, stream_name("trigger"))
    assert tracing.TRACEPARENT not in (stored_message.headers or {})
    assert receiver.requests == 0


def test_tracing_on_without_the_sdk_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    # An import of a module set to None in sys.modules fails, as it does where the extra is not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(tracing.TracingUnavailable, match=r"install lineguard\[tracing\]"):
        tracing.configure(TracingSettings(endpoint="http://127.0.0.1:4318/v1/traces"), "test", "l1")
    assert tracing.TRACER is None


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The services' own log set-up (configure_logging) writing to a buffer; structlog's and the root logger's
    set-up as they were afterwards, so later tests do not log into a closed stream."""
    saved, handlers = structlog.get_config(), list(logging.getLogger().handlers)
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging("test", json=True)
    try:
        yield buffer
    finally:
        structlog.configure(**saved)
        structlog.contextvars.clear_contextvars()
        logging.getLogger().handlers[:] = handlers


async def test_a_log_line_written_in_a_handler_names_the_parts_trace(
    bus_factory, traced: OtlpReceiver, json_logs: io.StringIO
) -> None:
    log = structlog.get_logger("test")
    bus = await bus_factory()
    message = trigger()
    with tracing.step("trigger", parent=tracing.NEW_TRACE):
        await bus.publish(SUBJECT, message, msg_id=msg_id(message.part.inspection_id, "trigger"))
    log.info("outside any span")

    async def handler(delivery: Delivery[Trigger]) -> None:
        log.info("in the handler", inspection_id=delivery.message.part.inspection_id)

    await handle_all(bus, 1, handler)
    tracing.shutdown()

    lines = [json.loads(line) for line in json_logs.getvalue().splitlines() if line.startswith("{")]
    [outside] = [e for e in lines if e["event"] == "outside any span"]
    [inside] = [e for e in lines if e["event"] == "in the handler"]
    [consumer] = [s for s in traced.snapshot() if s.name == "capture-trigger"]
    assert "trace_id" not in outside
    assert (inside["trace_id"], inside["span_id"]) == (consumer.trace_id, consumer.span_id)
