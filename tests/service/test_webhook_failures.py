"""What a failing endpoint does to others through the stack's sender: one
failing for days is disabled and the organization's other endpoints are
told; one that never answers holds only its own slots, and another
endpoint's deliveries keep flowing meanwhile."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from sqlalchemy import update

from services.common.timestamps import utcnow
from services.payments.models import WebhookEndpoint
from tests.conftest import Tenant, eventually
from tests.service.payments_helpers import PaymentsDb
from tests.service.webhook_helpers import announce, deliveries, endpoint
from tests.webhook_receiver import Receiver


async def test_an_endpoint_failing_for_days_is_disabled_and_the_other_endpoints_are_told(
    tenant: Tenant, payments_db: PaymentsDb
):
    org, h = tenant.organization_id, tenant.http
    async with Receiver(fail_first=1000) as dead, Receiver() as watcher:
        failing = await endpoint(tenant, dead.url, event_types=["invoice.paid"])
        told = await endpoint(tenant, watcher.url, event_types=["webhook_endpoint.disabled"])
        watcher.secrets = [told["secret"]]
        # It has failed for six days: the stack disables an endpoint after five.
        async with payments_db.sessions() as session, session.begin():
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == failing["id"])
                .values(failing_since=utcnow() - timedelta(days=6))
            )
        await announce(payments_db, org, "invoice.paid", "cus_d", n=1)
        await announce(payments_db, org, "invoice.paid", "cus_d", n=2)  # waits behind the first

        async def told_once():
            assert len(watcher.received) == 1

        await eventually(told_once)
        event = watcher.received[0]
        assert watcher.verified(told["secret"])
        assert event.json["type"] == "webhook_endpoint.disabled"
        shown = event.json["data"]["webhook_endpoint"]
        assert (shown["id"], shown["enabled"], shown["url"]) == (failing["id"], False, dead.url)
        assert shown["disabled_reason"].startswith("every delivery failed since ")
        assert not shown.get("secret")
        read = (await h.get(f"/v1/webhook_endpoints/{failing['id']}")).json()
        assert (read["enabled"], read["disabled_reason"]) == (False, shown["disabled_reason"])
        assert read["failing_since_time"]
        listed = await deliveries(tenant, failing["id"])
        assert [d["status"] for d in listed] == ["canceled", "canceled"]
        assert sorted(d["attempt_count"] for d in listed) == [0, 1]
        assert len(dead.received) == 1
        assert await announce(payments_db, org, "invoice.paid", "cus_d") == []  # nothing more is queued for it

        enabled = (await h.patch(f"/v1/webhook_endpoints/{failing['id']}", json={"enabled": True})).json()
        assert (enabled["enabled"], enabled["disabled_reason"], enabled.get("failing_since_time")) == (True, "", None)


async def test_an_endpoint_that_never_answers_does_not_slow_another_endpoints_deliveries(
    tenant: Tenant, make_tenant, payments_db: PaymentsDb
):
    org = tenant.organization_id
    other = await make_tenant()
    # The hole answers after 60 s: past the stack's 10 s deadline, longer than this test.
    async with Receiver(delay=60) as hole, Receiver() as fast, Receiver() as elsewhere:
        black = await endpoint(tenant, hole.url)
        quick = await endpoint(tenant, fast.url)
        theirs = await endpoint(other, elsewhere.url)
        fast.secrets, elsewhere.secrets = [quick["secret"]], [theirs["secret"]]
        for n in range(8):
            await announce(payments_db, org, "invoice.paid", f"cus_{n}", n=n)

        async def hole_full():
            assert len(hole.received) == 4  # the stack's sink_concurrency: its slots, no more

        await eventually(hole_full)
        announced: dict[int, float] = {}
        for n in range(8, 48):  # the same customers and events, for both endpoints
            await announce(payments_db, org, "invoice.paid", f"cus_{n % 8}", n=n)
            announced[n] = time.monotonic()
            await announce(payments_db, other.organization_id, "invoice.paid", f"cus_{n % 8}", n=n)

        async def all_arrived():
            assert len(fast.received) == 48 and len(elsewhere.received) == 40

        await eventually(all_arrived, timeout=20)
        latencies = [r.time - announced[r.json["data"]["n"]] for r in fast.received if r.json["data"]["n"] >= 8]
        # Each arrives within the sender's sweep and a request, far inside the hole's 10 s deadline.
        assert max(latencies) < 2.0, sorted(latencies)[-5:]
        assert fast.verified(quick["secret"]) and elsewhere.verified(theirs["secret"])
        assert len(hole.received) == 4  # still waiting on its first four
        assert (await tenant.http.delete(f"/v1/webhook_endpoints/{black['id']}")).status_code == 204
    await asyncio.sleep(0.2)  # the hole's requests end as it closes: their deliveries were removed with it
