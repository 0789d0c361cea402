"""ChartMogul, through its official Python client: a data source per
organization, customers (created or updated by external id), plans (made
when first needed, by plan code and version), invoices imported on
finalization with their line items, payments and credit notes as the
invoices' transactions, and subscription cancellations.

The client is synchronous (requests): each call runs in a thread, with the
request's own timeout, and a whole announcement's calls under one deadline.
Its API base is `Config.uri`, a class attribute an instance may override:
each account's Config points at VendorSettings.chartmogul_api_base.

Every write is idempotent by external id, so a retry after a lost answer
or a resync sends nothing twice: a customer or plan is looked up before it
is made, an invoice or transaction ChartMogul says already exists is a
success. ChartMogul's validation errors (400, 404, 422) fail a delivery for
good; server errors, rate limits and timeouts are retried.

Amounts: ChartMogul's `amount_in_cents` is hundredths of the currency's
major unit for every currency; bxb keeps ISO 4217 minor units, so a
zero-decimal amount (JPY 1000) is sent as 100000 and a three-decimal one
(KWD 1.235) as 124 (rounded half away from zero).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import chartmogul
import grpc
import requests

from bxb.catalog.v1 import plans_pb2, subscriptions_pb2
from services.common import currencies, peers
from services.common.errors import InvalidArgument, Unavailable
from services.payments.providers import hint
from services.payments.sinks import Account, Outgoing, Sent, Sink

if TYPE_CHECKING:
    from services.payments.vendors import VendorSettings

NAME = "chartmogul"
DATA_SOURCE_NAME = "bxb"
ACCEPTS = frozenset(
    {
        "customer.created",
        "customer.updated",
        "subscription.started",
        "subscription.terminated",
        "subscription.plan_changed",
        "invoice.finalized",
        "payment.succeeded",
        "payment.failed",
        # payment.refunded is left out: bxb refunds through refund credit
        # notes, whose credit_note.created carries the refund's own id and
        # amount (the payment's carries only the running total).
        "credit_note.created",
    }
)
# ChartMogul's answers that no retry can change.
REFUSED = frozenset({400, 404, 422})
# The interval of each bxb plan interval, in ChartMogul's terms.
INTERVALS = {"weekly": (1, "week"), "monthly": (1, "month"), "quarterly": (3, "month"), "yearly": (1, "year")}
SNIPPET = 500

Json = dict[str, Any]


class Answered(Exception):
    """ChartMogul answered with an error status."""

    def __init__(self, status: int, body: str):
        super().__init__(f"ChartMogul answered {status}: {body[:SNIPPET]}")
        self.status, self.body = status, body

    @property
    def exists(self) -> bool:
        """A 422 saying what was sent is there already (an earlier attempt made it)."""
        return self.status == 422 and "already exists" in self.body.lower()


class Unreachable(Exception):
    """No answer came from ChartMogul (connection refused, timeout)."""


class Permanent(Exception):
    """Something the announcement needs is not at ChartMogul and cannot come by retrying."""


def cents(minor: int, currency: str) -> int:
    """bxb's minor units of `currency` as ChartMogul's `amount_in_cents`
    (hundredths of the major unit), rounded half away from zero."""
    shift = 2 - currencies.exponent(currency)
    if shift >= 0:
        return minor * int(10**shift)
    scale: int = 10**-shift
    magnitude = (abs(minor) * 2 + scale) // (2 * scale)
    return magnitude if minor >= 0 else -magnitude


def shares(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights` (integers, summing exactly to
    `total`; the last weight takes what rounding leaves)."""
    whole = sum(weights)
    if not weights or whole == 0:
        return [0] * len(weights)
    split = [total * weight // whole for weight in weights[:-1]]
    return [*split, total - sum(split)]


def chartmogul_time(value: str) -> str:
    """An RFC 3339 timestamp of the public JSON as ChartMogul's ISO 8601."""
    return datetime.fromisoformat(value).isoformat()


def quantity(units: str) -> int:
    """A fee's units as ChartMogul's whole quantity (1 when not a positive whole number)."""
    try:
        value = Decimal(units)
    except InvalidOperation:
        return 1
    return int(value) if value == value.to_integral_value() and value > 0 else 1


@dataclass(frozen=True)
class PlanRef:
    """The plan version a subscription pins, as ChartMogul's plan needs it."""

    code: str
    version: int
    name: str
    interval: str  # the public JSON's: weekly, monthly, quarterly, yearly

    @property
    def external_id(self) -> str:
        return f"{self.code}:v{self.version}"


class Api:
    """One account's calls, each in a thread and raising Answered or Unreachable."""

    def __init__(self, base: str, api_key: str, timeout: float):
        self.config = chartmogul.Config(api_key, request_timeout=timeout, max_retries=0)
        self.config.uri = f"{base.rstrip('/')}/v1"  # the documented base, overridden for this account

    async def __call__(self, method: Callable[..., Any], **arguments: Any) -> Any:
        return await asyncio.to_thread(self._call, method, arguments)

    def _call(self, method: Callable[..., Any], arguments: dict[str, Any]) -> Any:
        try:
            return method(self.config, **arguments).get()
        except chartmogul.APIError as error:
            response = error.__cause__.response  # annotateHTTPError's HTTPError
            raise Answered(response.status_code, response.text) from None
        except requests.RequestException as error:
            raise Unreachable(f"ChartMogul did not answer: {type(error).__name__}") from None


class ChartMogulVendor:
    """The ChartMogul `Vendor`."""

    name = NAME
    accepts = ACCEPTS

    def __init__(self, settings: VendorSettings, catalog: peers.Catalog):
        self.settings = settings
        self.catalog = catalog  # the plan version an invoice's subscription pins

    def api(self, api_key: str) -> Api:
        return Api(self.settings.chartmogul_api_base, api_key, self.settings.timeout)

    async def connect(self, api_key: str, data_source_id: str) -> str:
        api = self.api(api_key)
        try:
            await api(chartmogul.Ping.ping)
            if data_source_id:
                found = await api(chartmogul.DataSource.retrieve, uuid=data_source_id)
                return str(found.uuid)
            named = await api(chartmogul.DataSource.all, name=DATA_SOURCE_NAME)
            if named.data_sources:
                return str(named.data_sources[0].uuid)
            made = await api(chartmogul.DataSource.create, data={"name": DATA_SOURCE_NAME})
            return str(made.uuid)
        except Answered as error:
            if error.status == 401:
                raise InvalidArgument(
                    f"ChartMogul refused the API key {hint(api_key)}: it must be an API key with write access",
                    field="api_key",
                    reason="INVALID_VALUE",
                ) from None
            if error.status == 404:
                raise InvalidArgument(
                    f"ChartMogul has no data source {data_source_id!r} in this account", field="data_source_id"
                ) from None
            raise Unavailable(f"the key could not be checked: ChartMogul answered {error.status}") from None
        except Unreachable as error:
            raise Unavailable(f"the key could not be checked: {error}") from None

    def sink(self, account: Account) -> Sink:
        return ChartMogulSink(self, account)


class ChartMogulSink:
    """Writes one organization's announcements to its ChartMogul data source."""

    def __init__(self, vendor: ChartMogulVendor, account: Account):
        self.vendor = vendor
        self.account = account
        self.api = vendor.api(account.api_key)
        self.source = account.data_source_id
        self.deadline = vendor.settings.timeout * 3  # an announcement takes a few calls

    async def send(self, outgoing: Outgoing) -> Sent:
        started = time.monotonic()

        def sent(succeeded: bool, status: int = 0, snippet: str = "", error: str = "", permanent: bool = False) -> Sent:
            latency = int((time.monotonic() - started) * 1000)
            return Sent(succeeded, status, latency, snippet[:SNIPPET], error[:SNIPPET], permanent)

        try:
            what = await asyncio.wait_for(self._apply(outgoing), self.deadline)
        except Answered as error:
            return sent(False, error.status, error.body, str(error), permanent=error.status in REFUSED)
        except Permanent as error:
            return sent(False, error=str(error), permanent=True)
        except Unreachable as error:
            return sent(False, error=str(error))
        except TimeoutError:
            return sent(False, error=f"ChartMogul took longer than {self.deadline:g}s")
        except grpc.aio.AioRpcError as error:  # the catalog's, retried: it comes back
            return sent(False, error=f"the catalog did not answer: {error.code().name}")
        return sent(True, 200, what)

    async def _apply(self, outgoing: Outgoing) -> str:
        """Sends one announcement; what was done, for the attempt's record."""
        data: Json = json.loads(outgoing.payload)["data"]
        kind = outgoing.type
        if kind in ("customer.created", "customer.updated"):
            return await self._customer(data["customer"])
        if kind == "subscription.started":
            await self._customer_uuid(data["subscription"]["customer_id"])
            plan = data["plan"]
            ref = PlanRef(plan["code"], plan["version"], plan["name"], plan["interval"])
            return f"plan {await self._plan_uuid(ref)}"
        if kind in ("subscription.terminated", "subscription.plan_changed"):
            return await self._cancel(data["subscription"])
        if kind == "invoice.finalized":
            return await self._invoice(outgoing.organization_id, data["invoice"])
        if kind == "credit_note.created":
            note = data["credit_note"]
            amount = cents(note["amount_cents"], note["currency"])
            return await self._transaction(
                note["invoice_id"], "refund", "successful", note["id"], note["created_at"], amount
            )
        payment = data["payment"]  # payment.succeeded, payment.failed
        result = "successful" if kind == "payment.succeeded" else "failed"
        external_id = f"{payment['id']}:{payment['attempt_count']}"
        amount = cents(payment["amount_cents"], payment["currency"])
        return await self._transaction(
            payment["invoice_id"], "payment", result, external_id, payment["update_time"], amount
        )

    # Customers

    async def _find_customer(self, external_id: str) -> Any:
        found = await self.api(chartmogul.Customer.all, data_source_uuid=self.source, external_id=external_id)
        return found.entries[0] if found.entries else None

    async def _customer(self, customer: Json) -> str:
        fields = {"name": customer["name"] or customer["id"], "email": customer["email"] or ""}
        existing = await self._find_customer(customer["id"])
        if existing is None:
            made = await self.api(
                chartmogul.Customer.create,
                data={"data_source_uuid": self.source, "external_id": customer["id"], **fields},
            )
            return f"customer {made.uuid} created"
        await self.api(chartmogul.Customer.modify, uuid=existing.uuid, data=fields)
        return f"customer {existing.uuid} updated"

    async def _customer_uuid(self, customer_id: str) -> str:
        """The customer's uuid, made with its id as name when ChartMogul has
        not heard of it (its customer.created came before the connection)."""
        existing = await self._find_customer(customer_id)
        if existing is not None:
            return str(existing.uuid)
        made = await self.api(
            chartmogul.Customer.create,
            data={"data_source_uuid": self.source, "external_id": customer_id, "name": customer_id},
        )
        return str(made.uuid)

    # Plans

    async def _find_plan(self, plan: PlanRef) -> str | None:
        found = await self.api(chartmogul.Plan.all, data_source_uuid=self.source, external_id=plan.external_id)
        return str(found.plans[0].uuid) if found.plans else None

    async def _plan_uuid(self, plan: PlanRef) -> str:
        """The plan's uuid, made when ChartMogul has none; deliveries of other
        customers run meanwhile, so one of them may make it first (ChartMogul
        then says it exists, and it is looked up again)."""
        found = await self._find_plan(plan)
        if found is not None:
            return found
        count, unit = INTERVALS[plan.interval]
        try:
            made = await self.api(
                chartmogul.Plan.create,
                data={
                    "data_source_uuid": self.source,
                    "name": f"{plan.name or plan.code} (v{plan.version})",
                    "interval_count": count,
                    "interval_unit": unit,
                    "external_id": plan.external_id,
                },
            )
        except Answered as answered:
            meanwhile = await self._find_plan(plan) if answered.exists else None
            if meanwhile is None:
                raise
            return meanwhile
        return str(made.uuid)

    async def _subscription_plan(self, org: str, subscription_id: str) -> PlanRef:
        """The plan version the subscription pins, read from the catalog."""
        subscription = await self.vendor.catalog.get_subscription(
            org, subscriptions_pb2.GetSubscriptionRequest(id=subscription_id)
        )
        plan = await self.vendor.catalog.get_plan(
            org, plans_pb2.GetPlanRequest(code=subscription.plan_code, version=subscription.plan_version)
        )
        interval = plans_pb2.PlanInterval.Name(plan.interval).removeprefix("PLAN_INTERVAL_").lower()
        return PlanRef(plan.code, plan.version, plan.name, interval)

    # Subscriptions

    async def _cancel(self, subscription: Json) -> str:
        """Sets the subscription's cancellation date at ChartMogul, where
        its invoices made it (before any invoice, there is none to cancel)."""
        if not subscription["terminated_at"]:
            return "not terminated"
        customer = await self._find_customer(subscription["customer_id"])
        if customer is None:
            return "customer not at ChartMogul: nothing to cancel"
        listed = await self.api(chartmogul.Customer.subscriptions, uuid=customer.uuid)
        matching = [entry for entry in listed.entries if entry.external_id == subscription["id"]]
        if not matching:
            return "subscription not at ChartMogul: nothing to cancel"
        dates = [chartmogul_time(subscription["terminated_at"])]
        await self.api(
            chartmogul.CustomerSubscription.cancel, uuid=matching[0].uuid, data={"cancellation_dates": dates}
        )
        return f"subscription {matching[0].uuid} cancelled"

    # Invoices and transactions

    async def _invoice(self, org: str, invoice: Json) -> str:
        customer_uuid = await self._customer_uuid(invoice["customer_id"])
        fees: list[Json] = invoice["fees"]
        subscription_fees = [fee for fee in fees if fee["type"] == "subscription"]
        plan_uuid = ""
        if subscription_fees and invoice["subscription_id"]:
            plan_uuid = await self._plan_uuid(await self._subscription_plan(org, invoice["subscription_id"]))
        currency = invoice["currency"]
        weights = [max(fee["amount_cents"], 0) for fee in fees]
        discounts = shares(-invoice["coupons_amount_cents"], weights)
        taxes = shares(invoice["taxes_amount_cents"], weights)
        lines = []
        for fee, discount, tax in zip(fees, discounts, taxes, strict=True):
            line: Json = {
                "amount_in_cents": cents(fee["amount_cents"] - discount + tax, currency),
                "discount_amount_in_cents": cents(discount, currency),
                "tax_amount_in_cents": cents(tax, currency),
                "quantity": quantity(fee["units"]),
                "description": fee["description"],
            }
            if plan_uuid and fee["type"] == "subscription":
                start = fee["period_start"] or invoice["period_start"]
                end = fee["period_end"] or invoice["period_end"]
                line |= {
                    "type": "subscription",
                    "subscription_external_id": invoice["subscription_id"],
                    "plan_uuid": plan_uuid,
                    "service_period_start": chartmogul_time(start),
                    "service_period_end": chartmogul_time(end),
                }
            else:
                line["type"] = "one_time"
            lines.append(line)
        document = {
            "external_id": invoice["id"],
            "date": chartmogul_time(invoice["issued_at"]),
            "currency": currency,
            "customer_external_id": invoice["customer_id"],
            "data_source_uuid": self.source,
            "line_items": lines,
        }
        try:
            await self.api(chartmogul.Invoice.create, uuid=customer_uuid, data={"invoices": [document]})
        except Answered as error:
            if not error.exists:
                raise
            return f"invoice {invoice['id']} was imported before"
        return f"invoice {invoice['id']} imported"

    async def _transaction(
        self, invoice_id: str, kind: str, result: str, external_id: str, date: str, amount: int
    ) -> str:
        found = await self.api(chartmogul.Invoice.all, data_source_uuid=self.source, external_id=invoice_id)
        if not found.invoices:
            raise Permanent(f"invoice {invoice_id} is not at ChartMogul: its invoice.finalized was not synced")
        data = {
            "type": kind,
            "date": chartmogul_time(date),
            "result": result,
            "external_id": external_id,
            "amount_in_cents": amount,
        }
        try:
            await self.api(chartmogul.Transaction.create, uuid=found.invoices[0].uuid, data=data)
        except Answered as error:
            if not error.exists:
                raise
            return f"{kind} {external_id} was recorded before"
        return f"{kind} {external_id} recorded"
