"""Parked messages: what a service's consumers or outbox gave up on is kept
in its database, listed for its organization, and retried through its
handler (gone once handled, its new error recorded when not)."""

from __future__ import annotations

from bxb.catalog.v1 import events_pb2 as catalog_events
from bxb.catalog.v1 import plans_pb2, subscriptions_pb2
from services.common import bus
from services.common.parking import ParkedMessages
from services.common.timestamps import to_proto, utcnow
from services.invoicing.models import Parked
from tests.conftest import Tenant, unique
from tests.service.invoicing_helpers import InvoicingDb


def created(org: str, subscription_id: str) -> bytes:
    """A subscription_created event invoicing can handle."""
    return catalog_events.SubscriptionCreated(
        event_id=unique("evt"),
        organization_id=org,
        subscription=subscriptions_pb2.Subscription(
            id=subscription_id,
            customer_id="c1",
            plan_code="p",
            start_time=to_proto(utcnow()),
            create_time=to_proto(utcnow()),
        ),
        plan=plans_pb2.Plan(code="p", currency="USD", interval=plans_pb2.PLAN_INTERVAL_MONTHLY),
    ).SerializeToString()


async def park(invoicing_db: InvoicingDb, org: str, payload: bytes, sequence: int) -> None:
    """Parks a catalog event as invoicing's consumer would."""
    parked = bus.Parked("BXB_CATALOG", "invoicing", sequence, "bxb.catalog.v1.subscription_created", payload, org, 20,
                        "RuntimeError: catalog away")  # fmt: skip
    await ParkedMessages("invoicing", invoicing_db.sessions, Parked, {}).park(parked)
    await ParkedMessages("invoicing", invoicing_db.sessions, Parked, {}).park(parked)  # parked once per message


async def test_parked_messages_are_listed_per_organization_and_retried(
    tenant: Tenant, make_tenant, invoicing_db: InvoicingDb
):
    org = tenant.organization_id
    sub_id = unique("sub")
    await park(invoicing_db, org, created(org, sub_id), 10**9 + 1)
    await park(invoicing_db, org, b"\xff not an event", 10**9 + 2)
    listed = (await tenant.http.get("/v1/parked_messages")).json()
    assert [(m["service"], m["subject"], m["attempts"]) for m in listed["parked_messages"]] == [
        ("invoicing", "bxb.catalog.v1.subscription_created", 20)
    ] * 2
    assert listed["next_page_token"] == ""
    other = await make_tenant()
    try:
        assert (await other.http.get("/v1/parked_messages")).json()["parked_messages"] == []
        by_id = {m["payload_bytes"]: m["id"] for m in listed["parked_messages"]}
        good, bad = by_id[max(by_id)], by_id[min(by_id)]
        assert (await other.http.post(f"/v1/parked_messages/{good}/retry")).status_code == 404  # not theirs
    finally:
        await other.http.aclose()

    retried = await tenant.http.post(f"/v1/parked_messages/{good}/retry")
    assert (retried.status_code, retried.json()["id"]) == (200, good) and retried.json()["handled_at"]
    assert (await invoicing_db.projected(sub_id)).customer_id == "c1"  # its handler applied it
    failing = await tenant.http.post(f"/v1/parked_messages/{bad}/retry")
    assert (failing.status_code, failing.json()["error"]["reason"]) == (409, "STILL_FAILING")
    [left] = (await tenant.http.get("/v1/parked_messages", params={"service": "invoicing"})).json()["parked_messages"]
    assert (left["id"], left["attempts"], left["error"].split(":")[0]) == (bad, 21, "DecodeError")
    assert (await tenant.http.get("/v1/parked_messages", params={"service": "payments"})).json()[
        "parked_messages"
    ] == []


async def test_a_listing_of_every_service_has_no_pages(tenant: Tenant):
    response = await tenant.http.get("/v1/parked_messages", params={"page_token": "abc"})
    assert (response.status_code, response.json()["error"]["field"]) == (400, "page_token")
    wrong = await tenant.http.get("/v1/parked_messages", params={"service": "metering"})
    assert (wrong.status_code, wrong.json()["error"]["field"]) == (400, "service")
