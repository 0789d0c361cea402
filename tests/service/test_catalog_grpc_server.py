"""The shared gRPC server (services.common.grpc_server) as the catalog and
payments run it: error model, tenancy, health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from bxb.catalog.v1 import customers_pb2, customers_pb2_grpc
from bxb.payments.v1 import payments_pb2, payments_pb2_grpc
from deploy.embedded import free_port
from services.catalog.customers import CustomerServicer
from services.common import db, grpc_server, tenancy
from services.common.errors import NotFound, error_info
from services.common.tenancy import metadata
from services.metering.backlog import IngestionBehind
from tests.conftest import Stack, organization

CATALOG_SERVICES = [
    "bxb.catalog.v1.AddOnService",
    "bxb.catalog.v1.BillableMetricService",
    "bxb.catalog.v1.CouponService",
    "bxb.catalog.v1.CustomerService",
    "bxb.catalog.v1.EventReferenceService",
    "bxb.catalog.v1.OrganizationService",
    "bxb.catalog.v1.PlanService",
    "bxb.catalog.v1.SubscriptionService",
    "bxb.catalog.v1.TaxService",
    "bxb.catalog.v1.TestClockService",
    "bxb.common.v1.ParkedMessageService",
]
PAYMENTS_SERVICES = [
    "bxb.common.v1.ParkedMessageService",
    "bxb.payments.v1.DunningCampaignService",
    "bxb.payments.v1.IntegrationService",
    "bxb.payments.v1.PaymentProviderService",
    "bxb.payments.v1.PaymentService",
    "bxb.payments.v1.StripeWebhookService",
    "bxb.payments.v1.WebhookEndpointService",
]


async def list_services(address: str) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for response in stub.ServerReflectionInfo(iter([request])):
            return sorted(s.name for s in response.list_services_response.service)
    raise AssertionError("no reflection response")


async def health_status(address: str, service: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
        return response.status


@pytest.mark.parametrize(("name", "services"), [("catalog", CATALOG_SERVICES), ("payments", PAYMENTS_SERVICES)])
async def test_health_reports_serving_for_the_server_and_each_service(stack: Stack, name, services):
    address = getattr(stack, name)
    for service in ["", *services]:
        assert await health_status(address, service) == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health_status(address, "bxb.nothing.v1.Nope")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("name", "services"), [("catalog", CATALOG_SERVICES), ("payments", PAYMENTS_SERVICES)])
async def test_reflection_lists_the_services(stack: Stack, name, services):
    assert await list_services(getattr(stack, name)) == sorted(
        [*services, health.SERVICE_NAME, reflection.SERVICE_NAME, grpc_server.REFLECTION_V1]
    )


async def test_a_call_without_organization_is_unauthenticated(stack: Stack):
    async with stack.channel("catalog") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await customers_pb2_grpc.CustomerServiceStub(channel).ListCustomers(customers_pb2.ListCustomersRequest())
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.details() == "the call carries no organization"
    info = error_info(raised.value)
    assert (info.reason, info.domain) == ("MISSING_ORGANIZATION", "bxb.dev")
    async with stack.channel("payments") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await payments_pb2_grpc.PaymentServiceStub(channel).ListPayments(
                payments_pb2.ListPaymentsRequest(), metadata=metadata("")
            )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(raised.value).reason == "MISSING_ORGANIZATION"


async def test_a_domain_error_carries_error_info_and_a_field_violation(stack: Stack):
    async with stack.channel("catalog") as channel:
        stub = customers_pb2_grpc.CustomerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListCustomers(
                customers_pb2.ListCustomersRequest(page_size=-5), metadata=metadata(await organization(stack))
            )
    status = rpc_status.from_call(raised.value)
    assert (status.code, status.message) == (
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        "page_size must not be negative",
    )
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert [status.details[0].Unpack(info), status.details[1].Unpack(bad)] == [True, True]
    assert (info.reason, info.domain, dict(info.metadata)) == ("INVALID_ARGUMENT", "bxb.dev", {"field": "page_size"})
    assert [(v.field, v.description) for v in bad.field_violations] == [("page_size", "page_size must not be negative")]


async def test_an_unknown_method_is_unimplemented(stack: Stack):
    async with stack.channel("catalog") as channel:
        call = channel.unary_unary("/bxb.catalog.v1.CustomerService/DeleteEverything")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(b"", metadata=metadata("org_any"))
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_an_unreachable_database_is_unavailable_without_details(caplog):
    """PostgreSQL refusing connections: the caller retries (UNAVAILABLE), the log says why."""
    engine = db.create_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/gone", pool_size=1)
    servicer = CustomerServicer(db.sessions(engine), None)  # GetCustomer publishes nothing
    service = grpc_server.Service(
        "broken", [grpc_server.registrar(customers_pb2, customers_pb2_grpc, "CustomerService", servicer)]
    )
    server, port = await grpc_server.start(service, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = customers_pb2_grpc.CustomerServiceStub(channel)
            with caplog.at_level(logging.WARNING, logger="bxb.grpc"), pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetCustomer(customers_pb2.GetCustomerRequest(id="c"), metadata=metadata("org_x"))
    finally:
        await grpc_server.stop(service, server, grace=0)
        await engine.dispose()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details() == "a service this one depends on is unavailable; retry"
    info = error_info(raised.value)
    assert (info.reason, dict(info.metadata)) == ("DEPENDENCY_UNAVAILABLE", {})
    [record] = [r for r in caplog.records if r.name == "bxb.grpc"]
    assert record.getMessage().startswith("/bxb.catalog.v1.CustomerService/GetCustomer: a dependency is unavailable")


class Probe(customers_pb2_grpc.CustomerServiceServicer):
    """Answers with the organization the call was bound to; can abort or dawdle."""

    def __init__(self):
        self.started = asyncio.Event()

    async def GetCustomer(self, request, context):
        if request.id == "abort":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")
        if request.id == "slow":
            self.started.set()
            await asyncio.sleep(0.5)
        return customers_pb2.Customer(id=request.id, name=tenancy.organization_id())


@pytest.fixture
async def probe():
    events: list[str] = []

    async def on_start():
        events.append("start")

    async def on_stop():
        events.append("stop")

    servicer = Probe()
    service = grpc_server.Service(
        "probe",
        [grpc_server.registrar(customers_pb2, customers_pb2_grpc, "CustomerService", servicer)],
        on_start=on_start,
        on_stop=on_stop,
    )
    server, port = await grpc_server.start(service, "127.0.0.1:0")
    assert events == ["start"]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield service, server, servicer, customers_pb2_grpc.CustomerServiceStub(channel), channel, events
    await channel.close()
    await grpc_server.stop(service, server, grace=0)


async def test_each_call_is_bound_to_its_own_organization(probe):
    _, _, _, stub, _, _ = probe
    answers = await asyncio.gather(
        *(
            stub.GetCustomer(customers_pb2.GetCustomerRequest(id=f"c{i}"), metadata=metadata(f"org_{i}"))
            for i in range(5)
        )
    )
    assert [(a.id, a.name) for a in answers] == [(f"c{i}", f"org_{i}") for i in range(5)]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetCustomer(customers_pb2.GetCustomerRequest(id="c"))
    assert error_info(raised.value).reason == "MISSING_ORGANIZATION"


async def test_a_servicers_own_abort_passes_through_unchanged(probe):
    _, _, _, stub, _, _ = probe
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetCustomer(customers_pb2.GetCustomerRequest(id="abort"), metadata=metadata("org_a"))
    assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.PERMISSION_DENIED, "not yours")


async def test_graceful_stop_reports_not_serving_and_finishes_calls_in_flight(probe):
    service, server, servicer, stub, channel, events = probe
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    statuses = aiter(watch)
    assert (await anext(statuses)).status == health_pb2.HealthCheckResponse.SERVING
    in_flight = asyncio.ensure_future(
        stub.GetCustomer(customers_pb2.GetCustomerRequest(id="slow"), metadata=metadata("org_s"))
    )
    await servicer.started.wait()
    stopping = asyncio.ensure_future(grpc_server.stop(service, server, grace=5))
    assert (await anext(statuses)).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()  # a watcher would otherwise hold the server for the whole grace period
    assert (await in_flight).name == "org_s"
    await stopping
    assert events == ["start", "stop"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetCustomer(customers_pb2.GetCustomerRequest(id="late"), metadata=metadata("org_s"))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_service_without_hooks_starts_and_stops():
    service = grpc_server.Service(
        "bare", [grpc_server.registrar(customers_pb2, customers_pb2_grpc, "CustomerService", Probe())]
    )
    server, port = await grpc_server.start(service, "127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    assert await health_status(address, "bxb.catalog.v1.CustomerService") == health_pb2.HealthCheckResponse.SERVING
    assert await list_services(address) == sorted(
        ["bxb.catalog.v1.CustomerService", health.SERVICE_NAME, reflection.SERVICE_NAME, grpc_server.REFLECTION_V1]
    )
    await grpc_server.stop(service, server, grace=0)
    response = await service.health.Check(health_pb2.HealthCheckRequest(service=""), None)
    assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING


class Relay(customers_pb2_grpc.CustomerServiceServicer):
    """Asks another service, as invoicing asks metering."""

    def __init__(self, address: str):
        self.address = address

    async def GetCustomer(self, request, context):
        async with grpc.aio.insecure_channel(self.address) as channel:
            return await customers_pb2_grpc.CustomerServiceStub(channel).GetCustomer(
                request, metadata=metadata("org_x"), timeout=5
            )


class Behind(customers_pb2_grpc.CustomerServiceServicer):
    async def GetCustomer(self, request, context):
        if request.id == "missing":
            raise NotFound("no such customer", field="id")
        raise IngestionBehind("still storing; retry in a moment")


async def test_a_backing_service_s_unavailability_is_passed_on_and_other_failures_are_internal(caplog):
    backing = grpc_server.Service(
        "backing", [grpc_server.registrar(customers_pb2, customers_pb2_grpc, "CustomerService", Behind())]
    )
    backing_server, backing_port = await grpc_server.start(backing, "127.0.0.1:0")
    relay = grpc_server.Service(
        "relay",
        [
            grpc_server.registrar(
                customers_pb2, customers_pb2_grpc, "CustomerService", Relay(f"127.0.0.1:{backing_port}")
            )
        ],
    )
    relay_server, relay_port = await grpc_server.start(relay, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{relay_port}") as channel:
            stub = customers_pb2_grpc.CustomerServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as behind:
                await stub.GetCustomer(customers_pb2.GetCustomerRequest(id="c"), metadata=metadata("org_x"))
            with caplog.at_level(logging.ERROR, logger="bxb.grpc"), pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetCustomer(customers_pb2.GetCustomerRequest(id="missing"), metadata=metadata("org_x"))
    finally:
        await grpc_server.stop(relay, relay_server, grace=0)
        await grpc_server.stop(backing, backing_server, grace=0)
    assert behind.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (behind.value.details(), error_info(behind.value).reason) == (
        "still storing; retry in a moment",
        "INGESTION_BEHIND",
    )
    # A backing service's NotFound is this service's bug, not the caller's: INTERNAL, logged.
    assert (missing.value.code(), missing.value.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    assert [r.getMessage() for r in caplog.records if r.name == "bxb.grpc"] == [
        "unhandled error in /bxb.catalog.v1.CustomerService/GetCustomer"
    ]


async def test_a_transient_failure_without_details_is_passed_on_with_its_code():
    relay = grpc_server.Service(
        "relay",
        [
            grpc_server.registrar(
                customers_pb2, customers_pb2_grpc, "CustomerService", Relay(f"127.0.0.1:{free_port()}")
            )
        ],
    )
    server, port = await grpc_server.start(relay, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await customers_pb2_grpc.CustomerServiceStub(channel).GetCustomer(
                    customers_pb2.GetCustomerRequest(id="c"), metadata=metadata("org_x")
                )
    finally:
        await grpc_server.stop(relay, server, grace=0)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(raised.value).reason == "UNAVAILABLE"
