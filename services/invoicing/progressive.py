"""Progressive billing: once a period's usage fees reach one of the plan's
usage thresholds, the period so far is invoiced at once (timing
PROGRESSIVE), as an invoice on request up to that moment would be; the
period-end invoice deducts it. Checked by every billing run, for the open
period only, and only once the periods before it are invoiced. Reaching
several thresholds between two runs issues one invoice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import plans_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common import periods
from services.common.errors import Aborted
from services.invoicing import thresholds
from services.invoicing.billing import open_period
from services.invoicing.fees import FeeCalculator
from services.invoicing.models import Subscription
from services.invoicing.requested import RequestedInvoices, billed_to


class ProgressiveBilling:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], fees: FeeCalculator, requested: RequestedInvoices):
        self.sessions = sessions
        self.fees = fees
        self.requested = requested

    async def check(self, subscription: Subscription, plan: plans_pb2.Plan, now: datetime) -> int:
        """Invoices the open period so far when it reached a new threshold; 1 when it did."""
        if not plan.usage_thresholds:
            return 0
        period = open_period(subscription, plan, now)
        if period is None:
            return 0
        async with self.sessions() as session:
            start = await billed_to(session, subscription)
            before = await thresholds.invoiced(session, subscription.id, period.start)
        if not period.start <= start < now:  # earlier periods close first; or just invoiced
            return 0
        so_far = periods.Period(period.start, now, period.full_start, period.full_end)
        usage = sum(f.amount_cents for f in await self.fees.charge_fees(subscription, plan, so_far))
        crossed = thresholds.crossings(plan.usage_thresholds, usage)
        if crossed <= before:
            return 0
        reached = thresholds.Crossing(period.start, crossed, usage, thresholds.highest(plan.usage_thresholds, crossed))
        try:
            await self.requested.issue(
                subscription, None, start, now, pb.BILLING_TIMING_PROGRESSIVE, now, crossed=reached
            )
        except Aborted:  # another run invoiced it meanwhile
            return 0
        return 1
