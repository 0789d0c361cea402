"""The billing run: issues each subscription period's invoices exactly once.

A period has up to two invoices, told apart by their timing:
- IN_ADVANCE, at the period's start, for a plan with fees paid in advance
  (its base fee when the plan is paid in advance, flat charges paid in
  advance). Nothing in it depends on usage, so it waits for nothing.
- IN_ARREARS, at the period's end, for everything else (usage, a base fee
  paid in arrears, minimums), issued only when the period has a fee. It is
  due once the period has been over for the settle delay, which leaves time
  for events stamped before its end to arrive. For a subscription created
  with a start date in the past, the scheduler also waits the settle delay
  after creation, so a backdated subscription gets its usage before its first
  invoice; `run(customer_id=...)`, used when a customer's invoices are read,
  bills those backdated periods at once.

A subscription with a free trial has its periods start when the trial ends:
nothing is billed for the trial, and its usage falls outside every period.
Once billing reaches the trial's end, trial_ended is published (once, by
whichever run claims it); a subscription terminated during its trial never
converts, so it announces nothing.

Coupons: an invoice takes its discounts when it is issued, in its own
transaction (see coupons.py).

Invoices on request (requested.py) may have billed part of a period already:
its end-of-period invoice prices the whole period and deducts what they
billed (an ALREADY_BILLED line), and is not issued when that leaves nothing;
one that closed the whole period moved the watermark, so the run skips it.

A terminated subscription's periods stop at its terminate time: none starts
at or after it, and the one containing it is cut there (its base fee
prorated by time), then billed once it has ended like any other.

A customer with a grace period has each ended period's arrears invoice
kept as a stored draft (drafts.py), recomputed by every run until the grace
period ends, then finalized in place; the watermark moves only then. An
arrears invoice also bills the late usage of the period before it
(late_usage.py), priced in the same metering call. A subscription on a test
clock is billed at its clock's time, with no settle delay (clocks.py).

Two runs racing for the same period cannot both invoice it: the unique
(subscription, period start, timing) key lets one insert win and the other
roll back (its invoice number with it, so numbers stay gapless). Each timing
has a watermark on the subscription (`advance_billed_through`,
`billed_through`) so settled periods are not priced again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from google.protobuf import json_format
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from bxb.catalog.v1 import plans_pb2
from bxb.invoicing.v1 import events_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common import outbox, periods
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow
from services.invoicing import clocks, drafts, issuing, late_usage
from services.invoicing.fees import FeeCalculator
from services.invoicing.invoice_view import invoice_proto, stored
from services.invoicing.issuing import INVOICE_FINALIZED
from services.invoicing.lifecycle import invalid_transition
from services.invoicing.models import Outbox, Subscription

log = logging.getLogger("bxb.billing")

TRIAL_ENDED = "bxb.invoicing.v1.trial_ended"
ADVANCE, ARREARS = pb.BILLING_TIMING_IN_ADVANCE, pb.BILLING_TIMING_IN_ARREARS
# The watermark column of each timing: every period up to it is settled.
WATERMARKS = {ADVANCE: Subscription.advance_billed_through, ARREARS: Subscription.billed_through}


class Rollback(Exception):
    """Raised inside a transaction to undo it (another run billed the period)."""


def has_advance_fees(plan: plans_pb2.Plan) -> bool:
    """Whether the plan bills anything at the start of its periods."""
    return (plan.pay_in_advance and plan.amount_cents > 0) or any(c.pay_in_advance for c in plan.charges)


# Parsed plan versions by (plan id, version). A published version never
# changes, and parsing a plan of many charges from JSON costs more than pricing
# it, so each process parses each version once (a plan without an id, never
# published, is parsed every time).
_PLANS: dict[tuple[str, int], plans_pb2.Plan] = {}
PLANS_KEPT = 4096


def plan_of(subscription: Subscription) -> plans_pb2.Plan:
    """The subscription's pinned plan (a copy: callers may change it)."""
    key = (subscription.plan.get("id", ""), int(subscription.plan.get("version", 0)))
    parsed = _PLANS.get(key) if key[0] else None
    if parsed is None:
        parsed = json_format.ParseDict(subscription.plan, plans_pb2.Plan())
        if key[0]:
            if len(_PLANS) >= PLANS_KEPT:
                _PLANS.pop(next(iter(_PLANS)))  # the oldest parsed
            _PLANS[key] = parsed
    copy = plans_pb2.Plan()
    copy.CopyFrom(parsed)
    return copy


def subscription_periods(subscription: Subscription, plan: plans_pb2.Plan, before: datetime) -> list[periods.Period]:
    """The subscription's periods that have started by `before`, the last one cut at its end if it has one."""
    return periods.started(
        subscription.billing_start,
        plans_pb2.PlanInterval.Name(plan.interval),
        subscription.billing_time,
        before,
        until=subscription.terminate_time,
    )


