"""Metrics, logs, request ids and tracing switches (services/common/metrics.py,
logs.py, request_ids.py, tracing.py; gateway/observability.py; the Stripe
client's measures; the Grafana dashboard), without the stack."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deploy.stack import metrics_listing
from gateway.observability import OTHER, Observing, route_of
from services.common import logs, metrics, request_ids, tracing
from services.payments.stripe_http import outcome_of, resource_of
from tests.metrics_text import sample

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "bxb-dashboard.json"


# request ids


def test_a_valid_request_id_is_kept_and_anything_else_replaced_by_a_fresh_one():
    assert request_ids.accepted("req-42_a.b:c") == "req-42_a.b:c"
    for bad in (None, "", "has space", "x" * 129, "new\nline"):
        fresh = request_ids.accepted(bad)
        assert re.fullmatch(r"[0-9a-f]{32}", fresh)
    assert request_ids.accepted(None) != request_ids.accepted(None)


def test_the_request_id_is_read_from_call_metadata():
    assert request_ids.from_metadata((("x-bxb-organization", "org"), ("x-request-id", "abc"))) == "abc"
    assert len(request_ids.from_metadata((("x-request-id", b"bytes"),))) == 32  # a binary value is not an id
    assert len(request_ids.from_metadata(None)) == 32


# logs


def record(message: str = "hello") -> logging.LogRecord:
    return logging.LogRecord("bxb.test", logging.WARNING, __file__, 1, message, None, None)


def test_log_records_are_json_lines_with_service_request_and_trace_ids():
    token = request_ids.REQUEST_ID.set("req-1")
    provider = tracing.TracerProvider()
    try:
        with provider.get_tracer("test").start_as_current_span("span") as span:
            line = record()
            assert logs.Context("metering").filter(line)
            context = span.get_span_context()
    finally:
        request_ids.REQUEST_ID.reset(token)
    fields = json.loads(logs.formatter(text=False).format(line))
    assert fields["level"] == "WARNING" and fields["logger"] == "bxb.test" and fields["message"] == "hello"
    assert fields["service"] == "metering" and fields["request_id"] == "req-1" and fields["time"]
    assert fields["trace_id"] == trace.format_trace_id(context.trace_id)
    assert fields["span_id"] == trace.format_span_id(context.span_id)


def test_outside_a_request_and_a_trace_the_ids_are_empty_and_text_format_is_plain():
    line = record("plain")
    logs.Context("gateway").filter(line)
    assert (line.request_id, line.trace_id, line.span_id) == ("", "", "")  # type: ignore[attr-defined]
    assert logs.formatter(text=True).format(line).endswith("gateway WARNING bxb.test: plain")


@pytest.mark.parametrize(("setting", "json_lines"), [("", True), ("text", False)])
def test_configure_installs_one_stderr_handler_in_the_chosen_format(monkeypatch, setting, json_lines):
    monkeypatch.setenv("BXB_LOG_FORMAT", setting)
    root = logging.getLogger()
    kept, level = list(root.handlers), root.level
    try:
        handler = logs.configure("catalog")
        assert root.handlers == [handler] and root.level == logging.INFO
        assert isinstance(handler.formatter, logs.OrjsonFormatter) == json_lines
    finally:
        root.handlers[:] = kept
        root.setLevel(level)


# metrics


async def test_a_billing_run_is_timed_with_its_outcome_and_invoices():
    before = metrics.exposition().decode()
    async with metrics.timed_run("scheduled") as made:
        made(3)
    with pytest.raises(RuntimeError):
        async with metrics.timed_run("scheduled"):
            raise RuntimeError("the database went away")
    after = metrics.exposition().decode()
    for outcome in ("ok", "failed"):
        name, labels = "bxb_billing_run_seconds_count", {"trigger": "scheduled", "outcome": outcome}
        assert sample(after, name, **labels) == sample(before, name, **labels) + 1
    assert sample(after, "bxb_billing_run_invoices_sum", trigger="scheduled") == (
        sample(before, "bxb_billing_run_invoices_sum", trigger="scheduled") + 3
    )


async def test_the_refresher_runs_its_probes_in_the_background_and_counts_failures(monkeypatch):
    monkeypatch.setattr(metrics, "PROBE_TIMEOUT", 0.05)
    twice = asyncio.Event()
    runs = []

    async def good() -> None:
        runs.append(1)
        if len(runs) == 2:
            twice.set()

    async def broken() -> None:
        raise RuntimeError("down")

    async def hanging() -> None:
        await asyncio.sleep(10)

    before = metrics.exposition().decode()
    refresher = metrics.Refresher([("good", good), ("broken", broken), ("hanging", hanging)], interval=0.01)
    refresher.start()
    await asyncio.wait_for(twice.wait(), 10)
    await refresher.stop()
    await refresher.stop()  # stopping twice is harmless
    after = metrics.exposition().decode()
    for probe in ("broken", "hanging"):
        name = "bxb_metrics_probe_failures_total"
        assert sample(after, name, probe=probe) >= sample(before, name, probe=probe) + 1
    idle = metrics.Refresher([])
    idle.start()  # no probe: no task
    assert idle._task is None


def test_the_refresh_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("BXB_METRICS_REFRESH_SECONDS", "0.5")
    assert metrics.Refresher([]).interval == 0.5
    monkeypatch.delenv("BXB_METRICS_REFRESH_SECONDS")
    assert metrics.Refresher([]).interval == metrics.REFRESH_SECONDS


async def test_a_service_serves_its_registry_over_http_where_told(monkeypatch):
    monkeypatch.setenv("BXB_METERING_METRICS_LISTEN", "127.0.0.1:0")
    assert metrics.listen_address("metering") == "127.0.0.1:0"
    assert metrics.listen_address("catalog") == ""
    server, port = metrics.serve(metrics.listen_address("metering"))
    try:
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{port}/metrics")
        assert answer.status_code == 200 and "# TYPE bxb_grpc_server_requests_total counter" in answer.text
    finally:
        metrics.stop_serving(server)


def test_make_run_lists_every_process_s_metrics_url():
    text = metrics_listing("http://127.0.0.1:8080", {"catalog": "127.0.0.1:9101", "metering": "127.0.0.1:9102"})
    assert text == (
        "Prometheus metrics (GET /metrics):\n"
        "  gateway   http://127.0.0.1:8080/metrics\n"
        "  catalog   http://127.0.0.1:9101/metrics\n"
        "  metering  http://127.0.0.1:9102/metrics\n"
    )


# labels


def test_stripe_requests_are_labelled_by_resource_and_outcome_never_by_id():
    assert resource_of("https://api.stripe.com/v1/payment_intents/pi_123/confirm") == "payment_intents"
    assert resource_of("http://127.0.0.1:4242/v1/account") == "account"
    assert resource_of("http://127.0.0.1:4242/") == "other"
    assert outcome_of(200) == ("ok", "")
    assert outcome_of(402) == ("refused", "")
    assert outcome_of(429) == ("failed", "rate_limited")
    assert outcome_of(503) == ("failed", "server_error")


def test_a_request_no_route_served_is_labelled_other():
    assert route_of({"type": "http"}) == OTHER

    class Unnamed:
        path = ""

    assert route_of({"route": Unnamed()}) == OTHER


# tracing


def test_tracing_is_off_without_an_endpoint_and_then_costs_no_interceptor(monkeypatch):
    monkeypatch.delenv(tracing.ENDPOINT, raising=False)
    monkeypatch.setattr(tracing, "provider", None)
    assert tracing.configure("catalog") is None
    assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []
    headers: dict[str, str] = {}
    with tracing.publishing("bxb.test", headers), tracing.consuming("bxb.test", headers):
        assert not trace.get_current_span().get_span_context().is_valid
    assert headers == {}


def test_an_otlp_endpoint_installs_a_provider_named_after_the_process(monkeypatch):
    monkeypatch.setenv(tracing.ENDPOINT, "http://127.0.0.1:1")
    monkeypatch.setattr(tracing, "provider", None)
    provider = tracing.configure("invoicing")
    assert provider is not None and tracing.provider is provider
    assert provider.resource.attributes["service.name"] == "bxb-invoicing"
    assert len(tracing.server_interceptors()) == 1 and len(tracing.client_interceptors()) == 4
    provider.shutdown()


def test_a_message_s_headers_carry_the_publisher_s_trace_to_its_consumer(monkeypatch):
    monkeypatch.setattr(tracing, "provider", None)
    exporter = InMemorySpanExporter()
    tracing.configure("test", exporter=exporter)
    headers: dict[str, str] = {}
    with tracing.publishing("bxb.test.v1.thing", headers):
        published = trace.get_current_span().get_span_context()
    assert headers["traceparent"].split("-")[1] == trace.format_trace_id(published.trace_id)
    with tracing.consuming("bxb.test.v1.thing", headers):
        consumed = trace.get_current_span().get_span_context()
    with tracing.consuming("bxb.test.v1.thing", None):  # a message without headers starts its own trace
        alone = trace.get_current_span().get_span_context()
    assert consumed.trace_id == published.trace_id and alone.trace_id != published.trace_id
    kinds = {span.name: span.kind for span in exporter.get_finished_spans()}
    assert kinds == {
        "bxb.test.v1.thing publish": trace.SpanKind.PRODUCER,
        "bxb.test.v1.thing process": trace.SpanKind.CONSUMER,
    }


# the dashboard


def exposed_names() -> set[str]:
    """Every sample name the registry can expose."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
    return {
        family.name + suffix for family in metrics.REGISTRY.collect() for suffix in suffixes.get(family.type, ("",))
    }


def test_the_dashboard_parses_and_queries_only_metrics_bxb_exposes():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    used = {name for expr in exprs for name in re.findall(r"\b(?:bxb|process)_[a-z_]+", expr)}
    assert used and used <= exposed_names(), used - exposed_names()
    families = {family.name for family in metrics.REGISTRY.collect() if family.name.startswith("bxb_")}
    charted = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
    assert families <= charted  # every metric of bxb's own is on the dashboard
    assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= charted
    assert all('job=~"$job"' in expr for expr in exprs)


async def test_the_gateway_middleware_passes_other_scopes_through():
    seen = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        seen.append(scope["type"])

    await Observing(app)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]
