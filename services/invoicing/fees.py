"""Turns a subscription's plan and a period into fee lines.

Timing. A period is billed at its start (IN_ADVANCE: the base fee of a plan
paid in advance, and the flat charges paid in advance) and at its end
(IN_ARREARS: the base fee otherwise, every other charge, the true-ups and the
commitment). Fees paid in advance never depend on usage.

Usage scoping. A charge counts the events naming the subscription, plus the
events naming none that the subscription owns: among the customer's
subscriptions whose pinned plan charges the metric, the one active at the
event's time ([start_time, terminate_time)) with the earliest start (then
creation, then id). So each subscription owns the windows of the period in
which it is active and no earlier-starting one charging the metric is.

Lines. A charge without filters or grouping is one line (at 0 units when
nothing happened). Filters are metering buckets, most specific first (most
keys; ties in declared order); each filter and the default (events matching
none, at the charge's own properties) is a line priced with its properties.
With grouped_by, each group of a bucket that has events is a line; a bucket
without events is one line at 0 units and an empty group.

Minimums. Each fee is exact Decimal rounded once to minor units. A charge whose
lines total less than its min_amount_cents (prorated like the base fee) gets a
true-up for the difference; a period whose fees (both timings, true-ups
included) total less than the plan's minimum_commitment_cents (prorated) gets
a commitment fee in arrears. Either tops the rounded total up to the rounded
minimum exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import timedelta
from decimal import ROUND_FLOOR, Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import billable_metrics_pb2, plans_pb2, taxes_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from bxb.metering.v1 import usage_pb2
from services.common import peers
from services.common.aggregations import aggregation
from services.common.decimals import canonical
from services.common.ownership import Claim, Window, owned
from services.common.periods import Period
from services.common.timestamps import to_proto
from services.invoicing import taxation
from services.invoicing.models import Subscription
from services.invoicing.pricing import models
from services.invoicing.pricing.money import from_minor, to_minor

ARREARS = pb.BILLING_TIMING_IN_ARREARS
ADVANCE = pb.BILLING_TIMING_IN_ADVANCE
MICROSECOND = timedelta(microseconds=1)


def share(period: Period) -> Decimal:
    """The part of its full billing interval a period (or a slice of one) covers."""
    return Decimal((period.end - period.start) // MICROSECOND) / Decimal(
        (period.full_end - period.full_start) // MICROSECOND
    )


def base_fee(plan: plans_pb2.Plan, period: Period) -> pb.Fee | None:
    """The plan's base fee, prorated by the period's share of its interval."""
    if plan.amount_cents == 0:
        return None
    full = from_minor(plan.amount_cents, plan.currency)
    part = share(period)
    exact = full * part
    return pb.Fee(
        type=pb.FEE_TYPE_SUBSCRIPTION,
        amount_cents=to_minor(exact, plan.currency, "the base fee"),
        units=canonical(part),
        unit_amount=canonical(full),
        precise_amount=canonical(exact),
        description=f"{plan.name} base fee",
        period_start=to_proto(period.start),
        period_end=to_proto(period.end),
    )


def _top_up(
    kind: pb.FeeType.ValueType,
    minimum_cents: int,
    fees: Iterable[pb.Fee],
    plan: plans_pb2.Plan,
    period: Period,
    *,
    description: str,
    billable_metric_code: str = "",
    charge_id: str = "",
) -> pb.Fee | None:
    """A fee topping `fees` up to the minimum prorated like the base fee, or None when they reach it."""
    minimum = from_minor(minimum_cents, plan.currency) * share(period)
    exact = minimum - from_minor(sum(f.amount_cents for f in fees), plan.currency)
    cents = to_minor(exact, plan.currency)
    if cents <= 0:
        return None
    return pb.Fee(
        type=kind,
        amount_cents=cents,
        units="1",
        unit_amount=canonical(exact),
        precise_amount=canonical(exact),
        period_start=to_proto(period.start),
        period_end=to_proto(period.end),
        description=description,
        billable_metric_code=billable_metric_code,
        charge_id=charge_id,
    )


def bucket_order(charge: plans_pb2.Charge) -> list[int]:
    """Indexes of the charge's filters in metering bucket order: most keys first, ties in declared order."""
    return sorted(range(len(charge.filters)), key=lambda i: -len(charge.filters[i].values))


def filter_label(charge_filter: plans_pb2.ChargeFilter) -> str:
    if charge_filter.invoice_display_name:
        return charge_filter.invoice_display_name
    return "; ".join(f"{v.key}: {', '.join(v.values)}" for v in charge_filter.values)