def open_period(subscription: Subscription, plan: plans_pb2.Plan, at: datetime) -> periods.Period | None:
    """The period running at `at`: None before the subscription starts or once it has ended."""
    return periods.current(
        subscription.billing_start,
        plans_pb2.PlanInterval.Name(plan.interval),
        subscription.billing_time,
        at,
        until=subscription.terminate_time,
    )


class Biller:
    def __init__(
        self,
        sessions: async_sessionmaker,
        fees: FeeCalculator,
        relay: outbox.OutboxRelay,
        settle: timedelta,
        concurrency: int = 16,
    ):
        self.sessions = sessions
        self.concurrency = concurrency
        self.fees = fees
        self.relay = relay
        self.settle = settle
        # Progressive billing, checked for each subscription's open period (progressive.py).
        self.progressive = None

    async def run(
        self, now: datetime | None = None, org: str = "", customer_id: str = "", test_clock_id: str = ""
    ) -> int:
        """Bills every due period; returns the number of invoices created
        (drafts included) or finalized. A subscription on a test clock is
        billed at its clock's time, not at `now`."""
        now = now or utcnow()
        query = select(Subscription)
        if org:
            query = query.where(Subscription.organization_id == org)
        if customer_id:
            query = query.where(Subscription.customer_id == customer_id)
        if test_clock_id:
            query = query.where(Subscription.test_clock_id == test_clock_id)
        async with self.sessions() as session:
            subscriptions = (await session.execute(query.order_by(Subscription.create_time))).scalars().all()
            clock_times = await clocks.times(session, subscriptions)
        gate = asyncio.Semaphore(self.concurrency)
        customers: dict[tuple[str, str], list[Subscription]] = {}
        for row in subscriptions:  # each customer's, for who owns events naming no subscription
            customers.setdefault((row.organization_id, row.customer_id), []).append(row)

        async def one(subscription: Subscription) -> tuple[int, int]:
            at = clocks.now_of(subscription, clock_times, now)
            if at is None:
                return 0, 0  # its clock is not known here yet
            # A clock's time stands still: its events are in before it moves, so nothing waits to settle.
            simulated = subscription.test_clock_id is not None
            async with gate:
                announced = await self.announce_trial_end(subscription, at)
                siblings = customers[(subscription.organization_id, subscription.customer_id)]
                billed = await self.bill(
                    subscription,
                    at,
                    waits_after_creation=not (customer_id or simulated),
                    siblings=siblings,
                    settle=timedelta(0) if simulated else self.settle,
                )
                return announced, billed

        # Subscriptions are billed side by side: each invoice locks its own
        # subscription, so they never wait on each other but for the number.
        outcomes = await asyncio.gather(*(one(s) for s in subscriptions), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        done = [o for o in outcomes if not isinstance(o, BaseException)]
        if any(announced or created for announced, created in done):
            self.relay.wake()
        if failures:
            raise failures[0]  # the others were billed; the next run retries this one
        return sum(created for _, created in done)

    async def announce_trial_end(self, subscription: Subscription, now: datetime) -> int:
        """Publishes trial_ended once the trial is over; 1 when this run did."""
        trial_end = subscription.trial_end_time
        if trial_end is None or subscription.trial_end_announced or trial_end > now:
            return 0
        end = subscription.terminate_time
        if end is not None and end < trial_end:  # cancelled during the trial: it never converted
            return 0
        async with self.sessions() as session, session.begin():
            claimed = await session.execute(
                update(Subscription)
                .where(Subscription.id == subscription.id, Subscription.trial_end_announced.is_(False))
                .values(trial_end_announced=True)
                .returning(Subscription.id)
            )
            if claimed.scalar_one_or_none() is None:
                return 0  # another run announced it
            event = events_pb2.TrialEnded(
                event_id=new_id("evt"),
                organization_id=subscription.organization_id,
                occur_time=to_proto(now),
                subscription_id=subscription.id,
                customer_id=subscription.customer_id,
                trial_end_time=to_proto(trial_end),
            )
            await outbox.enqueue(session, Outbox, TRIAL_ENDED, event)
        return 1

    async def bill(
        self,
        subscription: Subscription,
        now: datetime,
        waits_after_creation: bool,
        siblings: Sequence[Subscription] | None = None,
        settle: timedelta | None = None,
    ) -> int:
        """Bills the subscription's due periods. `siblings`: the customer's
        subscriptions when the caller has read them (see FeeCalculator.windows)."""
        plan = plan_of(subscription)
        cutoff = now - (self.settle if settle is None else settle)
        # In-advance fees hold no usage: only arrears wait for a backdated subscription's events.
        arrears_due = not (waits_after_creation and subscription.create_time > cutoff)
        advance = has_advance_fees(plan)
        created = 0
        before = None  # the period before, for its late usage
        for period in subscription_periods(subscription, plan, now):
            advanced = subscription.advance_billed_through
            if advance and (advanced is None or period.start >= advanced):
                created += await self._bill(subscription, plan, period, ADVANCE, now, siblings)
            billed = subscription.billed_through
            if arrears_due and period.end <= cutoff and (billed is None or period.end > billed):
                created += await self._bill(subscription, plan, period, ARREARS, now, siblings, before)
            before = period
        if self.progressive is not None:
            created += await self.progressive.check(subscription, plan, now)
        return created

    async def finalize(self, org: str, invoice_id: str) -> pb.Invoice:
        """Finalizes a stored draft now, before its grace period ends, with the usage known now."""
        async with self.sessions() as session:
            draft = await stored(session, org, invoice_id)
            if draft.status != drafts.DRAFT:
                raise invalid_transition(invoice_id, draft.status, "it cannot be finalized")
            subscription = await session.get(Subscription, draft.subscription_id)
            now = await clocks.present(session, subscription, utcnow())  # a test clock's customer: its time
        plan = plan_of(subscription)
        listed = subscription_periods(subscription, plan, draft.period_end)
        at = {p.start: i for i, p in enumerate(listed)}[draft.period_start]
        before = listed[at - 1] if at else None
        await self._bill(subscription, plan, listed[at], ARREARS, now, None, before, final=True)
        async with self.sessions() as session:
            return invoice_proto(await stored(session, org, invoice_id))

    async def _bill(
        self,
        subscription: Subscription,
        plan: plans_pb2.Plan,
        period: periods.Period,
        timing: int,
        now: datetime,
        siblings: Sequence[Subscription] | None,
        before: periods.Period | None = None,
        final: bool = False,
    ) -> int:
        # The period before, priced again with the usage known now (late usage), in the same metering call.
        both = [period] if before is None else [period, before]
        fees, *earlier = await self.fees.periods_fees(subscription, plan, both, timing, siblings)
        repriced = earlier[0] if earlier else None
        if fees or repriced:
            return int(await self._issue(subscription, plan, period, timing, fees, now, (before, repriced), final))
        async with self.sessions() as session, session.begin():  # nothing to bill: settle it all the same
            await self._settle(session, subscription, period, timing)
        return 0

    @staticmethod
    async def _settle(session, subscription: Subscription, period: periods.Period, timing: int) -> None:
        await issuing.settle(session, subscription.id, WATERMARKS[timing], period.end)

    async def _issue(
        self,
        subscription: Subscription,
        plan: plans_pb2.Plan,
        period: periods.Period,
        timing: int,
        fees: list[pb.Fee],
        now: datetime,
        late: tuple[periods.Period | None, list[pb.Fee] | None] = (None, None),
        final: bool = False,
    ) -> bool:
        """Issues the period's invoice, or keeps its draft during the grace
        period; True when an invoice was created or finalized."""
        taxes = await self.fees.tax_rates(subscription, plan)
        grace_end = period.end + timedelta(days=subscription.invoice_grace_period_days)
        bounds = (period.start, period.end)
        try:
            async with self.sessions() as session, session.begin():
                fresh = await issuing.lock(session, subscription.id)
                billed = WATERMARKS[timing].key
                if getattr(fresh, billed) is not None and getattr(fresh, billed) >= period.end:
                    raise Rollback  # another run, or an invoice on request, closed the period meanwhile
                draft = None
                if timing == ARREARS:
                    fees, prior = await issuing.deducted(session, subscription.id, fees, period.start, period.end)
                    before, repriced = late
                    owed = await late_usage.owed(session, subscription.id, before, repriced) if before else None
                    fees = [*fees, owed] if owed else fees
                    if not fees or (not owed and prior and sum(f.amount_cents for f in fees) == 0):
                        # Nothing to bill, or the invoices on request billed it all (a period
                        # billed on request has no draft: its invoice on request moved billing past it).
                        await self._settle(session, subscription, period, timing)
                        return False
                    # Only a customer with a grace period has drafts.
                    grace = subscription.invoice_grace_period_days
                    draft = await drafts.stored(session, subscription.id, period.start) if grace else None
                    if not final and now < grace_end:  # in its grace period: a draft, recomputed each run
                        await drafts.keep(session, draft, fresh, plan, bounds, fees, now, taxes, grace_end)
                        return draft is None
                invoice = await issuing.store(session, fresh, plan, bounds, timing, fees, now, taxes, draft=draft)
                await self._settle(session, subscription, period, timing)
        except Rollback:
            return False
        log.info(
            "invoice %s for %s period %s (%s)",
            invoice.number,
            subscription.id,
            period.start.isoformat(),
            invoice.timing,
        )
        return True


class Scheduler:
    """Runs the biller at start and then every `interval`."""

    def __init__(self, biller: Biller, interval: float):
        self.biller = biller
        self.interval = interval
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.biller.run()
            except Exception:
                log.exception("billing run failed; retrying on the next tick")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="billing-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


__all__ = ["INVOICE_FINALIZED", "Biller", "Scheduler", "has_advance_fees", "open_period", "pb"]
