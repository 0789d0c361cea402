"""Webhook endpoints through the gateway: created with their secret shown
once, read, listed, changed, removed; bad input refused naming the field;
another organization's endpoint not found; the event catalog."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from bxb.payments.v1 import webhook_endpoints_pb2 as pb
from bxb.payments.v1 import webhook_endpoints_pb2_grpc
from services.common import tenancy
from services.common.errors import error_info
from services.payments.event_catalog import CATALOG
from tests.conftest import Stack, Tenant
from tests.service.webhook_helpers import endpoint


async def test_an_endpoint_is_created_with_its_secret_shown_once_then_read_listed_and_removed(tenant: Tenant):
    h = tenant.http
    created = await endpoint(tenant, "https://hooks.example.com/bxb", event_types=["invoice.paid"], description="ERP")
    assert created["id"].startswith("we_")
    assert created["secret"].startswith("whsec_") and len(created["secret"]) == len("whsec_") + 32
    assert (created["url"], created["event_types"], created["enabled"]) == (
        "https://hooks.example.com/bxb",
        ["invoice.paid"],
        True,
    )
    assert created["description"] == "ERP"
    read = await h.get(f"/v1/webhook_endpoints/{created['id']}")
    assert read.status_code == 200
    assert not read.json().get("secret")
    assert read.json() == {**created, "secret": read.json().get("secret")}
    off = await endpoint(tenant, "http://203.0.113.9:8080/x", enabled=False)
    assert off["enabled"] is False
    listed = (await h.get("/v1/webhook_endpoints", params={"page_size": 1})).json()
    assert [e["id"] for e in listed["webhook_endpoints"]] == [created["id"]]
    rest = (await h.get("/v1/webhook_endpoints", params={"page_token": listed["next_page_token"]})).json()
    assert [e["id"] for e in rest["webhook_endpoints"]] == [off["id"]]
    assert not any(e.get("secret") for e in listed["webhook_endpoints"] + rest["webhook_endpoints"])
    removed = await h.delete(f"/v1/webhook_endpoints/{created['id']}")
    assert removed.status_code == 204
    assert (await h.get(f"/v1/webhook_endpoints/{created['id']}")).status_code == 404
    assert (await h.delete(f"/v1/webhook_endpoints/{created['id']}")).status_code == 404


async def test_updating_changes_only_the_fields_given(tenant: Tenant, stack: Stack):
    h = tenant.http
    created = await endpoint(tenant, "https://a.example.com/hook", event_types=["invoice.paid"])
    path = f"/v1/webhook_endpoints/{created['id']}"
    changed = await h.patch(path, json={"url": "https://b.example.com/hook", "event_types": [], "description": "all"})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["url"], body["event_types"], body["description"], body["enabled"]) == (
        "https://b.example.com/hook",
        [],
        "all",
        True,
    )
    assert not body.get("secret")
    off = await h.patch(path, json={"enabled": False})
    assert off.json().get("enabled") is False, off.text
    again = await h.patch(path, json={"enabled": False})
    assert again.json()["enabled"] is False
    on = await h.patch(path, json={"enabled": True})
    assert on.json()["enabled"] is True
    missing = await h.patch("/v1/webhook_endpoints/we_nope", json={"description": "x"})
    assert (missing.status_code, missing.json()["error"]["field"]) == (404, "id")
    async with stack.channel("payments") as channel:
        stub = webhook_endpoints_pb2_grpc.WebhookEndpointServiceStub(channel)
        for paths in ([], ["secret"], ["url", "id"]):
            request = pb.UpdateWebhookEndpointRequest(
                webhook_endpoint=pb.WebhookEndpoint(id=created["id"], url="https://c.example.com"),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.UpdateWebhookEndpoint(request, metadata=tenancy.metadata(tenant.organization_id))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(refused.value).metadata["field"] == "update_mask"
    assert (await h.get(path)).json()["url"] == "https://b.example.com/hook"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://files.example.com/hook", "http or https"),
        ("https:///no-host", "must name a host"),
        ("https://user:secret@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com:99999/x", "invalid port"),
    ],
)
async def test_a_url_bxb_would_not_call_is_refused_naming_it(tenant: Tenant, url: str, message: str):
    refused = await tenant.http.post("/v1/webhook_endpoints", json={"url": url})
    assert (refused.status_code, refused.json()["error"]["field"]) == (400, "url"), refused.text
    assert message in refused.json()["error"]["message"]
    created = await endpoint(tenant, "https://ok.example.com/")
    changed = await tenant.http.patch(f"/v1/webhook_endpoints/{created['id']}", json={"url": url})
    assert (changed.status_code, changed.json()["error"]["field"]) == (400, "url")
    listed = (await tenant.http.get("/v1/webhook_endpoints")).json()["webhook_endpoints"]
    assert [e["url"] for e in listed] == ["https://ok.example.com/"]  # nothing partial stored


async def test_unknown_event_types_are_refused_naming_the_field(tenant: Tenant):
    refused = await tenant.http.post(
        "/v1/webhook_endpoints", json={"url": "https://h.example.com", "event_types": ["invoice.paid", "invoice.eaten"]}
    )
    assert (refused.status_code, refused.json()["error"]["field"]) == (400, "event_types")
    assert "'invoice.eaten'" in refused.json()["error"]["message"]
    created = await endpoint(tenant, "https://h.example.com")
    changed = await tenant.http.patch(f"/v1/webhook_endpoints/{created['id']}", json={"event_types": ["x"]})
    assert (changed.status_code, changed.json()["error"]["field"]) == (400, "event_types")


async def test_another_organizations_endpoint_is_not_found(make_tenant, stack: Stack):
    owner, other = await make_tenant(), await make_tenant()
    created = await endpoint(owner, "https://h.example.com")
    path = f"/v1/webhook_endpoints/{created['id']}"
    h = other.http
    assert (await h.get(path)).status_code == 404
    assert (await h.patch(path, json={"enabled": False})).status_code == 404
    assert (await h.post(f"{path}/rotate_secret", json={})).status_code == 404
    assert (await h.post(f"{path}/test", json={})).status_code == 404
    assert (await h.get(f"{path}/deliveries")).status_code == 404
    assert (await h.get(f"{path}/deliveries/dlv_x")).status_code == 404
    assert (await h.post(f"{path}/deliveries/dlv_x/replay", json={})).status_code == 404
    assert (await h.delete(path)).status_code == 404
    assert (await h.get("/v1/webhook_endpoints")).json()["webhook_endpoints"] == []
    assert (await owner.http.get(path)).status_code == 200
    async with stack.channel("payments") as channel:
        stub = webhook_endpoints_pb2_grpc.WebhookEndpointServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetWebhookEndpoint(
                pb.GetWebhookEndpointRequest(id=created["id"]), metadata=tenancy.metadata(other.organization_id)
            )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(missing.value).metadata["field"] == "id"


async def test_the_event_catalog_is_listed(tenant: Tenant):
    listed = await tenant.http.get("/v1/webhook_event_types")
    assert listed.status_code == 200
    types = listed.json()["event_types"]
    assert [t["name"] for t in types] == list(CATALOG)
    assert types[0]["description"] == CATALOG[types[0]["name"]]
