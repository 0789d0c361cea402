"""Webhook URLs against SSRF where private addresses are not allowed (as in
production; the test stack allows them): internal addresses refused naming
the field, public ones taken, lookups bounded in time."""

from __future__ import annotations

import ipaddress

import pytest

from bxb.payments.v1 import webhook_endpoints_pb2 as pb
from services.common import db, tenancy
from services.common.errors import InvalidArgument
from services.payments.announcing import Announcer
from services.payments.webhook_endpoints import WebhookEndpointServicer
from services.payments.webhook_urls import Refused, checked_url, refusal, resolve
from tests.conftest import Infra, Stack


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/hook", "loopback address 127.0.0.1"),
        ("http://localhost:8080/hook", "loopback address 127.0.0.1"),
        ("https://10.1.2.3/", "private address 10.1.2.3"),
        ("https://192.168.0.10/", "private address 192.168.0.10"),
        ("http://169.254.169.254/latest/meta-data/", "link-local address 169.254.169.254"),
        ("http://[fe80::1]/", "link-local address fe80::1"),
        ("http://[fd00::1]/", "private address fd00::1"),
        ("http://[::1]/", "loopback address ::1"),
        ("http://[::ffff:127.0.0.1]/", "loopback address 127.0.0.1"),
        ("http://100.64.0.1/", "carrier-grade NAT address 100.64.0.1"),
        ("http://224.0.0.1/", "multicast address 224.0.0.1"),
        ("http://0.0.0.0/", "unspecified address 0.0.0.0"),
        ("http://240.0.0.1/", "reserved address 240.0.0.1"),
        ("http://192.0.2.1/", "private address 192.0.2.1"),  # documentation
        ("http://[2001:db8::1]/", "private address 2001:db8::1"),
        ("http://no-such-host.invalid/", "could not be resolved"),
    ],
)
async def test_an_internal_or_unresolvable_address_is_refused(url: str, reason: str):
    with pytest.raises(InvalidArgument) as refused:
        await checked_url(url, allow_private=False)
    assert refused.value.field == "webhook_endpoint.url"
    assert reason in refused.value.message
    assert await checked_url(url, allow_private=True) == url  # the operator may allow them


@pytest.mark.parametrize("url", ["https://93.184.216.34/hook", "http://[2606:4700:4700::1111]:8443/x"])
async def test_a_public_address_is_taken(url: str):
    assert await checked_url(url, allow_private=False) == url


async def test_a_lookup_past_its_deadline_is_refused():
    with pytest.raises(Refused, match="could not be resolved within 0 s"):
        await resolve("slow.example.com", 443, timeout=0)
    assert refusal(ipaddress.ip_address("8.8.8.8")) == ""


async def test_the_service_refuses_an_internal_url_when_private_addresses_are_not_allowed(infra: Infra, stack: Stack):
    engine = db.create_engine(infra.postgres.url("payments"), pool_size=1)
    servicer = WebhookEndpointServicer(db.sessions(engine), Announcer({}), lambda: None, allow_private=False)
    token = tenancy.bind("org_ssrf")
    try:
        request = pb.CreateWebhookEndpointRequest(
            webhook_endpoint=pb.WebhookEndpoint(url="http://169.254.169.254/latest/meta-data/")
        )
        with pytest.raises(InvalidArgument) as refused:
            await servicer.CreateWebhookEndpoint(request, None)  # type: ignore[arg-type]
        assert refused.value.field == "webhook_endpoint.url"
        assert "link-local" in refused.value.message
        listed = await servicer.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest(), None)  # type: ignore[arg-type]
        assert list(listed.webhook_endpoints) == []
    finally:
        tenancy.reset(token)
        await engine.dispose()
