"""Observability through the running stack: each process's /metrics after
traffic, domain gauges that move, the access log and the request id from the
gateway into the services, and one trace from the gateway through the catalog
and across NATS."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

import grpc
import httpx
import nats
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.api import RetentionPolicy, StreamConfig
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bxb.catalog.v1 import organizations_pb2, organizations_pb2_grpc
from gateway.app import create_app
from gateway.config import Settings as GatewaySettings
from services.catalog import server as catalog_server
from services.catalog.models import Outbox
from services.common import bus, channels, db, grpc_server, logs, metrics, outbox, request_ids, tracing
from services.common.ids import new_id
from services.metering.backlog import Backlog
from services.payments.backlog import webhook_backlog
from services.payments.models import DELIVERY_PENDING, Announcement, Base, Delivery
from services.payments.stripe_http import MeasuredHTTPXClient
from tests.conftest import Infra, Stack, Tenant, eventually, start, unique
from tests.metrics_text import label_values, sample


def exposed() -> str:
    return metrics.exposition().decode()


class Records(logging.Handler):
    """Keeps the records of one logger, passed through bxb's log filter."""

    def __init__(self, name: str):
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(logs.Context("test"))
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> Records:
        self.logger.addHandler(self)
        self.level_was = self.logger.level
        self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_was)


# metrics after traffic


async def test_the_gateway_counts_and_times_requests_by_route_template_and_logs_each(tenant: Tenant):
    customer = unique("cus")
    before = exposed()
    with Records("bxb.access") as access:
        created = await tenant.http.post("/v1/customers", json={"external_id": customer, "name": "Acme"})
        assert created.status_code == 201, created.text
        for _ in range(2):
            assert (await tenant.http.get(f"/v1/customers/{customer}")).status_code == 200
        assert (await tenant.http.get(f"/v1/customers/{unique('cus')}")).status_code == 404
        assert (await tenant.http.get(f"/v1/nowhere/{customer}")).status_code == 404
        assert (await tenant.http.request("BREW", "/v1/customers")).status_code == 405
        scraped = await tenant.http.get("/metrics", headers={"Authorization": ""})  # no key needed
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    after = scraped.text
    route = "/v1/customers/{id}"
    counts = {
        ("/v1/customers", "POST", "201"): 1,
        (route, "GET", "200"): 2,
        (route, "GET", "404"): 1,
        ("other", "GET", "404"): 1,
        ("/v1/customers", "other", "405"): 1,
    }
    for (path, method, status), count in counts.items():
        labels = {"route": path, "method": method, "status": status}
        assert (
            sample(after, "bxb_http_requests_total", **labels) - sample(before, "bxb_http_requests_total", **labels)
            == count
        )
    name = "bxb_http_request_seconds_count"
    assert sample(after, name, route=route, method="GET") - sample(before, name, route=route, method="GET") == 3
    assert sample(after, "bxb_http_request_seconds_sum", route=route, method="GET") > 0
    assert customer not in after and tenant.organization_id not in after  # ids never become labels
    lines = [r for r in access.records if getattr(r, "path", "") == f"/v1/customers/{customer}"]
    assert len(lines) == 2
    line = lines[0]
    assert (line.method, line.route, line.status) == ("GET", route, 200)  # type: ignore[attr-defined]
    assert line.organization_id == tenant.organization_id and line.duration_ms > 0  # type: ignore[attr-defined]
    assert len(line.request_id) == 32  # type: ignore[attr-defined]
    assert line.key_id  # type: ignore[attr-defined]  # the key it authenticated with


async def test_each_service_serves_its_calls_by_method_and_code_on_its_metrics_port(tenant: Tenant, stack: Stack):
    customer = unique("cus")
    before = exposed()
    assert (await tenant.http.post("/v1/customers", json={"external_id": customer})).status_code == 201
    assert (await tenant.http.get(f"/v1/customers/{unique('cus')}")).status_code == 404
    event = {
        "transaction_id": unique("txn"),
        "customer_id": customer,
        "code": "nothing",
        "timestamp": "2026-09-15T00:00:00Z",
    }
    await tenant.http.post("/v1/events", json=event)
    assert (await tenant.http.get(f"/v1/customers/{customer}/invoices")).status_code == 200
    assert (await tenant.http.get("/v1/payments")).status_code == 200
    server, port = metrics.serve("127.0.0.1:0")
    try:
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        metrics.stop_serving(server)
    assert answer.status_code == 200
    after = answer.text
    name = "bxb_grpc_server_requests_total"
    create = {"service": "catalog", "method": "bxb.catalog.v1.CustomerService/CreateCustomer", "code": "OK"}
    missing = {"service": "catalog", "method": "bxb.catalog.v1.CustomerService/GetCustomer", "code": "NOT_FOUND"}
    for labels in (create, missing):
        assert sample(after, name, **labels) - sample(before, name, **labels) >= 1
    assert {"catalog", "metering", "invoicing", "payments"} <= label_values(after, name, "service")
    for service in ("metering", "invoicing", "payments"):
        assert sample(after, name, service=service) > sample(before, name, service=service)
    seconds = "bxb_grpc_server_request_seconds_count"
    labels = {"service": "catalog", "method": create["method"]}
    assert sample(after, seconds, **labels) - sample(before, seconds, **labels) >= 1


