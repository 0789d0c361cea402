"""The public API's two dialects, declared: what they need beyond proto JSON.

bxb's own routes and the ABAXUS routes of the seed documents are one API
over the same RPCs. Where their JSON differs from the protos' (a field's
name, a second spelling accepted on input, empty values shown as null, a
status code), it is said here, once, per message and per route; no proto and
no service knows a dialect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.bindings import Binding
from gateway.codec import View, Views

CREATED = View(names={"create_time": "created_at"})

BXB: Views = {
    "bxb.catalog.v1.Tax": CREATED,
    "bxb.catalog.v1.Customer": View(
        names={"create_time": "created_at", "invoice_grace_period_days": "invoice_grace_period"},
        aliases={"external_id": "id"},
        copies={"external_id": "id"},
        nulls=frozenset({"currency", "test_clock_id"}),
        objects=frozenset({"billing"}),
    ),
    "bxb.catalog.v1.BillingConfiguration": View(nulls=frozenset({"provider", "provider_customer_id"})),
    "bxb.catalog.v1.CreateCustomerRequest": View(inline="customer"),
    "bxb.catalog.v1.TestClock": CREATED,
    "bxb.catalog.v1.AdvanceTestClockResponse": View(inline="test_clock"),
    "bxb.invoicing.v1.CreditNote": View(names={"create_time": "created_at", "kind": "type"}),
    # A service's errors name the request's `kind` as such.
    "bxb.invoicing.v1.CreateCreditNoteRequest": View(aliases={"type": "kind"}),
}


@dataclass(frozen=True)
class Spelling:
    """How one route reads and answers."""

    views: Views
    status: int = 200


@dataclass(frozen=True)
class Dialect:
    """The spelling of every route: `views` unless `routes` says otherwise
    for a route (its verb and template); a create answers 201."""

    views: Views
    routes: Mapping[tuple[str, str], Spelling] = field(default_factory=dict)

    def spelling(self, binding: Binding) -> Spelling:
        declared = self.routes.get((binding.verb, binding.template))
        if declared is not None:
            return declared
        created = binding.verb == "POST" and binding.method.name.startswith("Create")
        return Spelling(self.views, 201 if created else 200)


PUBLIC = Dialect(BXB)
