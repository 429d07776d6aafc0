"""One trace per inspection: OpenTelemetry spans, carried across NATS in W3C `traceparent` headers.

The gateway opens a part's trace at its trigger; every message about the part then carries the
span it was published in (`inject`, in `Bus.publish`), and the bus worker opens a consumer span
per handled message, named after the consumer, as a child of that (`consumer_span`). A service
adds a `step` span only where the bus span does not cover the step (work that runs after the
handler returned: the inference batch, the decision's join, the PLC delivery on a deadline).

Off unless `tracing.endpoint` is set (docs/observability.md). Off, `TRACER` is None and every
function here returns at its first line: the bus adds no header and opens no span. On, spans go
to the collector over OTLP/HTTP in batches, off the event loop (the SDK's export thread)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from lineguard import __version__
from lineguard.config import TracingSettings

TRACEPARENT = "traceparent"
# An empty context: a span started in it opens a new trace (the gateway's trigger).
NEW_TRACE = Context()
# version-traceid-spanid-flags (W3C Trace Context); version ff is invalid, an all-zero id too.
_TRACEPARENT = re.compile(r"^(?!ff)[0-9a-f]{2}-(?!0{32})([0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-([0-9a-f]{2})(-.*)?$")

# The tracer of this process while tracing is on; None (the default) is tracing off.
TRACER: Tracer | None = None
_provider: Any = None
_propagator = TraceContextTextMapPropagator()
_NO_SPAN: AbstractContextManager[None] = nullcontext()


class TracingUnavailable(RuntimeError):
    """Tracing is configured but the OpenTelemetry SDK is not installed; says what to install."""


def configure(settings: TracingSettings, service: str, line: str) -> bool:
    """Start exporting this process's spans to `settings.endpoint`; False (nothing done) when it is not set."""
    global TRACER, _provider
    if settings.endpoint is None or _provider is not None:  # off, or set up already by this process's first service
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as exc:
        raise TracingUnavailable(
            f"tracing.endpoint is set ({settings.endpoint}) but the OpenTelemetry SDK is not installed ({exc.name} "
            "missing): install lineguard[tracing], or unset tracing.endpoint"
        ) from None
    resource = Resource.create(
        {
            "service.name": f"lineguard-{service}",
            "service.namespace": "lineguard",
            "service.version": __version__,
            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
            "lineguard.line": line,
        }
    )
    # The gateway samples at the trigger; every other service follows the part's traceparent, so a part is traced
    # whole or not at all.
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
    exporter = OTLPSpanExporter(
        endpoint=settings.endpoint, timeout=settings.timeout_s, certificate_file=settings.ca_file or None
    )
    provider.add_span_processor(BatchSpanProcessor(exporter, export_timeout_millis=settings.timeout_s * 1000))
    _provider, TRACER = provider, provider.get_tracer("lineguard", __version__)
    return True


def shutdown() -> None:
    """Export the spans still held and stop (a service's last step); tracing is off afterwards."""
    global TRACER, _provider
    provider, _provider, TRACER = _provider, None, None
    if provider is not None:
        provider.shutdown()


def inject(headers: dict[str, str]) -> None:
    """Add the current span's `traceparent` to a message's headers (nothing outside a span)."""
    if TRACER is not None:
        _propagator.inject(headers)


def consumer_span(consumer: str, subject: str, headers: Mapping[str, str] | None) -> AbstractContextManager[Any]:
    """The span of one handled message: a child of the span it was published in (a new trace when its header is
    missing or malformed: a message is never refused for its trace context)."""
    if TRACER is None:
        return _NO_SPAN
    return TRACER.start_as_current_span(
        consumer,
        context=_propagator.extract(headers or {}),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.destination.name": subject,
            "messaging.consumer.group.name": consumer,
        },
        record_exception=False,
        set_status_on_exception=True,
    )


def step(
    name: str,
    *,
    parent: Context | None = None,
    links: Iterable[Context | None] = (),
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> AbstractContextManager[Any]:
    """A step's span: under `parent` (a context from `current()`, a delivery's `trace`, NEW_TRACE), else under
    the current span; `links`: other contexts it continues (the decision's inputs)."""
    if TRACER is None:
        return _NO_SPAN
    span_links = [Link(c) for c in (_span_context(ctx) for ctx in links) if c is not None]
    return TRACER.start_as_current_span(name, context=parent, links=span_links, attributes=attributes)


def current() -> Context | None:
    """The context now, to continue later (a message queued for a publish that runs in another task)."""
    return otel_context.get_current() if TRACER is not None else None


def in_span() -> bool:
    """Whether a span is current (a handler's), so that a step needs no parent of its own."""
    return TRACER is not None and trace.get_current_span().get_span_context().is_valid


@contextlib.contextmanager
def _attached_context(ctx: Context) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def add_trace_ids(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: a log line written inside a sampled span names its trace and span, so a line in the logs
    leads to the part's trace (docs/observability.md). Tracing off: nothing added, one check."""
    if TRACER is None:
        return event
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid and span_context.trace_flags.sampled:
        event.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event.setdefault("span_id", format(span_context.span_id, "016x"))
    return event


def attached(ctx: Context | None) -> AbstractContextManager[None]:
    """Run under a context from `current()` (None: as it is)."""
    if TRACER is None or ctx is None:
        return _NO_SPAN
    return _attached_context(ctx)


def failed(span: Any, error: str) -> None:
    """Mark a span as failed with what went wrong (a message settled by retry or dead letter)."""
    if span is not None:
        span.set_status(Status(StatusCode.ERROR, error))


def trace_id_of(headers: Mapping[str, str] | None) -> str | None:
    """The trace id (32 hex digits) of a message's `traceparent` when the part is traced (sampled), else None.

    Read from the header, not from this process's tracer: a record names its part's trace whichever service
    exports it. A malformed header is no trace (never an error)."""
    if not headers:
        return None
    value = headers.get(TRACEPARENT)
    if value is None:
        return None
    match = _TRACEPARENT.match(value.strip())
    if match is None or not int(match.group(2), 16) & 1:
        return None
    return match.group(1)


def _span_context(ctx: Context | None) -> trace.SpanContext | None:
    if ctx is None:
        return None
    span_context = trace.get_current_span(ctx).get_span_context()
    return span_context if span_context.is_valid else None
