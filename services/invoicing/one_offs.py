"""One-off invoices: an add-on applied to a customer is invoiced at once,
alone (no subscription, no period: it bills the moment it was applied).

Issued from the catalog's add_on_applied event, and by catching up when a
customer's invoices are read; either way once per applied add-on (a
redelivery finds its invoice). It carries the taxes the add-on names, else
the customer's, else the organization's; coupons discount subscription
invoices, not one-off charges.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import add_ons_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common.decimals import canonical
from services.common.outbox import OutboxRelay
from services.common.timestamps import from_proto
from services.invoicing import issuing, taxation
from services.invoicing.fees import FeeCalculator
from services.invoicing.models import Invoice
from services.invoicing.pricing.money import from_minor

log = logging.getLogger("bxb.one_offs")


class OneOffInvoices:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], fees: FeeCalculator, relay: OutboxRelay):
        self.sessions = sessions
        self.fees = fees
        self.relay = relay

    async def issue(self, org: str, applied: add_ons_pb2.AppliedAddOn) -> None:
        async with self.sessions() as session:
            known = await session.execute(select(Invoice.id).where(Invoice.source_id == applied.id))
            if known.first() is not None:
                return  # a redelivery, or caught up already
        add_on, at = applied.add_on, from_proto(applied.create_time)
        price = from_minor(applied.amount_cents, applied.currency)
        fee = pb.Fee(
            type=pb.FEE_TYPE_ADD_ON,
            amount_cents=applied.amount_cents,
            units="1",
            unit_amount=canonical(price),
            precise_amount=canonical(price),
            description=add_on.name,
            period_start=applied.create_time,
            period_end=applied.create_time,
        )
        [taxes] = await taxation.resolve(self.fees.catalog, org, [(applied.customer_id, add_on.tax_codes)])
        invoice = Invoice(
            organization_id=org,
            customer_id=applied.customer_id,
            subscription_id="",
            plan_code="",
            currency=applied.currency,
            period_start=at,
            period_end=at,
            timing=pb.BillingTiming.Name(pb.BILLING_TIMING_ONE_OFF),
            calculation_id="",
            source_id=applied.id,
        )
        try:
            async with self.sessions() as session, session.begin():
                await issuing.record(session, invoice, [fee], [], taxes, at)
        except IntegrityError:  # issued a moment ago by the other path
            return
        log.info("invoice %s for add-on %s of %s", invoice.number, add_on.code, applied.customer_id)
        self.relay.wake()