# request ids


async def test_the_request_id_round_trips_and_reaches_the_services(tenant: Tenant):
    with Records("bxb.access") as access:
        given = await tenant.http.get("/v1/customers", headers={"X-Request-Id": "req-observe-1"})
        refused = await tenant.http.get("/v1/customers", headers={"X-Request-Id": "not valid"})
    assert given.headers["x-request-id"] == "req-observe-1"
    assert refused.headers["x-request-id"] != "not valid" and len(refused.headers["x-request-id"]) == 32
    ids = [record.request_id for record in access.records if record.path == "/v1/customers"]  # type: ignore[attr-defined]
    assert ids == ["req-observe-1", refused.headers["x-request-id"]]
    fields = json.loads(logs.formatter(text=False).format(access.records[0]))
    assert fields["request_id"] == "req-observe-1" and fields["logger"] == "bxb.access"


PROBE = "bxb.test.Probe"


def probe_registrar(seen: list[str]) -> grpc_server.Registrar:
    """A service answering Log (it logs, and notes the request id it was
    called under) and Sleep (it outlasts any deadline)."""
    log = logging.getLogger("bxb.test.probe")

    async def note(request: empty_pb2.Empty, context: grpc_server.Context) -> empty_pb2.Empty:
        seen.append(request_ids.REQUEST_ID.get())
        log.info("probed")
        return empty_pb2.Empty()

    async def sleep(request: empty_pb2.Empty, context: grpc_server.Context) -> empty_pb2.Empty:
        await asyncio.sleep(30)
        raise AssertionError("the deadline cancels it")

    def handler(method):  # type: ignore[no-untyped-def]
        return grpc.unary_unary_rpc_method_handler(
            method,
            request_deserializer=empty_pb2.Empty.FromString,
            response_serializer=empty_pb2.Empty.SerializeToString,
        )

    def register(server: grpc.aio.Server) -> str:
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(PROBE, {"Log": handler(note), "Sleep": handler(sleep)})]
        )
        return PROBE

    return register


async def test_a_service_logs_under_the_caller_s_request_id_and_counts_cancelled_calls():
    seen: list[str] = []
    service = grpc_server.Service(name="probe", registrars=[probe_registrar(seen)])
    server, address = await start(service)
    before = exposed()
    try:
        channel = channels.open_channel(address)
        call = channel.unary_unary(
            f"/{PROBE}/Log",
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString,
        )
        sleep = channel.unary_unary(
            f"/{PROBE}/Sleep",
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString,
        )
        with Records("bxb.test.probe") as probed:
            token = request_ids.REQUEST_ID.set("req-through-grpc")
            try:
                await call(empty_pb2.Empty())
            finally:
                request_ids.REQUEST_ID.reset(token)
            await call(empty_pb2.Empty())  # outside a request: the service makes an id of its own
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await sleep(empty_pb2.Empty(), timeout=0.2)
        assert cut.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await channel.close()
    finally:
        await grpc_server.stop(service, server, grace=0.5)
    assert seen[0] == "req-through-grpc" and len(seen[1]) == 32
    assert [record.request_id for record in probed.records] == seen  # type: ignore[attr-defined]

    async def counted() -> None:
        labels = {"service": "probe", "method": f"{PROBE}/Sleep", "code": "CANCELLED"}
        assert (
            sample(exposed(), "bxb_grpc_server_requests_total", **labels)
            - sample(before, "bxb_grpc_server_requests_total", **labels)
            == 1
        )

    await eventually(counted)


# domain gauges


