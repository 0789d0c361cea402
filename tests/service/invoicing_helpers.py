"""Shared setup for invoicing tests: a tenant with a metric, a plan and a
backdated subscription, plus direct access to invoicing's database."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from sqlalchemy import select

from bxb.invoicing.v1 import billing_runs_pb2, billing_runs_pb2_grpc
from services.common import db, tenancy
from services.invoicing.models import Invoice, Subscription
from tests.conftest import Stack, Tenant, eventually, unique


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if "+" not in text else datetime.fromisoformat(text)


async def create_plan(t: Tenant, code: str, charges: list[dict], amount_cents: int = 0, currency: str = "USD", **extra):
    for charge in charges:
        metric = charge["billable_metric_code"]
        if (await t.http.get(f"/v1/billable_metrics/{metric}")).status_code == 404:
            body = {"code": metric, "name": metric, "aggregation_type": "sum", "field_name": "tokens"}
            assert (await t.http.post("/v1/billable_metrics", json=body)).status_code == 201
    body = {"code": code, "interval": "monthly", "amount_cents": amount_cents, "currency": currency, "charges": charges}
    body.update(extra)
    response = await t.http.post("/v1/plans", json=body)
    assert response.status_code == 201, response.text
    return response.json()


# The time the tests of ended and open periods are written at: the months
# before it have ended, the one holding it is open.
WRITTEN_AT = "2026-11-20T00:00:00Z"


async def on_clock(t: Tenant, *customers: str, frozen: str = WRITTEN_AT) -> str:
    """Creates the customers on a test clock frozen at `frozen`, so which of
    their periods have ended does not depend on the real date."""
    clock = await t.http.post("/v1/test_clocks", json={"name": "written at", "frozen_time": frozen})
    assert clock.status_code == 201, clock.text
    for customer in customers:
        created = await t.http.post("/v1/customers", json={"id": customer, "test_clock_id": clock.json()["id"]})
        assert created.status_code == 201, created.text
    return clock.json()["id"]


async def subscribe(t: Tenant, customer: str, plan: str, start: str, **extra) -> dict:
    body = {"customer_id": customer, "plan_code": plan, "start_date": start, **extra}
    response = await t.http.post("/v1/subscriptions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def send(t: Tenant, customer: str, tokens, timestamp: str, code: str = "api_requests", txn: str = "") -> None:
    body = {
        "transaction_id": txn or unique("txn"),
        "customer_id": customer,
        "code": code,
        "timestamp": timestamp,
        "properties": {"tokens": tokens},
    }
    response = await t.http.post("/v1/events", json=body)
    assert response.status_code == 200, response.text


class InvoicingDb:
    def __init__(self, stack: Stack):
        self.engine = db.create_engine(stack.invoicing_database, pool_size=2)
        self.sessions = db.sessions(self.engine)

    async def projected(self, subscription_id: str) -> Subscription:
        async def check():
            async with self.sessions() as session:
                row = await session.get(Subscription, subscription_id)
            assert row is not None, "subscription not projected yet"
            return row

        return await eventually(check)

    async def invoices(self, subscription_id: str) -> list[Invoice]:
        async with self.sessions() as session:
            query = select(Invoice).where(Invoice.subscription_id == subscription_id).order_by(Invoice.period_start)
            return list((await session.execute(query)).scalars().all())

    async def close(self) -> None:
        await self.engine.dispose()


async def run_billing(stack: Stack, t: Tenant, customer_id: str = "") -> int:
    async with grpc.aio.insecure_channel(stack.invoicing) as channel:
        reply = await billing_runs_pb2_grpc.BillingRunServiceStub(channel).RunBilling(
            billing_runs_pb2.RunBillingRequest(customer_id=customer_id), metadata=tenancy.metadata(t.organization_id)
        )
    return reply.invoices_created
