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

A run bills pages of subscriptions (a customer's all on one page, one
organization a page): each page is priced with one metering call (per 500 usage queries), taxed with
one catalog call and stored in one transaction that locks its subscriptions
in id order, numbers its invoices with one reservation and queues their
announcements in one statement. A page that fails is billed again one
subscription at a time, so one that cannot be billed holds up no other.

A run issues at most MAX_DUE_PER_RUN invoices of one subscription, the
oldest first: a subscription backdated by decades, or a test clock moved by
decades, is billed in bounded chunks, and the scheduler runs again at once
while any is behind. A terminated subscription whose every period is
settled is marked finished, and no run reads it again.

Two runs racing for the same period cannot both invoice it: each page checks
the watermarks under its locks and skips what the other billed; the unique
(subscription, period start, timing) key is the last guard (its page rolls
back, its invoice numbers with it, so numbers stay gapless). Each timing
has a watermark on the subscription (`advance_billed_through`,
`billed_through`) so settled periods are not priced again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from google.protobuf import json_format
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import plans_pb2, taxes_pb2
from bxb.invoicing.v1 import events_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common import metrics, outbox, periods
from services.common.errors import DomainError
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow
from services.invoicing import clocks, coupons, drafts, issuing, late_usage
from services.invoicing.fees import FeeCalculator, Job
from services.invoicing.invoice_view import invoice_proto, stored
from services.invoicing.issuing import INVOICE_FINALIZED
from services.invoicing.lifecycle import invalid_transition
from services.invoicing.models import Invoice, Outbox, Subscription

if TYPE_CHECKING:  # progressive.py builds on this module
    from services.invoicing.progressive import ProgressiveBilling

log = logging.getLogger("bxb.billing")

TRIAL_ENDED = "bxb.invoicing.v1.trial_ended"
ADVANCE, ARREARS = pb.BILLING_TIMING_IN_ADVANCE, pb.BILLING_TIMING_IN_ARREARS
# The watermark column of each timing: every period up to it is settled.
WATERMARKS = {ADVANCE: Subscription.advance_billed_through, ARREARS: Subscription.billed_through}


def has_advance_fees(plan: plans_pb2.Plan) -> bool:
    """Whether the plan bills anything at the start of its periods."""
    return (plan.pay_in_advance and plan.amount_cents > 0) or any(c.pay_in_advance for c in plan.charges)


# The most invoices (or drafts) of one subscription a run issues; the next run goes on.
MAX_DUE_PER_RUN = 24

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


@dataclass
class Due:
    """One invoice a billing page may issue: a subscription's period at one timing."""

    subscription: Subscription
    plan: plans_pb2.Plan
    period: periods.Period
    timing: pb.BillingTiming.ValueType
    now: datetime
    siblings: Sequence[Subscription] | None = None  # the customer's subscriptions, when read (FeeCalculator.windows)
    before: periods.Period | None = None  # in arrears: the period before, priced again for its late usage
    final: bool = False  # finalize even during the grace period
    fees: list[pb.Fee] = field(default_factory=list)
    repriced: list[pb.Fee] | None = None  # the period before as priced now

    @property
    def key(self) -> tuple[str, datetime]:
        return self.subscription.id, self.period.start


# A page: subscriptions billed together (with their billing time and due invoices).
Page = list[tuple[Subscription, datetime, list[Due]]]