async def test_the_outbox_backlog_counts_rows_not_yet_published(infra: Infra):
    engine = db.create_engine(await infra.database(unique("obs_outbox")), pool_size=1)
    async with engine.begin() as connection:
        await connection.run_sync(Outbox.metadata.create_all, tables=[Outbox])
    sessions = db.sessions(engine)
    name = unique("svc")
    relay = outbox.OutboxRelay(sessions, Outbox, bus.Bus(infra.nats.url, name))  # never opened: nothing publishes
    try:
        refresher = metrics.Refresher([relay.probe()])
        await refresher.refresh()
        assert sample(exposed(), "bxb_outbox_backlog", service=name) == 0
        async with sessions() as session, session.begin():
            events = [Event(new_id("evt"), "org_obs") for _ in range(3)]
            await outbox.enqueue(session, Outbox, "bxb.catalog.v1.test", *events)
        await refresher.refresh()
        assert sample(exposed(), "bxb_outbox_backlog", service=name) == 3
    finally:
        await engine.dispose()


class Event:
    def __init__(self, event_id: str, organization_id: str):
        self.event_id, self.organization_id = event_id, organization_id

    def SerializeToString(self, *, deterministic: bool = False) -> bytes:
        return self.event_id.encode()


async def test_the_webhook_backlog_counts_pending_deliveries(infra: Infra):
    engine = db.create_engine(await infra.database(unique("obs_payments")), pool_size=1)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    sessions = db.sessions(engine)
    measure = webhook_backlog(sessions)
    try:
        await measure()
        assert sample(exposed(), "bxb_webhook_backlog") == 0
        async with sessions() as session, session.begin():
            announcement = Announcement(
                id=new_id("evt"), organization_id="org_obs", type="customer.created", source_key=unique("src"),
                occur_time=datetime.now(UTC), payload="{}",
            )  # fmt: skip
            session.add(announcement)
            await session.flush()
            for status in (DELIVERY_PENDING, DELIVERY_PENDING, "DELIVERY_STATUS_SUCCEEDED"):
                session.add(
                    Delivery(
                        id=new_id("dlv"), organization_id="org_obs", announcement_id=announcement.id,
                        sink_id="we_1", sequence=announcement.sequence, status=status,
                    )
                )  # fmt: skip
        await measure()
        assert sample(exposed(), "bxb_webhook_backlog") == 2
    finally:
        await engine.dispose()


async def test_ingestion_gauges_show_messages_waiting_and_the_oldest_s_age(infra: Infra):
    connection = await nats.connect(infra.nats.url)
    js = connection.jetstream()
    stream = unique("OBS_INTAKE").upper()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"], retention=RetentionPolicy.WORK_QUEUE))
    backlog = Backlog(js, stream, timeout=1.0)
    try:
        await backlog.measure()
        assert sample(exposed(), "bxb_metering_ingestion_pending_messages") == 0
        assert sample(exposed(), "bxb_metering_ingestion_lag_seconds") == 0
        for n in range(3):
            await js.publish(f"{stream}.org", b"%d" % n)
        await asyncio.sleep(0.05)
        await backlog.measure()
        assert sample(exposed(), "bxb_metering_ingestion_pending_messages") == 3
        assert sample(exposed(), "bxb_metering_ingestion_lag_seconds") > 0
    finally:
        await js.delete_stream(stream)
        await connection.close()


async def test_metering_counts_events_queued_and_stored(tenant: Tenant):
    before = exposed()
    for _ in range(3):
        event = {
            "transaction_id": unique("txn"),
            "customer_id": "cus_obs",
            "code": "nothing",
            "timestamp": "2026-09-15T00:00:00Z",
        }
        assert (await tenant.http.post("/v1/events", json=event)).status_code == 200

    async def stored() -> None:
        after = exposed()
        for name in ("bxb_metering_events_queued_total", "bxb_metering_events_stored_total"):
            assert sample(after, name) - sample(before, name) >= 3, name

    await eventually(stored, timeout=30)  # a message its store failed is retried after a backoff


async def test_billing_runs_are_timed_with_the_invoices_they_made(tenant: Tenant):
    name = "bxb_billing_run_seconds_count"
    before = exposed()
    assert await tenant.bill() == 0
    after = exposed()
    assert (
        sample(after, name, trigger="requested", outcome="ok") - sample(before, name, trigger="requested", outcome="ok")
        >= 1
    )
    assert sample(after, "bxb_billing_run_invoices_count", trigger="requested") > sample(
        before, "bxb_billing_run_invoices_count", trigger="requested"
    )