def claim(row: Subscription) -> Claim:
    """A subscription's claim on its customer's unassigned events."""
    codes = frozenset(c.get("billable_metric_code") for c in row.plan.get("charges", []))
    return Claim(row.id, row.start_time, row.terminate_time, row.create_time, codes)


# What to price: a subscription, its plan, periods and timing, and its
# customer's subscriptions when the caller has read them (see windows).
Job = tuple[Subscription, plans_pb2.Plan, Sequence[Period], pb.BillingTiming.ValueType, Sequence[Subscription] | None]
# What to measure: a subscription, its periods, the charges, its siblings.
Measure = tuple[Subscription, Sequence[Period], Sequence[plans_pb2.Charge], Sequence[Subscription] | None]
USAGE_BATCH = 500  # the most requests metering's BatchAggregateUsage takes

NO_USAGE = usage_pb2.AggregateUsageResponse()  # what a fee paid in advance knows of its period


class FeeCalculator:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        metering: peers.Metering,
        catalog: peers.Catalog | None = None,
    ):
        self.sessions = sessions
        self.metering = metering
        self.catalog = catalog  # asked for the taxes of an invoice; none without it

    async def tax_rates(self, subscription: Subscription, plan: plans_pb2.Plan) -> list[taxes_pb2.Tax]:
        [taxes] = await self.jobs_taxes(subscription.organization_id, [(subscription.customer_id, plan.tax_codes)])
        return taxes

    async def jobs_taxes(self, org: str, invoiced: Sequence[tuple[str, Sequence[str]]]) -> list[list[taxes_pb2.Tax]]:
        """The taxes of each (customer id, plan tax codes) in `invoiced`, one catalog call for all."""
        return await taxation.resolve(self.catalog, org, invoiced)

    async def windows(
        self,
        subscription: Subscription,
        codes: Iterable[str],
        period: Period,
        siblings: Sequence[Subscription] | None = None,
    ) -> dict[str, list[Window]]:
        """Per metric code, the windows of `period` in which `subscription` owns
        unassigned events. `siblings`, when the caller has already read them,
        are the customer's subscriptions (this one may be among them)."""
        if siblings is None:
            query = select(Subscription).where(
                Subscription.organization_id == subscription.organization_id,
                Subscription.customer_id == subscription.customer_id,
            )
            async with self.sessions() as session:
                siblings = (await session.execute(query)).scalars().all()
        others = [row for row in siblings if row.id != subscription.id]
        mine, rest = claim(subscription), [claim(row) for row in others]
        return {code: owned(mine, rest, code, period.start, period.end) for code in codes}

    @staticmethod
    def request(
        subscription: Subscription,
        metric: billable_metrics_pb2.BillableMetric,
        period: Period,
        windows: Sequence[Window],
        *,
        include_values: bool = False,
        buckets: Iterable[usage_pb2.FilterSet] = (),
        group_by: Iterable[str] = (),
    ) -> usage_pb2.AggregateUsageRequest:
        """One metric's usage of the subscription over `period`, scoped as its invoice counts it."""
        return usage_pb2.AggregateUsageRequest(
            customer_id=subscription.customer_id,
            code=metric.code,
            aggregation=aggregation(metric),
            field_name=metric.field_name,
            start_time=to_proto(period.start),
            end_time=to_proto(period.end),
            subscription_id=subscription.id,
            unassigned_windows=[usage_pb2.TimeRange(start_time=to_proto(s), end_time=to_proto(e)) for s, e in windows],
            include_values=include_values,
            buckets=buckets,
            group_by=group_by,
        )

    async def _measure(self, jobs: Sequence[Measure]) -> list[list[list[usage_pb2.AggregateUsageResponse]]]:
        """The usage of each job's charges in each of its periods, for jobs of
        one organization, in as few metering calls as its batch limit allows."""
        requests: list[usage_pb2.AggregateUsageRequest] = []
        spans = []  # per job: its first request, its periods, its charges
        for subscription, periods, charges, siblings in jobs:
            spans.append((len(requests), len(periods), len(charges)))
            if not charges:
                continue
            codes = {c.billable_metric.code for c in charges}
            for period in periods:
                owned = await self.windows(subscription, codes, period, siblings)
                requests += [
                    self.request(
                        subscription,
                        charge.billable_metric,
                        period,
                        owned[charge.billable_metric.code],
                        # Only percentage prices each event; other models need the total alone.
                        include_values=charge.charge_model == plans_pb2.CHARGE_MODEL_PERCENTAGE,
                        buckets=[
                            usage_pb2.FilterSet(
                                filters=[
                                    usage_pb2.PropertyFilter(key=v.key, values=v.values)
                                    for v in charge.filters[i].values
                                ]
                            )
                            for i in bucket_order(charge)
                        ],
                        group_by=charge.properties.grouped_by,
                    )
                    for charge in charges
                ]
        replies: list[usage_pb2.AggregateUsageResponse] = []
        if requests:
            org = jobs[0][0].organization_id
            calls = [
                self.metering.batch_aggregate_usage(
                    org, usage_pb2.BatchAggregateUsageRequest(requests=requests[first : first + USAGE_BATCH])
                )
                for first in range(0, len(requests), USAGE_BATCH)
            ]
            for reply in await asyncio.gather(*calls):
                replies += reply.responses
        return [[replies[first + i * n : first + (i + 1) * n] for i in range(count)] for first, count, n in spans]

    async def charge_fees(
        self, subscription: Subscription, plan: plans_pb2.Plan, period: Period, factor: Decimal | None = None
    ) -> list[pb.Fee]:
        """The lines of every charge over `period` as its usage stands (no
        minimums), or with its usage projected by `factor` (see `projected`)."""
        [fees] = await self.jobs_charge_fees([(subscription, plan, period)], factor)
        return fees

    async def jobs_charge_fees(
        self, jobs: Sequence[tuple[Subscription, plans_pb2.Plan, Period]], factor: Decimal | None = None
    ) -> list[list[pb.Fee]]:
        """`charge_fees` of each (subscription, plan, period) of one
        organization, measured together."""
        measured = await self._measure(
            [(subscription, [period], plan.charges, None) for subscription, plan, period in jobs]
        )
        return [
            [
                fee
                for charge, reply in zip(plan.charges, usage, strict=True)
                for fee in _lines(charge, plan, period, projected(charge, reply, factor) if factor else reply)
            ]
            for (_, plan, period), [usage] in zip(jobs, measured, strict=True)
        ]

    async def period_fees(
        self,
        subscription: Subscription,
        plan: plans_pb2.Plan,
        period: Period,
        timing: pb.BillingTiming.ValueType = ARREARS,
        siblings: Sequence[Subscription] | None = None,
    ) -> list[pb.Fee]:
        """The fees of a period billed at its end (IN_ARREARS) or at its start
        (IN_ADVANCE). `siblings`: see `windows`."""
        [fees] = await self.periods_fees(subscription, plan, [period], timing, siblings)
        return fees

    async def periods_fees(
        self,
        subscription: Subscription,
        plan: plans_pb2.Plan,
        periods: Sequence[Period],
        timing: pb.BillingTiming.ValueType = ARREARS,
        siblings: Sequence[Subscription] | None = None,
    ) -> list[list[pb.Fee]]:
        """`period_fees` of several periods, measured in one metering call."""
        [fees] = await self.jobs_fees([(subscription, plan, periods, timing, siblings)])
        return fees

    async def jobs_fees(self, jobs: Sequence[Job]) -> list[list[list[pb.Fee]]]:
        """`periods_fees` of each job, for jobs of one organization (a billing
        page), all measured together."""
        measured = await self._measure(
            [
                (
                    subscription,
                    periods,
                    [c for c in plan.charges if not c.pay_in_advance] if timing == ARREARS else [],
                    siblings,
                )
                for subscription, plan, periods, timing, siblings in jobs
            ]
        )
        return [
            [_advance_fees(plan, period) for period in periods]
            if timing == ADVANCE
            else [_arrears_fees(plan, period, usage) for period, usage in zip(periods, job_usage, strict=True)]
            for (_, plan, periods, timing, _), job_usage in zip(jobs, measured, strict=True)
        ]