class Biller:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        fees: FeeCalculator,
        relay: outbox.OutboxRelay,
        settle: timedelta,
        concurrency: int = 2,
        page_size: int = 200,
        progressive: ProgressiveBilling | None = None,
    ):
        self.sessions = sessions
        self.concurrency = concurrency  # pages billed side by side
        self.page_size = page_size  # subscriptions per page
        self.fees = fees
        self.relay = relay
        self.settle = settle
        # Progressive billing, checked for each subscription's open period; none without it.
        self.progressive = progressive

    async def run(
        self, now: datetime | None = None, org: str = "", customer_id: str = "", test_clock_id: str = ""
    ) -> int:
        """Bills every due period, at most MAX_DUE_PER_RUN of one subscription;
        returns the number of invoices created (drafts included) or finalized.
        A subscription on a test clock is billed at its clock's time, not at
        `now`."""
        created, _ = await self.sweep(now, org, customer_id, test_clock_id)
        return created

    async def sweep(
        self, now: datetime | None = None, org: str = "", customer_id: str = "", test_clock_id: str = ""
    ) -> tuple[int, bool]:
        """`run`, and whether some subscription has more due than it billed;
        timed, with the invoices it made (metrics.py): "scheduled" when over
        every organization, else "requested"."""
        async with metrics.timed_run("requested" if org else "scheduled") as made:
            created, behind = await self._sweep(now, org, customer_id, test_clock_id)
            made(created)
        return created, behind

    async def _sweep(
        self, now: datetime | None = None, org: str = "", customer_id: str = "", test_clock_id: str = ""
    ) -> tuple[int, bool]:
        now = now or utcnow()
        query = select(Subscription).where(Subscription.billing_finished.is_(False))
        if org:
            query = query.where(Subscription.organization_id == org)
        if customer_id:
            query = query.where(Subscription.customer_id == customer_id)
        if test_clock_id:
            query = query.where(Subscription.test_clock_id == test_clock_id)
        async with self.sessions() as session:
            order = (Subscription.organization_id, Subscription.customer_id, Subscription.create_time)
            subscriptions = (await session.execute(query.order_by(*order))).scalars().all()
            present = await clocks.presents(session, subscriptions, now)
        customers: dict[tuple[str, str], list[Subscription]] = {}
        for row in subscriptions:  # each customer's, for who owns events naming no subscription
            customers.setdefault((row.organization_id, row.customer_id), []).append(row)
        announced, behind, finished = 0, False, []
        pages: list[Page] = []
        for (org_id, _), rows in customers.items():
            # A page holds one organization's subscriptions, a customer's all in one.
            if not pages or pages[-1][0][0].organization_id != org_id or len(pages[-1]) >= self.page_size:
                pages.append([])
            for subscription in rows:
                at = present.get(subscription.id)
                if at is None:
                    continue  # its clock is not known here yet
                announced += await self.announce_trial_end(subscription, at)
                # A clock's time stands still: its events are in before it moves, so nothing waits to settle.
                simulated = subscription.test_clock_id is not None
                waits = not (customer_id or simulated)
                settle = timedelta(0) if simulated else self.settle
                due = self.dues(subscription, at, waits, rows, settle)
                behind = behind or len(due) > MAX_DUE_PER_RUN
                if self.finished(subscription):
                    finished.append(subscription.id)
                pages[-1].append((subscription, at, due[:MAX_DUE_PER_RUN]))
        gate = asyncio.Semaphore(self.concurrency)

        async def one(page: Page) -> int:
            async with gate:
                return await self.bill_page(page)

        outcomes = await asyncio.gather(*(one(page) for page in pages if page), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        created = sum(o for o in outcomes if not isinstance(o, BaseException))
        if finished:
            async with self.sessions() as session, session.begin():
                await session.execute(
                    update(Subscription).where(Subscription.id.in_(finished)).values(billing_finished=True)
                )
        if announced or created:
            self.relay.wake()
        if failures:
            raise failures[0]  # the others were billed; the next run retries this one
        return created, behind

    @staticmethod
    def finished(subscription: Subscription) -> bool:
        """Whether nothing of the subscription can fall due any more: it has
        ended, the watermarks of its timings have reached its end (or it had
        no period at all), and no trial is left to announce."""
        end = subscription.terminate_time
        if end is None:
            return False
        if end > subscription.billing_start:  # it had periods: each settled, up to the last
            marks = [subscription.billed_through]
            if has_advance_fees(plan_of(subscription)):
                marks.append(subscription.advance_billed_through)
            if any(mark is None or mark < end for mark in marks):
                return False
        trial = subscription.trial_end_time
        return trial is None or trial > end or subscription.trial_end_announced

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

    def dues(
        self,
        subscription: Subscription,
        now: datetime,
        waits_after_creation: bool,
        siblings: Sequence[Subscription] | None = None,
        settle: timedelta | None = None,
    ) -> list[Due]:
        """The subscription's periods due for an invoice at `now`, as its watermarks stood when read."""
        plan = plan_of(subscription)
        cutoff = now - (self.settle if settle is None else settle)
        # In-advance fees hold no usage: only arrears wait for a backdated subscription's events.
        arrears_due = not (waits_after_creation and subscription.create_time > cutoff)
        advance = has_advance_fees(plan)
        due = []
        before = None  # the period before, for its late usage
        for period in subscription_periods(subscription, plan, now):
            advanced = subscription.advance_billed_through
            if advance and (advanced is None or period.start >= advanced):
                due.append(Due(subscription, plan, period, ADVANCE, now, siblings))
            billed = subscription.billed_through
            if arrears_due and period.end <= cutoff and (billed is None or period.end > billed):
                due.append(Due(subscription, plan, period, ARREARS, now, siblings, before))
            before = period
        return due

    async def bill(
        self,
        subscription: Subscription,
        now: datetime,
        waits_after_creation: bool,
        siblings: Sequence[Subscription] | None = None,
        settle: timedelta | None = None,
    ) -> int:
        """Bills one subscription's due periods (a page of one)."""
        return await self.bill_page(
            [(subscription, now, self.dues(subscription, now, waits_after_creation, siblings, settle))]
        )

    async def bill_page(self, page: Page) -> int:
        """Bills a page; when that fails, its subscriptions one by one, so a
        subscription that cannot be billed holds up no other."""
        try:
            return await self._bill_page(page)
        except Exception as error:
            if len(page) == 1:
                raise
            failed(log, error, f"billing page of {len(page)} subscriptions failed; billing them one by one")
        created, failures = 0, []
        for one in page:
            try:
                created += await self._bill_page([one])
            except Exception as failure:
                failures.append(failure)
        if failures:
            raise failures[0]  # the others were billed; the next run retries this one
        return created

    async def _bill_page(self, page: Page) -> int:
        created = await self.issue([due for _, _, dues in page for due in dues])
        if self.progressive is not None:
            for subscription, at, _ in page:
                created += await self.progressive.check(subscription, plan_of(subscription), at)
        return created

    async def finalize(self, org: str, invoice_id: str) -> pb.Invoice:
        """Finalizes a stored draft now, before its grace period ends, with the usage known now."""
        async with self.sessions() as session:
            draft = await stored(session, org, invoice_id)
            if draft.status != drafts.DRAFT:
                raise invalid_transition(invoice_id, draft.status, "it cannot be finalized")
            subscription = await session.get_one(Subscription, draft.subscription_id)
            now = await clocks.present(session, subscription, utcnow())  # a test clock's customer: its time
        plan = plan_of(subscription)
        listed = subscription_periods(subscription, plan, draft.period_end)
        at = {p.start: i for i, p in enumerate(listed)}[draft.period_start]
        before = listed[at - 1] if at else None
        await self.issue([Due(subscription, plan, listed[at], ARREARS, now, before=before, final=True)])
        async with self.sessions() as session:
            return invoice_proto(await stored(session, org, invoice_id))

    async def issue(self, dues: list[Due]) -> int:
        """Issues the due invoices of one organization: priced with one
        metering call (the period before each, for its late usage, priced in
        it too, unless it is due here as well), taxed with one catalog call,
        stored in one transaction. Returns the invoices created or finalized."""
        if not dues:
            return 0
        here = {due.key for due in dues if due.timing == ARREARS}
        jobs: list[Job] = []
        for due in dues:
            late = due.before is not None and (due.subscription.id, due.before.start) not in here
            due.before = due.before if late else None
            listed = [due.period] if due.before is None else [due.period, due.before]
            jobs.append((due.subscription, due.plan, listed, due.timing, due.siblings))
        for due, (fees, *earlier) in zip(dues, await self.fees.jobs_fees(jobs), strict=True):
            due.fees, due.repriced = fees, earlier[0] if earlier else None
        org = dues[0].subscription.organization_id
        taxes = await self.fees.jobs_taxes(org, [(d.subscription.customer_id, d.plan.tax_codes) for d in dues])
        async with self.sessions() as session, session.begin():
            issued, created = await self._store(session, dues, taxes)
            await issuing.announce(session, issued)
        if issued:
            log.info("issued %d invoices (%s to %s)", len(issued), issued[0].number, issued[-1].number)
        return created

    async def _store(
        self, session: AsyncSession, dues: list[Due], taxes: list[list[taxes_pb2.Tax]]
    ) -> tuple[list[Invoice], int]:
        """Stores each due invoice (or draft, or nothing) in the page's
        transaction; the issued invoices, unnumbered, and the count created."""
        rows = await issuing.lock(session, [due.subscription.id for due in dues])
        arrears = [due for due in dues if due.timing == ARREARS]
        prior = await issuing.already_billed(session, [due.key for due in arrears])
        # A due has `repriced` only with the period before (`issue`).
        repriced = [(d.subscription.id, d.before) for d in arrears if d.repriced and d.before is not None]
        late = await late_usage.billed(session, repriced)
        graced = [due.key for due in arrears if rows[due.subscription.id].invoice_grace_period_days]
        kept = await drafts.stored(session, graced)
        org = dues[0].subscription.organization_id
        since, until = min(due.now for due in dues), max(due.now for due in dues)
        holders = await coupons.holders(session, org, {due.subscription.customer_id for due in dues}, since, until)
        issued: list[Invoice] = []
        created = 0
        for due, tax in zip(dues, taxes, strict=True):
            row = rows[due.subscription.id]
            watermark = WATERMARKS[due.timing]
            billed = getattr(row, watermark.key)
            if billed is not None and billed >= due.period.end:
                continue  # another run, or an invoice on request, closed the period meanwhile
            fees, draft, period = due.fees, None, due.period
            if due.timing == ARREARS:
                deducted = prior.get(due.key, 0)
                fees = [*fees, issuing.deduction(deducted, period.start, period.end)] if deducted else fees
                owed = (
                    late_usage.owed(late[(row.id, due.before.start)], due.before, due.repriced)
                    if due.repriced and due.before is not None
                    else None
                )
                fees = [*fees, owed] if owed else fees
                if not fees or (not owed and deducted and sum(f.amount_cents for f in fees) == 0):
                    # Nothing to bill, or the invoices on request billed it all (a period
                    # billed on request has no draft: its invoice on request moved billing past it).
                    issuing.settle(row, watermark, period.end)
                    continue
                # Only a customer with a grace period has drafts.
                draft = kept.get(due.key)
                grace_end = period.end + timedelta(days=row.invoice_grace_period_days)
                if not due.final and due.now < grace_end:  # in its grace period: a draft, recomputed each run
                    bounds = (period.start, period.end)
                    await drafts.keep(session, draft, row, due.plan, bounds, fees, due.now, tax, grace_end)
                    created += draft is None
                    continue
            bounds = (period.start, period.end)
            discounted = row.customer_id in holders
            issued.append(
                await issuing.store(
                    session, row, due.plan, bounds, due.timing, fees, due.now, tax, draft=draft, discounted=discounted
                )
            )
            issuing.settle(row, watermark, period.end)
            created += 1
        return issued, created


def failed(logger: logging.Logger, error: Exception, what: str) -> None:
    """Logs a failed run: a refusal the domain expects (an amount out of
    range, billing caught up meanwhile) in one line, anything else with its
    traceback; either is retried by the next run."""
    if isinstance(error, DomainError):
        logger.warning("%s: %s", what, error.message)
    else:
        logger.error(what, exc_info=error)


class Scheduler:
    """Runs the biller at start and then every `interval`, at once again
    while a run leaves more due than it billed; and follows a bounded
    RunBilling's scope (`follow`) in the background until it is caught up."""

    def __init__(self, biller: Biller, interval: float):
        self.biller = biller
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._following: dict[tuple[str, str, str], asyncio.Task[None]] = {}

    def wake(self) -> None:
        self._wake.set()

    def follow(self, org: str, customer_id: str = "", test_clock_id: str = "") -> None:
        """Goes on billing this scope (RunBilling's) in the background, run
        after run, until nothing in it is behind; once per scope at a time."""
        scope = (org, customer_id, test_clock_id)
        if scope not in self._following:
            self._following[scope] = asyncio.create_task(self._follow(scope), name=f"billing-follow:{org}")

    async def _follow(self, scope: tuple[str, str, str]) -> None:
        org, customer_id, test_clock_id = scope
        behind = True
        try:
            while behind:
                _, behind = await self.biller.sweep(org=org, customer_id=customer_id, test_clock_id=test_clock_id)
        except Exception as error:
            failed(log, error, f"billing {scope} in the background failed; the scheduler's runs go on")
        finally:
            self._following.pop(scope, None)

    async def _loop(self) -> None:
        while True:
            behind = False
            try:
                _, behind = await self.biller.sweep()
            except Exception as error:
                failed(log, error, "billing run failed; retrying on the next tick")
            if behind:  # a subscription has more due than one run bills: go on at once
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="billing-scheduler")

    async def stop(self) -> None:
        tasks = [*([self._task] if self._task is not None else []), *self._following.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None


__all__ = ["INVOICE_FINALIZED", "Biller", "Scheduler", "has_advance_fees", "open_period", "pb"]
