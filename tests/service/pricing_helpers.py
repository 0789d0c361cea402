"""Plans built as protos and subscriptions fed to invoicing's projection, for
fee and pricing tests that need charge features the JSON API may not spell,
plus events sent through the gateway."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from bxb.catalog.v1 import billable_metrics_pb2, plans_pb2, subscriptions_pb2
from services.common import peers
from services.common.periods import Period
from services.common.timestamps import format_rfc3339, to_proto, utcnow
from services.invoicing.fees import FeeCalculator
from services.invoicing.models import Subscription
from services.invoicing.projection import SubscriptionProjection
from tests.conftest import Stack, Tenant, unique
from tests.service.invoicing_helpers import InvoicingDb, at

SUM = billable_metrics_pb2.AGGREGATION_TYPE_SUM
_charge_ids = itertools.count(1)


def metric(code: str = "requests", name: str = "Requests", aggregation: int = SUM, field: str = "tokens"):
    return billable_metrics_pb2.BillableMetric(
        id=unique("bm"), code=code, name=name, aggregation_type=aggregation, field_name=field
    )


def props(**fields) -> plans_pb2.ChargeProperties:
    return plans_pb2.ChargeProperties(**fields)


def price_filter(values: dict[str, list[str]], name: str = "", **properties) -> plans_pb2.ChargeFilter:
    return plans_pb2.ChargeFilter(
        values=[billable_metrics_pb2.PropertyValues(key=k, values=v) for k, v in values.items()],
        properties=props(**properties),
        invoice_display_name=name,
    )


def charge(
    billable_metric: billable_metrics_pb2.BillableMetric | None = None,
    model: str = "STANDARD",
    properties: plans_pb2.ChargeProperties | None = None,
    **fields,
) -> plans_pb2.Charge:
    billable_metric = billable_metric or metric()
    return plans_pb2.Charge(
        id=f"ch_{next(_charge_ids)}",
        billable_metric_code=billable_metric.code,
        billable_metric=billable_metric,
        charge_model=plans_pb2.ChargeModel.Value(f"CHARGE_MODEL_{model}"),
        properties=properties or props(amount="0.01"),
        **fields,
    )


def plan(*charges: plans_pb2.Charge, amount_cents: int = 0, currency: str = "USD", **fields) -> plans_pb2.Plan:
    return plans_pb2.Plan(
        id=unique("plan"),
        code=unique("plan"),
        name="Pro",
        version=1,
        interval=plans_pb2.PLAN_INTERVAL_MONTHLY,
        amount_cents=amount_cents,
        currency=currency,
        charges=charges,
        **fields,
    )


def period(start: str, end: str, full_start: str | None = None, full_end: str | None = None) -> Period:
    return Period(at(start), at(end), at(full_start or start), full_end=at(full_end or end))


@dataclass
class Desk:
    """A tenant, invoicing's database and a fee calculator over real metering."""

    tenant: Tenant
    db: InvoicingDb
    fees: FeeCalculator
    projection: SubscriptionProjection

    async def subscribe(
        self,
        customer: str,
        pinned: plans_pb2.Plan,
        start: str,
        terminate: str | None = None,
        created: datetime | None = None,
        subscription_id: str = "",
    ) -> Subscription:
        sub = subscriptions_pb2.Subscription(
            id=subscription_id or unique("sub"),
            customer_id=customer,
            plan_id=pinned.id,
            plan_code=pinned.code,
            plan_version=pinned.version,
            billing_time=subscriptions_pb2.BILLING_TIME_ANNIVERSARY,
            start_time=to_proto(at(start)),
            create_time=to_proto(created or utcnow()),
            terminate_time=to_proto(at(terminate)) if terminate else None,
        )
        await self.projection.apply(self.tenant.organization_id, sub, pinned)
        return await self.db.projected(sub.id)

    async def send(self, customer: str, code: str, when: str, subscription: str = "", **properties) -> None:
        body = {
            "transaction_id": unique("txn"),
            "customer_id": customer,
            "code": code,
            "timestamp": format_rfc3339(at(when)),
            "properties": properties,
        }
        if subscription:
            body["subscription_id"] = subscription
        response = await self.tenant.http.post("/v1/events", json=body)
        assert response.status_code == 200, response.text


@contextlib.asynccontextmanager
async def open_desk(stack: Stack, tenant: Tenant) -> AsyncIterator[Desk]:
    db = InvoicingDb(stack)
    metering = peers.Metering(stack.metering)
    yield Desk(tenant, db, FeeCalculator(db.sessions, metering), SubscriptionProjection(db.sessions))
    await metering.close()
    await db.close()