def _advance_fees(plan: plans_pb2.Plan, period: Period) -> list[pb.Fee]:
    """The base fee paid in advance and the charges paid in advance (flat: no usage)."""
    base = base_fee(plan, period)
    bases = [base] if base is not None and plan.pay_in_advance else []
    return bases + [fee for c in plan.charges if c.pay_in_advance for fee in _lines(c, plan, period, NO_USAGE)]


def _arrears_fees(
    plan: plans_pb2.Plan, period: Period, measured: Sequence[usage_pb2.AggregateUsageResponse]
) -> list[pb.Fee]:
    """The fees billed at the period's end, from the usage of its charges billed in arrears."""
    base = base_fee(plan, period)
    bases = [base] if base is not None else []
    usage = iter(measured)
    every = list(bases)  # both timings: what the commitment compares
    arrears = [] if plan.pay_in_advance else list(bases)
    for charge in plan.charges:
        lines = _lines(charge, plan, period, NO_USAGE if charge.pay_in_advance else next(usage))
        true_up = _top_up(
            pb.FEE_TYPE_TRUE_UP,
            charge.min_amount_cents,
            lines,
            plan,
            period,
            description=f"{_label(charge)} minimum spend",
            billable_metric_code=charge.billable_metric.code,
            charge_id=charge.id,
        )
        top = [true_up] if true_up is not None else []
        every += lines + top
        arrears += top if charge.pay_in_advance else lines + top
    commitment = _top_up(
        pb.FEE_TYPE_COMMITMENT,
        plan.minimum_commitment_cents,
        every,
        plan,
        period,
        description=f"{plan.name} minimum commitment",
    )
    return arrears + ([commitment] if commitment is not None else [])


