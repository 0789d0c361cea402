"""Trust between bxb's processes: mutual TLS when BXB_TLS_DIR is set, the
service token otherwise; organization metadata and the organization and key
administration only from authenticated callers; calls only for organizations
that exist."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bxb.catalog.v1 import customers_pb2, customers_pb2_grpc, organizations_pb2, organizations_pb2_grpc
from bxb.invoicing.v1 import invoices_pb2, invoices_pb2_grpc
from bxb.metering.v1 import usage_events_pb2, usage_events_pb2_grpc
from bxb.payments.v1 import payments_pb2, payments_pb2_grpc
from deploy import certificates
from deploy.embedded import free_port
from deploy.readiness import wait_serving
from gateway.app import create_app
from gateway.config import Settings as GatewaySettings
from services.catalog import server as catalog_server
from services.common import channels, grpc_server, peers, tenancy, tls, trust
from services.common.errors import error_info
from services.common.known_organizations import KnownOrganizations
from tests.conftest import Infra, Stack, organization, unique

ORGANIZATIONS = organizations_pb2_grpc.OrganizationServiceStub


async def refused(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    info = error_info(raised.value)
    return raised.value.code(), info.reason if info is not None else ""


# Without TLS: the service token.


async def test_the_organization_and_key_administration_is_refused_to_an_unauthenticated_caller(stack: Stack):
    org = await organization(stack)
    async with grpc.aio.insecure_channel(stack.catalog) as channel:
        stub = ORGANIZATIONS(channel)
        calls = [
            stub.CreateOrganization(organizations_pb2.CreateOrganizationRequest(id=unique("org"), name="Intruder")),
            stub.CreateApiKey(organizations_pb2.CreateApiKeyRequest(organization_id=org)),
            stub.GetOrganization(organizations_pb2.GetOrganizationRequest(id=org)),
            stub.AuthenticateApiKey(organizations_pb2.AuthenticateApiKeyRequest(secret="bxb_sk_" + "x" * 32)),
        ]
        for call in calls:
            assert await refused(call) == (grpc.StatusCode.UNAUTHENTICATED, "UNTRUSTED_CALLER")
        forged = (("x-bxb-service", "0" * 64),)
        call = stub.CreateApiKey(organizations_pb2.CreateApiKeyRequest(organization_id=org), metadata=forged)
        assert await refused(call) == (grpc.StatusCode.UNAUTHENTICATED, "UNTRUSTED_CALLER")
        # The service token is what lets the same call through.
        made = await stub.CreateApiKey(
            organizations_pb2.CreateApiKeyRequest(organization_id=org), metadata=trust.service_metadata()
        )
        assert made.api_key.organization_id == org
        # Health stays open to probes.
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())  # type: ignore[attr-defined]
        assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_organization_metadata_from_an_unauthenticated_caller_is_refused(stack: Stack):
    org = await organization(stack)
    untrusted = ((tenancy.METADATA_KEY, org),)
    async with grpc.aio.insecure_channel(stack.catalog) as channel:
        stub = customers_pb2_grpc.CustomerServiceStub(channel)
        call = stub.CreateCustomer(
            customers_pb2.CreateCustomerRequest(customer=customers_pb2.Customer(id="cus_1", name="N")),
            metadata=untrusted,
        )
        assert await refused(call) == (grpc.StatusCode.UNAUTHENTICATED, "UNTRUSTED_CALLER")
        listed = await stub.ListCustomers(customers_pb2.ListCustomersRequest(), metadata=tenancy.metadata(org))
        assert list(listed.customers) == []  # nothing was written
    async with grpc.aio.insecure_channel(stack.metering) as channel:
        request = usage_events_pb2.GetEventRequest(transaction_id="t1")
        call = usage_events_pb2_grpc.EventServiceStub(channel).GetEvent(request, metadata=untrusted)
        assert await refused(call) == (grpc.StatusCode.UNAUTHENTICATED, "UNTRUSTED_CALLER")


async def test_a_call_for_an_organization_that_does_not_exist_is_refused_and_writes_nothing(stack: Stack):
    phantom = unique("org_does_not_exist")
    async with stack.channel("catalog") as channel:
        customers = customers_pb2_grpc.CustomerServiceStub(channel)
        call = customers.CreateCustomer(
            customers_pb2.CreateCustomerRequest(customer=customers_pb2.Customer(id="cus_phantom", name="P")),
            metadata=tenancy.metadata(phantom),
        )
        assert await refused(call) == (grpc.StatusCode.PERMISSION_DENIED, "UNKNOWN_ORGANIZATION")
    for address, call in (
        (stack.metering, lambda c: usage_events_pb2_grpc.EventServiceStub(c).GetEvent),
        (stack.invoicing, lambda c: invoices_pb2_grpc.InvoiceServiceStub(c).ListInvoices),
        (stack.payments, lambda c: payments_pb2_grpc.PaymentServiceStub(c).ListPayments),
    ):
        requests = {
            stack.metering: usage_events_pb2.GetEventRequest(transaction_id="t1"),
            stack.invoicing: invoices_pb2.ListInvoicesRequest(),
            stack.payments: payments_pb2.ListPaymentsRequest(),
        }
        async with channels.open_channel(address) as channel:
            rpc = call(channel)(requests[address], metadata=tenancy.metadata(phantom))
            assert await refused(rpc) == (grpc.StatusCode.PERMISSION_DENIED, "UNKNOWN_ORGANIZATION")
    # Made afterwards, the organization holds nothing from the refused call.
    await organization(stack, phantom)
    async with stack.channel("catalog") as channel:
        listed = await customers_pb2_grpc.CustomerServiceStub(channel).ListCustomers(
            customers_pb2.ListCustomersRequest(), metadata=tenancy.metadata(phantom)
        )
    assert list(listed.customers) == []


async def test_a_service_that_cannot_reach_catalog_answers_unavailable_for_an_unseen_organization():
    catalog = peers.Catalog(f"127.0.0.1:{free_port()}", timeout=2)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await catalog.organization_exists(unique("org"))
    finally:
        await catalog.close()
    assert raised.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_known_organizations_keep_a_yes_and_forget_a_no():
    asked: list[str] = []
    existing: set[str] = set()
    now = [0.0]

    async def lookup(org: str) -> bool:
        asked.append(org)
        return org in existing

    known = KnownOrganizations(lookup, negative_seconds=1.0, clock=lambda: now[0])
    assert not await known.exists("org_a")
    existing.add("org_a")
    assert not await known.exists("org_a")  # the no is kept a while
    now[0] = 1.5
    assert await known.exists("org_a")
    existing.clear()
    assert await known.exists("org_a")  # a yes is for good
    assert asked == ["org_a", "org_a"]


# With TLS: certificates of our CA.


def tls_dir(root: Path, ca: certificates.Authority, name: str) -> Path:
    return certificates.write(root / name, ca)


@pytest.fixture
async def tls_catalog(infra: Infra, tmp_path: Path, monkeypatch) -> AsyncIterator[tuple[str, Path]]:
    """A catalog serving mutual TLS with a fresh CA: (its address, the TLS directory)."""
    directory = certificates.ensure(tmp_path / "tls")
    monkeypatch.setenv("BXB_TLS_DIR", str(directory))
    url = await infra.database("catalog_trust")
    service = catalog_server.build(catalog_server.Settings("", url, infra.nats.url, api_key=""))
    server, port = await grpc_server.start(service, "127.0.0.1:0")
    yield f"127.0.0.1:{port}", directory
    await grpc_server.stop(service, server, grace=0)


def organization_request() -> organizations_pb2.CreateOrganizationRequest:
    return organizations_pb2.CreateOrganizationRequest(id=unique("org"), name="Over TLS")


async def test_a_tls_service_refuses_callers_without_a_certificate_of_its_ca(tls_catalog, tmp_path: Path):
    address, directory = tls_catalog
    ours = tls.material(str(directory))
    assert ours is not None
    stranger = tls.material(str(tls_dir(tmp_path, certificates.authority("another CA"), "stranger")))
    assert stranger is not None
    callers = [
        grpc.aio.insecure_channel(address),  # plaintext
        grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ours.ca)),  # no client certificate
        grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ours.ca, stranger.key, stranger.certificate)),
    ]
    for channel in callers:
        async with channel:
            # Even with the service token: TLS refuses at the handshake.
            call = ORGANIZATIONS(channel).CreateOrganization(
                organization_request(), metadata=trust.service_metadata(), timeout=5
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_tls_service_serves_a_caller_with_a_certificate_of_its_ca(tls_catalog, monkeypatch):
    address, directory = tls_catalog
    await wait_serving(address, timeout=10, tls_dir=str(directory))  # make run's readiness check
    ours = tls.material(str(directory))
    assert ours is not None
    # The certificate alone authenticates: no service token.
    async with grpc.aio.secure_channel(address, ours.channel_credentials()) as channel:
        made = await ORGANIZATIONS(channel).CreateOrganization(organization_request(), timeout=10)
        assert made.name == "Over TLS"
    port = address.rsplit(":", 1)[1]
    # The targets services dial: an address list and DNS, its name in the certificate.
    for target in (f"ipv4:127.0.0.1:{port},127.0.0.1:{port}", f"127.0.0.1:{port}", f"dns:///localhost:{port}"):
        async with channels.open_channel(target, timeout=10) as channel:
            request = organizations_pb2.GetOrganizationRequest(id=made.id)
            assert (await ORGANIZATIONS(channel).GetOrganization(request)).id == made.id
    # A name the certificate does not carry fails the check, unless BXB_TLS_SERVER_NAME says which to expect.
    async with grpc.aio.secure_channel(
        address, ours.channel_credentials(), options=[("grpc.ssl_target_name_override", "elsewhere")]
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await ORGANIZATIONS(channel).GetOrganization(
                organizations_pb2.GetOrganizationRequest(id=made.id), timeout=5
            )
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    monkeypatch.setenv("BXB_TLS_SERVER_NAME", "catalog")
    async with channels.open_channel(f"127.0.0.1:{port}", timeout=10) as channel:
        assert (await ORGANIZATIONS(channel).GetOrganization(organizations_pb2.GetOrganizationRequest(id=made.id))).id


async def test_the_gateway_works_end_to_end_over_mutual_tls(tls_catalog):
    address, _ = tls_catalog
    async with channels.open_channel(address) as channel:
        org = await ORGANIZATIONS(channel).CreateOrganization(organization_request())
        key = await ORGANIZATIONS(channel).CreateApiKey(organizations_pb2.CreateApiKeyRequest(organization_id=org.id))
    nowhere = f"127.0.0.1:{free_port()}"  # this test calls catalog only
    settings = GatewaySettings(
        "127.0.0.1", 0, address, nowhere, nowhere, nowhere, max_body_bytes=65536, auth_cache_seconds=30, call_timeout=10
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bxb.test",
            headers={"Authorization": f"Bearer {key.secret}"},
        ) as http,
    ):
        created = await http.post("/v1/customers", json={"id": "cus_tls", "name": "Over TLS"})
        assert created.status_code == 201, created.text
        fetched = await http.get("/v1/customers/cus_tls")
        assert fetched.status_code == 200 and fetched.json()["name"] == "Over TLS"


def test_the_server_name_a_channel_checks():
    assert tls.server_name("127.0.0.1:5") == ""  # gRPC checks the host dialled
    assert tls.server_name("dns:///catalog:50051") == ""
    assert tls.server_name("ipv4:127.0.0.1:5,127.0.0.1:6") == "127.0.0.1"
    assert tls.server_name("10.0.0.1:5,10.0.0.2:5") == "10.0.0.1"
    assert tls.server_name("ipv6:[::1]:5,[::1]:6") == "::1"
    assert tls.channel_options("catalog:5") == []
    assert tls.material("") is None


def test_the_server_name_override(monkeypatch):
    monkeypatch.setenv("BXB_TLS_SERVER_NAME", "bxb.internal")
    assert tls.channel_options("ipv4:127.0.0.1:5") == [("grpc.ssl_target_name_override", "bxb.internal")]


def test_certificates_are_kept_private_and_made_once(tmp_path: Path):
    directory = certificates.ensure(tmp_path / "tls")
    first = (directory / "tls.crt").read_bytes()
    assert directory.stat().st_mode & 0o777 == 0o700
    for name in ("ca.crt", "ca.key", "tls.crt", "tls.key"):
        assert (directory / name).stat().st_mode & 0o777 == 0o600
    assert certificates.ensure(directory) == directory
    assert (directory / "tls.crt").read_bytes() == first
