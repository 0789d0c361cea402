"""OpenTelemetry traces across the gateway, gRPC and NATS, exported when
configured.

`configure(process)` (each process's main) builds a TracerProvider named
bxb-<process> exporting over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (the
standard variable; OTEL_EXPORTER_OTLP_* configure the exporter) is set.
Without it nothing is installed: no interceptor, no middleware, no span, so
tracing costs nothing. With it, gRPC servers and channels get
opentelemetry-instrumentation-grpc's interceptors, the gateway its ASGI
middleware (gateway/observability.py), and NATS messages carry W3C traceparent in their headers
(`publishing`, `consuming`), so gateway -> service -> NATS -> service is
one trace.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor, filters
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"

# Health checks (readiness and liveness probes, every few seconds) are not traced.
NOT_HEALTH = filters.negate(filters.health_check())
UNTRACED_PATHS = "/health$,/metrics$"  # the gateway's, likewise (regular expressions)

# The provider spans go to; None until `configure` finds somewhere to send them.
provider: TracerProvider | None = None


def configure(process: str, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Installs the process's provider when OTEL_EXPORTER_OTLP_ENDPOINT is set
    (batched OTLP/HTTP export) or an `exporter` is given (each span handed
    to it as it ends: tests); else leaves tracing off. Returns the provider."""
    global provider
    if exporter is None and not os.environ.get(ENDPOINT):
        return None
    made = TracerProvider(resource=Resource.create({SERVICE_NAME: f"bxb-{process}"}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        made.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        made.add_span_processor(SimpleSpanProcessor(exporter))
    provider = made
    return made


def server_interceptors() -> list[Any]:
    """What a gRPC server adds to trace the calls it serves."""
    if provider is None:
        return []
    return [aio_server_interceptor(tracer_provider=provider, filter_=NOT_HEALTH)]  # type: ignore[no-untyped-call]  # unannotated library


def client_interceptors() -> list[Any]:
    """What a channel adds to trace its calls and pass the trace on."""
    if provider is None:
        return []
    return list(aio_client_interceptors(tracer_provider=provider, filter_=NOT_HEALTH))  # type: ignore[no-untyped-call]  # unannotated library


@contextlib.contextmanager
def publishing(subject: str, headers: MutableMapping[str, str]) -> Iterator[None]:
    """A producer span around publishing to `subject`, its context put in `headers`."""
    if provider is None:
        yield
        return
    tracer = provider.get_tracer("bxb.bus")
    with tracer.start_as_current_span(f"{subject} publish", kind=trace.SpanKind.PRODUCER):
        propagate.inject(headers)
        yield


@contextlib.contextmanager
def consuming(subject: str, headers: Mapping[str, str] | None) -> Iterator[None]:
    """A consumer span around handling a message of `subject`, continuing
    the trace its `headers` carry (a new one when they carry none)."""
    if provider is None:
        yield
        return
    tracer = provider.get_tracer("bxb.bus")
    parent = propagate.extract(dict(headers or {}))
    with tracer.start_as_current_span(f"{subject} process", context=parent, kind=trace.SpanKind.CONSUMER):
        yield
