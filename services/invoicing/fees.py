"""Turns a plan and a period into fee lines: the base fee, and one fee per
usage charge priced from the exact usage the metering service reports."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.ext.asyncio import async_sessionmaker

from bxb.catalog.v1 import billable_metrics_pb2, plans_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from bxb.metering.v1 import usage_pb2, usage_pb2_grpc
from services.common import tenancy
from services.common.decimals import canonical
from services.common.periods import Period
from services.common.timestamps import to_proto
from services.invoicing.models import Subscription
from services.invoicing.pricing import models
from services.invoicing.pricing.money import from_minor, to_minor


def _aggregation(metric: billable_metrics_pb2.BillableMetric) -> int:
    name = billable_metrics_pb2.AggregationType.Name(metric.aggregation_type).removeprefix("AGGREGATION_TYPE_")
    return usage_pb2.Aggregation.Value(f"AGGREGATION_{name}")


def base_fee(plan: plans_pb2.Plan, period: Period) -> pb.Fee | None:
    """The plan's base fee, prorated by time when the period is partial."""
    if plan.amount_cents == 0:
        return None
    full = from_minor(plan.amount_cents, plan.currency)
    share = Decimal((period.end - period.start).total_seconds()) / Decimal(
        (period.end - period.full_start).total_seconds()
    )
    exact = full * share
    return pb.Fee(
        type=pb.FEE_TYPE_SUBSCRIPTION,
        amount_cents=to_minor(exact, plan.currency),
        units=canonical(share),
        unit_amount=canonical(full),
        precise_amount=canonical(exact),
        description=f"{plan.name} base fee",
    )


class FeeCalculator:
    def __init__(
        self, usage: usage_pb2_grpc.UsageServiceStub | None = None, sessions: async_sessionmaker | None = None
    ):
        self.usage = usage
        self.sessions = sessions

    async def charge_fees(self, subscription: Subscription, plan: plans_pb2.Plan, period: Period) -> list[pb.Fee]:
        org, customer_id, start, end = subscription.organization_id, subscription.customer_id, period.start, period.end
        fees = []
        for charge in plan.charges:
            metric = charge.billable_metric
            assert self.usage is not None, "connect the metering stub first"
            # Only percentage prices each event; other models need the total alone.
            per_event = charge.charge_model == plans_pb2.CHARGE_MODEL_PERCENTAGE
            usage = await self.usage.AggregateUsage(
                usage_pb2.AggregateUsageRequest(
                    customer_id=customer_id,
                    code=metric.code,
                    aggregation=_aggregation(metric),
                    field_name=metric.field_name,
                    start_time=to_proto(start),
                    end_time=to_proto(end),
                    include_values=per_event,
                ),
                metadata=tenancy.metadata(org),
            )
            units = Decimal(usage.value)
            values = [Decimal(value) for value in usage.values]
            priced = models.MODELS[plans_pb2.ChargeModel.Name(charge.charge_model)](units, charge.properties, values)
            fees.append(
                pb.Fee(
                    type=pb.FEE_TYPE_CHARGE,
                    amount_cents=to_minor(priced.amount, plan.currency),
                    units=canonical(units),
                    unit_amount=canonical(priced.amount / units) if units else "0",
                    precise_amount=canonical(priced.amount),
                    description=f"{metric.name}: {canonical(units)} units",
                    billable_metric_code=metric.code,
                    charge_id=charge.id,
                    events_count=usage.event_count,
                    tiers=[
                        pb.FeeTier(
                            from_value=canonical(t.from_value),
                            to_value="" if t.to_value is None else canonical(t.to_value),
                            units=canonical(t.units),
                            per_unit_amount=canonical(t.per_unit_amount),
                            flat_amount=canonical(t.flat_amount),
                            amount=canonical(t.amount),
                        )
                        for t in priced.tiers
                    ],
                )
            )
        return fees

    async def period_fees(
        self,
        subscription: Subscription,
        plan: plans_pb2.Plan,
        period: Period,
        timing: int = pb.BILLING_TIMING_IN_ARREARS,
    ) -> list[pb.Fee]:
        """The fees of a period billed at its end (IN_ARREARS) or start (IN_ADVANCE)."""
        base = base_fee(plan, period)
        charges = await self.charge_fees(subscription, plan, period)
        return ([base] if base is not None else []) + charges