# Aggregations whose usage grows with time; the others are levels.
GROWING = (billable_metrics_pb2.AGGREGATION_TYPE_COUNT, billable_metrics_pb2.AGGREGATION_TYPE_SUM)


def projected(
    charge: plans_pb2.Charge, usage: usage_pb2.AggregateUsageResponse, factor: Decimal
) -> usage_pb2.AggregateUsageResponse:
    """`usage` as it would stand if it kept growing at its pace: counts and
    sums times `factor` (a count stays whole), each event's values repeated
    in order to match; a level (max, latest, ...) as it is."""
    if charge.billable_metric.aggregation_type not in GROWING:
        return usage
    copy = usage_pb2.AggregateUsageResponse()
    copy.CopyFrom(usage)
    whole = charge.billable_metric.aggregation_type == billable_metrics_pb2.AGGREGATION_TYPE_COUNT
    parts: list[usage_pb2.AggregateUsageResponse | usage_pb2.UsageGroup] = [copy, *copy.groups]
    for part in parts:
        value = Decimal(part.value or 0) * factor
        part.value = canonical(value.to_integral_value(ROUND_FLOOR) if whole else value)
        part.event_count = int(part.event_count * factor)
        values = list(part.values)
        del part.values[:]
        part.values.extend(values[i % len(values)] for i in range(int(len(values) * factor)))
    return copy


def _label(charge: plans_pb2.Charge) -> str:
    return charge.invoice_display_name or charge.billable_metric.name


def _lines(
    charge: plans_pb2.Charge, plan: plans_pb2.Plan, period: Period, usage: usage_pb2.AggregateUsageResponse
) -> list[pb.Fee]:
    """The fee lines of one charge: one per filter (declared order) and the default, or per group."""
    grouped_by = list(charge.properties.grouped_by)
    if not charge.filters and not grouped_by:
        return [_line(charge, plan, period, charge.properties, "", {}, usage)]
    by_bucket: dict[int, list[usage_pb2.UsageGroup]] = {}
    for group in usage.groups:
        by_bucket.setdefault(group.bucket, []).append(group)
    bucket_of = {index: n + 1 for n, index in enumerate(bucket_order(charge))}
    prices = [(bucket_of[i], f.properties, filter_label(f)) for i, f in enumerate(charge.filters)]
    lines = []
    for bucket, props, label in [*prices, (0, charge.properties, "")]:
        for group in by_bucket.get(bucket) or [usage_pb2.UsageGroup()]:
            values = dict(zip(grouped_by, group.group_values, strict=False))
            lines.append(_line(charge, plan, period, props, label, values, group))
    return lines


def _line(
    charge: plans_pb2.Charge,
    plan: plans_pb2.Plan,
    period: Period,
    props: plans_pb2.ChargeProperties,
    filter_name: str,
    group: dict[str, str],
    usage: usage_pb2.AggregateUsageResponse | usage_pb2.UsageGroup,
) -> pb.Fee:
    units = Decimal(usage.value or 0)
    values = [Decimal(value) for value in usage.values]
    priced = models.MODELS[plans_pb2.ChargeModel.Name(charge.charge_model)](units, props, values)
    qualifiers = [filter_name] if filter_name else []
    if group:
        qualifiers.append(", ".join(f"{key}: {value}" for key, value in group.items()))
    name = f"{_label(charge)} ({'; '.join(qualifiers)})" if qualifiers else _label(charge)
    return pb.Fee(
        type=pb.FEE_TYPE_CHARGE,
        amount_cents=to_minor(priced.amount, plan.currency, f"the charge of {charge.billable_metric.code!r}"),
        units=canonical(units),
        unit_amount=canonical(priced.amount / units) if units else "0",
        precise_amount=canonical(priced.amount),
        description=f"{name}: {canonical(units)} units",
        billable_metric_code=charge.billable_metric.code,
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
        group=group,
        filter=filter_name,
        period_start=to_proto(period.start),
        period_end=to_proto(period.end),
    )
