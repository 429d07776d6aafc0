"""A real OTLP/HTTP trace receiver for tests: what a collector's `otlp` receiver does, in a thread.

It listens on a free port, takes `POST /v1/traces` bodies as the OpenTelemetry exporters send them
(protobuf `ExportTraceServiceRequest`, gzip or not), decodes them with the OpenTelemetry proto
package and keeps every span, with the service (`service.name`) that sent it. Anything else is
answered 400 / 404, as a collector does, and counted, so a test sees an exporter that sends
something wrong."""

from __future__ import annotations

import gzip
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

PATH = "/v1/traces"


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # hex, 32 digits
    span_id: str  # hex, 16 digits
    parent_span_id: str  # hex; "" for a trace's root
    name: str
    service: str  # the resource's service.name
    kind: str  # SPAN_KIND_CONSUMER, ...
    attributes: dict[str, Any]
    links: tuple[str, ...]  # the span ids it links to
    error: bool  # its status is ERROR
    start_ns: int
    end_ns: int


@dataclass
class OtlpReceiver:
    host: str = "127.0.0.1"
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    refused: list[str] = field(default_factory=list)  # why each refused request was refused
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() the receiver first"
        return f"http://{self.host}:{self._server.server_address[1]}{PATH}"

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = receiver._take(self.path, self.headers.get("Content-Encoding", ""), body)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a test's output is not the place for an access log

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """The spans received so far, by trace id."""
        by_trace: dict[str, list[ReceivedSpan]] = defaultdict(list)
        for span in self.snapshot():
            by_trace[span.trace_id].append(span)
        return dict(by_trace)

    def _take(self, path: str, encoding: str, body: bytes) -> tuple[int, bytes]:
        with self._lock:
            self.requests += 1
        if path != PATH:
            return self._refuse(HTTPStatus.NOT_FOUND, f"no receiver at {path}")
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest.FromString(body)
        except (OSError, DecodeError) as exc:
            return self._refuse(HTTPStatus.BAD_REQUEST, f"not an ExportTraceServiceRequest: {exc}")
        spans: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            service = _attributes(resource_spans.resource.attributes).get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                spans.extend(_span(span, service) for span in scope_spans.spans)
        with self._lock:
            self.spans.extend(spans)
        return HTTPStatus.OK, ExportTraceServiceResponse().SerializeToString()

    def _refuse(self, status: HTTPStatus, why: str) -> tuple[int, bytes]:
        with self._lock:
            self.refused.append(why)
        return status, b""


def _span(span: Span, service: str) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=span.name,
        service=service,
        kind=Span.SpanKind.Name(span.kind),
        attributes=_attributes(span.attributes),
        links=tuple(link.span_id.hex() for link in span.links),
        error=span.status.code == Status.STATUS_CODE_ERROR,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
    )


def _attributes(attributes: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in attributes}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None
