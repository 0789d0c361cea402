"""Tax lines and totals of an invoice: pure arithmetic on the subtotal after
coupons.

Each tax is levied on the subtotal less the coupons, and rounded half up to
the minor unit on its own line; the total is that base plus every line.
Which taxes apply is the catalog's answer (TaxService.BatchResolveTaxes: the
plan's, else the customer's, else the organization's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from bxb.catalog.v1 import taxes_pb2
from bxb.invoicing.v1 import invoices_pb2 as pb
from services.common import peers
from services.invoicing.pricing.money import from_minor, to_minor, within

BATCH = 1000  # the most invoices catalog's BatchResolveTaxes takes


@dataclass(frozen=True)
class Totals:
    """An invoice's amounts in minor units, as issued invoices and drafts show them."""

    subtotal: int
    discount: int  # the coupons: negative or 0
    taxes: list[pb.InvoiceTax]
    tax: int

    @property
    def total(self) -> int:
        return self.subtotal + self.discount + self.tax


def totals(
    fees: Sequence[pb.Fee], given: Sequence[pb.InvoiceCoupon], currency: str, taxes: Sequence[taxes_pb2.Tax]
) -> Totals:
    subtotal = within(sum(fee.amount_cents for fee in fees), "the subtotal")
    discount = sum(c.discount_cents for c in given)
    levied = tax_lines(subtotal + discount, currency, taxes)
    found = Totals(subtotal, discount, levied, sum(t.amount_cents for t in levied))
    within(found.total, "the total")
    return found


def tax_lines(base_cents: int, currency: str, taxes: Sequence[taxes_pb2.Tax]) -> list[pb.InvoiceTax]:
    base = from_minor(base_cents, currency)
    return [
        pb.InvoiceTax(
            code=tax.code,
            name=tax.name,
            rate=tax.rate,
            taxable_amount_cents=base_cents,
            amount_cents=to_minor(base * Decimal(tax.rate) / 100, currency, f"tax {tax.code!r}"),
        )
        for tax in taxes
    ]


async def resolve(
    catalog: peers.Catalog | None, org: str, invoiced: Sequence[tuple[str, Sequence[str]]]
) -> list[list[taxes_pb2.Tax]]:
    """The taxes of each invoice in `invoiced`, a (customer id, tax codes of
    what it bills: a plan, an add-on) pair; none without a catalog. One
    catalog call per BATCH invoices."""
    if catalog is None:
        return [[] for _ in invoiced]
    replies = await asyncio.gather(
        *(
            catalog.batch_resolve_taxes(
                org,
                taxes_pb2.BatchResolveTaxesRequest(
                    requests=[
                        taxes_pb2.ResolveTaxesRequest(customer_id=customer_id, plan_tax_codes=codes)
                        for customer_id, codes in invoiced[first : first + BATCH]
                    ]
                ),
            )  # never waits for a catalog that is away: reads price drafts, and a read answers 503 at once
            for first in range(0, len(invoiced), BATCH)
        )
    )
    return [list(answer.taxes) for reply in replies for answer in reply.responses]
