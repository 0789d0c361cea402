"""Webhook tests' shared steps: endpoints made through the gateway, and
announcements stored straight into the payments database (as a consumer of
domain events does it), which the stack's sender then delivers."""

from __future__ import annotations

from typing import Any

from services.common.ids import new_id
from services.common.timestamps import utcnow
from services.payments.announcing import Announcer, Draft
from tests.conftest import Tenant
from tests.service.payments_helpers import PaymentsDb

ANNOUNCER = Announcer({})


async def endpoint(tenant: Tenant, url: str, **fields: Any) -> dict[str, Any]:
    """A new endpoint of the tenant (with its secret, shown only now)."""
    created = await tenant.http.post("/v1/webhook_endpoints", json={"url": url, **fields})
    assert created.status_code == 201, created.text
    return created.json()


async def announce(db: PaymentsDb, org: str, type_: str, customer_id: str = "", **data: Any) -> list[str]:
    """One announcement, stored and queued in its own transaction: the delivery ids."""
    now = utcnow()
    draft = Draft(org, type_, customer_id, f"test:{new_id('src')}", now, dict(data))
    async with db.sessions() as session, session.begin():
        return await ANNOUNCER.announce(session, draft, now)


async def deliveries(tenant: Tenant, endpoint_id: str, **query: Any) -> list[dict[str, Any]]:
    listed = await tenant.http.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries", params=query)
    assert listed.status_code == 200, listed.text
    found: list[dict[str, Any]] = listed.json()["deliveries"]
    return found
