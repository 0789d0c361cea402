"""Prometheus metrics of one bxb process: what it serves and how it does.

Every metric lives in REGISTRY, this process's own (not prometheus_client's
global one, so a library's metrics never leak in), beside the process's CPU
and memory. Labels are bounded:
service and method names, status codes, route templates; never an
organization or resource id. A service serves the registry at
BXB_<SVC>_METRICS_LISTEN (`serve`); the gateway at its own GET /metrics.

Gauges that need a query (outbox and webhook backlogs, ingestion pending)
are refreshed in the background (`Refresher`, every REFRESH_SECONDS, each
probe within PROBE_TIMEOUT), never at scrape time: a scrape reads the last
values and never waits on PostgreSQL or NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from services.common import config

log = logging.getLogger("bxb.metrics")

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds
PlatformCollector(registry=REGISTRY)  # python_info
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds: from a millisecond call to a billing run or a Stripe request near its deadline.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
COUNT_BUCKETS = (0, 1, 5, 10, 50, 100, 500, 1000, 5000, 10000)

GRPC_REQUESTS = Counter(
    "bxb_grpc_server_requests", "gRPC calls served, by final status code", ["service", "method", "code"],
    registry=REGISTRY,
)  # fmt: skip
GRPC_SECONDS = Histogram(
    "bxb_grpc_server_request_seconds", "Time serving a gRPC call", ["service", "method"],
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
HTTP_REQUESTS = Counter(
    "bxb_http_requests", "Gateway HTTP requests, by route template and status", ["route", "method", "status"],
    registry=REGISTRY,
)  # fmt: skip
HTTP_SECONDS = Histogram(
    "bxb_http_request_seconds", "Time answering a gateway HTTP request", ["route", "method"],
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
INGESTION_PENDING = Gauge(
    "bxb_metering_ingestion_pending_messages",
    "Messages of accepted events not yet stored (counted): the depth of metering's intake work queue",
    registry=REGISTRY,
)
INGESTION_LAG = Gauge(
    "bxb_metering_ingestion_lag_seconds",
    "Age of the oldest accepted event message not yet stored (0 when none waits)",
    registry=REGISTRY,
)
EVENTS_QUEUED = Counter(
    "bxb_metering_events_queued", "Usage events accepted into metering's intake queue", registry=REGISTRY
)
EVENTS_STORED = Counter(
    "bxb_metering_events_stored",
    "Usage events the intake consumer handled: stored (or found stored before), or listed as rejected",
    registry=REGISTRY,
)  # fmt: skip
BILLING_RUN_SECONDS = Histogram(
    "bxb_billing_run_seconds", "Duration of a billing run", ["trigger", "outcome"], buckets=RUN_BUCKETS,
    registry=REGISTRY,
)  # fmt: skip
BILLING_RUN_INVOICES = Histogram(
    "bxb_billing_run_invoices", "Invoices a billing run created or finalized", ["trigger"], buckets=COUNT_BUCKETS,
    registry=REGISTRY,
)  # fmt: skip
OUTBOX_BACKLOG = Gauge("bxb_outbox_backlog", "Outbox rows not yet published to NATS", ["service"], registry=REGISTRY)
WEBHOOK_BACKLOG = Gauge("bxb_webhook_backlog", "Webhook and integration deliveries pending", registry=REGISTRY)
STRIPE_SECONDS = Histogram(
    "bxb_stripe_request_seconds", "Time of one HTTP request to Stripe, by API resource", ["resource", "outcome"],
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
STRIPE_FAILURES = Counter(
    "bxb_stripe_request_failures",
    "Stripe requests that failed: unreachable, cut by bxb's deadline, rate limited (429) or a 5xx answer",
    ["resource", "reason"], registry=REGISTRY,
)  # fmt: skip
PROBE_FAILURES = Counter(
    "bxb_metrics_probe_failures", "Background gauge refreshes that failed or timed out", ["probe"],
    registry=REGISTRY,
)  # fmt: skip

REFRESH_SECONDS = 5.0  # default interval between two refreshes of the queried gauges
PROBE_TIMEOUT = 2.0  # seconds one probe may take; past it the gauge keeps its last value


def exposition() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)


@contextlib.asynccontextmanager
async def timed_run(trigger: str) -> AsyncIterator[Callable[[int], None]]:
    """Times a billing run; the caller reports the invoices it made with the
    yielded function. A run that raises is timed with outcome="failed"."""
    started = time.perf_counter()
    outcome = "failed"

    def made(invoices: int) -> None:
        BILLING_RUN_INVOICES.labels(trigger).observe(invoices)

    try:
        yield made
        outcome = "ok"
    finally:
        BILLING_RUN_SECONDS.labels(trigger, outcome).observe(time.perf_counter() - started)


Probe = tuple[str, Callable[[], Awaitable[None]]]
"""A named refresh: queries what it measures and sets its gauge."""


class Refresher:
    """Runs each probe every `interval` seconds in the background, each
    within PROBE_TIMEOUT; a failing probe is counted and logged, not fatal."""

    def __init__(self, probes: Sequence[Probe], interval: float | None = None):
        self.probes = list(probes)
        self.interval = (
            interval if interval is not None else config.env_float("BXB_METRICS_REFRESH_SECONDS", REFRESH_SECONDS)
        )
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Runs every probe once."""
        for name, probe in self.probes:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await probe()
            except Exception as error:
                PROBE_FAILURES.labels(name).inc()
                log.warning("refreshing %s failed: %r", name, error)

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self.probes:
            self._task = asyncio.create_task(self._run(), name="metrics-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def listen_address(service: str) -> str:
    """BXB_<SVC>_METRICS_LISTEN, where a service serves /metrics; empty: not served."""
    return config.env_str(f"BXB_{service.upper()}_METRICS_LISTEN", "")


def serve(address: str) -> tuple[WSGIServer, int]:
    """Serves the registry over HTTP at `address` (host:port, port 0 for any)
    from a daemon thread; the server (shut it down with `stop_serving`) and its port."""
    host, _, port = address.rpartition(":")
    server, _ = start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=REGISTRY)
    return server, server.server_port


def stop_serving(server: WSGIServer) -> None:
    server.shutdown()
    server.server_close()