async def test_stripe_calls_are_timed_by_resource_and_failures_counted(stripe_tenant: Tenant, stack: Stack):
    after = exposed()
    assert sample(after, "bxb_stripe_request_seconds_count", outcome="ok") > 0  # connecting the account asked Stripe
    assert label_values(after, "bxb_stripe_request_seconds_count", "resource") - {"other"}

    before = exposed()
    client = MeasuredHTTPXClient(timeout=2)
    unreachable = "http://127.0.0.1:1/v1/customers"
    with pytest.raises(Exception, match="communicating with Stripe"):
        await client.request_async("get", unreachable, {})

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    hanging = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = hanging.sockets[0].getsockname()[1]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.request_async("get", f"http://127.0.0.1:{port}/v1/payment_intents/pi_1", {})
    hanging.close()
    after = exposed()
    failures = "bxb_stripe_request_failures_total"
    for resource, reason in (("customers", "unreachable"), ("payment_intents", "deadline")):
        assert (
            sample(after, failures, resource=resource, reason=reason)
            - sample(before, failures, resource=resource, reason=reason)
            == 1
        )
    seconds = "bxb_stripe_request_seconds_count"
    assert (
        sample(after, seconds, resource="payment_intents", outcome="cancelled")
        - sample(before, seconds, resource="payment_intents", outcome="cancelled")
        == 1
    )


# traces


async def test_one_request_is_one_trace_from_the_gateway_through_the_catalog_and_over_nats(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(tracing, "provider", None)
    exporter = InMemorySpanExporter()
    tracing.configure("test", exporter=exporter)
    catalog = catalog_server.build(
        catalog_server.Settings("", await infra.database(unique("obs_catalog")), infra.nats.url, "")
    )
    server, address = await start(catalog)
    try:
        async with channels.open_channel(address) as channel:
            stub = organizations_pb2_grpc.OrganizationServiceStub(channel)
            org = await stub.CreateOrganization(organizations_pb2.CreateOrganizationRequest(name="Traced"))
            key = await stub.CreateApiKey(organizations_pb2.CreateApiKeyRequest(organization_id=org.id))
        exporter.clear()
        settings = GatewaySettings("127.0.0.1", 0, address, "127.0.0.1:1", "127.0.0.1:1", "127.0.0.1:1", 65536, 30, 30)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bxb.test") as http:
                # Probes are not traced: the gateway's /health and /metrics, a service's gRPC health.
                assert (await http.get("/health")).status_code == (await http.get("/metrics")).status_code == 200
                async with channels.open_channel(address) as channel:
                    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
                assert not [s for s in exporter.get_finished_spans() if s.kind != trace.SpanKind.PRODUCER]
                answer = await http.post(
                    "/v1/customers",
                    json={"external_id": unique("cus")},
                    headers={"Authorization": f"Bearer {key.secret}"},
                )
                finished = exporter.get_finished_spans()  # the POST's
                before = exposed()
                auth = {"Authorization": f"Bearer {key.secret}"}
                assert (await http.get(f"/v1/customers/{unique('cus')}", headers=auth)).status_code == 404
        missing = {"service": "catalog", "method": "bxb.catalog.v1.CustomerService/GetCustomer", "code": "NOT_FOUND"}
        name = "bxb_grpc_server_requests_total"
        assert sample(exposed(), name, **missing) - sample(before, name, **missing) >= 1  # traced, still counted
        assert answer.status_code == 201, answer.text
        # The request's spans (the catalog's outbox relay publishes its event in a trace of its own).
        spans = [s for s in finished if s.kind in (trace.SpanKind.SERVER, trace.SpanKind.CLIENT)]
        kinds = {span.kind for span in spans}
        assert {trace.SpanKind.SERVER, trace.SpanKind.CLIENT} <= kinds
        served = [s for s in spans if s.kind == trace.SpanKind.SERVER and "CreateCustomer" in s.name]
        called = [s for s in spans if s.kind == trace.SpanKind.CLIENT and "CreateCustomer" in s.name]
        assert served and called, [s.name for s in spans]
        assert served[0].parent is not None and served[0].parent.span_id == called[0].context.span_id
        assert len({span.context.trace_id for span in spans}) == 1  # gateway, its calls and the catalog: one trace

        # Across NATS: a consumer continues the trace of what it handles.
        events = await bus.Bus.connect(infra.nats.url, "obs")
        stream = bus.Stream(unique("OBS_TRACE").upper(), (f"{unique('obs')}.>",))
        subject = stream.subjects[0].replace(">", "thing")
        handled: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def handler(subject: str, payload: bytes) -> None:
            handled.set_result(trace.get_current_span().get_span_context().trace_id)

        await events.consume(stream, "obs", None, handler)
        tracer = tracing.provider.get_tracer("test")  # type: ignore[union-attr]
        with tracer.start_as_current_span("request") as root:
            await events.publish(subject, b"x", unique("msg"))
        assert await asyncio.wait_for(handled, 10) == root.get_span_context().trace_id
        await events.js.delete_stream(stream.name)
        await events.close()
    finally:
        await grpc_server.stop(catalog, server, grace=0.5)
