"""End-to-end: `make run`'s processes serve Prometheus metrics where they
are told (BXB_<SVC>_METRICS_LISTEN, the gateway's own port), log JSON lines
carrying the request id and export one trace per request over OTLP/HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from deploy.embedded import free_port
from deploy.stack import SERVICES
from tests.conftest import eventually
from tests.e2e.test_stack import KEY, send_events, stack_env, start_make_run_grpc, stop_make_run, walkthrough
from tests.metrics_text import sample


class Collector:
    """An OTLP/HTTP trace receiver's findings: (service.name, span name, trace id) of every span posted."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, bytes]] = []

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            names = [a.value.string_value for a in resource.resource.attributes if a.key == "service.name"]
            for scope in resource.scope_spans:
                self.spans += [(names[0], span.name, span.trace_id) for span in scope.spans]


@contextmanager
def collector() -> Iterator[tuple[Collector, str]]:
    """A trace receiver on a free port: what it received, and its URL."""
    found = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            found.take(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield found, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.measured
@pytest.mark.timeout(300)
async def test_every_process_of_make_run_serves_metrics_logs_json_and_exports_traces(tmp_path: Path):
    listen = {name: f"127.0.0.1:{free_port()}" for name in SERVICES}
    home = tmp_path / "home"
    with collector() as (traces, endpoint):
        env = stack_env(
            home,
            BXB_API_KEY=KEY,
            BXB_BILLING_INTERVAL_SECONDS="1",
            BXB_METRICS_REFRESH_SECONDS="0.5",
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_BSP_SCHEDULE_DELAY="200",  # milliseconds between two exports
            **{f"BXB_{name.upper()}_METRICS_LISTEN": address for name, address in listen.items()},
        )
        await drive(env, listen, traces)
    lines = [
        json.loads(line) for line in (home / "logs" / "gateway.log").read_text().splitlines() if line.startswith("{")
    ]
    access = [line for line in lines if line.get("request_id") == "e2e-request-1"]
    assert access and access[0]["route"] == "/v1/customers/{id}" and access[0]["status"] == 200
    assert access[0]["logger"] == "bxb.access" and access[0]["service"] == "gateway"
    assert len(access[0]["trace_id"]) == 32  # traced: the line names its trace


async def drive(env: dict[str, str], listen: dict[str, str], traces: Collector) -> None:
    """Starts make run, sends the walkthrough's traffic, reads every process's metrics and waits for the traces."""
    process, url, _, _ = start_make_run_grpc(env)
    try:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            await walkthrough(http)
            await send_events(http)
            traced = await http.get("/v1/customers/cus_9a4b2", headers={"X-Request-Id": "e2e-request-1"})
            assert traced.status_code == 200 and traced.headers["x-request-id"] == "e2e-request-1"
            gateway = (await http.get("/metrics")).text
            events = {"route": "/v1/events", "method": "POST", "status": "200"}
            assert sample(gateway, "bxb_http_requests_total", **events) == 6
            assert sample(gateway, "bxb_http_request_seconds_count", route="/v1/events", method="POST") == 6

            async def served() -> None:
                scraped = {name: (await http.get(f"http://{address}/metrics")).text for name, address in listen.items()}
                for name, text in scraped.items():
                    assert sample(text, "bxb_grpc_server_requests_total", service=name, code="OK") > 0, name
                assert "bxb_metering_ingestion_pending_messages " in scraped["metering"]
                assert sample(scraped["invoicing"], "bxb_billing_run_seconds_count", trigger="scheduled") > 0
                for name in ("catalog", "invoicing", "payments"):
                    assert f'bxb_outbox_backlog{{service="{name}"}}' in scraped[name]
                assert "bxb_webhook_backlog " in scraped["payments"]

            await eventually(served, timeout=30, interval=0.5)

            async def traced_through() -> None:
                # The customer's read: the gateway's spans and the catalog's share one trace.
                services: dict[bytes, set[str]] = {}
                for service, name, trace_id in list(traces.spans):
                    if "GetCustomer" in name or name.startswith("GET /v1/customers/"):
                        services.setdefault(trace_id, set()).add(service)
                assert {"bxb-gateway", "bxb-catalog"} in services.values(), traces.spans[-20:]

            await eventually(traced_through, timeout=30, interval=0.5)
    finally:
        stop_make_run(process)
