"""Baremetrics: bxb's public events written to an account's API source.

- customers (oid = the customer's id) on creation and update;
- plans (oid = code and version, `plan_key`), made when a subscription on
  them first arrives; a plan's free trial is its `trial_duration`, which is
  how Baremetrics knows a subscription's trial (it has no call marking a
  conversion, so subscription.trial_ended is not synced);
- subscriptions (oid = the subscription's id): created when they start,
  cancelled when terminated; a plan change cancels the subscription that
  ends (its successor starts as a subscription of its own; Baremetrics sums
  a customer's subscriptions, so it reads as an upgrade or a downgrade);
- charges (oid = the invoice's id, one payment per invoice; a declined
  attempt is a "failed" charge of its own) and refunds (from refund credit
  notes: oid = the credit note's id, on the invoice's charge). payment.refunded
  is not synced: the credit note already says what was given back. Charges are
  one-off charges: an account that also lets Baremetrics charge subscriptions
  automatically counts their revenue twice (Baremetrics' support turns that off).

Amounts are bxb's minor units unchanged (Baremetrics counts in each
currency's smallest unit as ISO 4217 does: yen, fils). Creating what exists
(a retry after a lost answer, a resync) is refused by Baremetrics; the
object is then looked up, and its existence is the success."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.payments import baremetrics_client as bm
from services.payments.sinks import Account, Outgoing, Sent, Sink
from services.payments.vendor_http import Missing, Unauthorized, VendorError, attempt, made_or_found, seconds, unix

NAME = "baremetrics"
API_SOURCE = "baremetrics"  # the provider of an account's API source

# bxb's plan intervals as Baremetrics' (interval, interval_count).
INTERVALS = {"weekly": ("day", 7), "monthly": ("month", 1), "quarterly": ("month", 3), "yearly": ("year", 1)}


def plan_key(code: str, version: int) -> str:
    """A plan version's oid: a new version may change the price."""
    return f"{code}_v{version}"


def _named(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return str(value) if value else ""


class BaremetricsSink:
    """Writes one account's announcements to its API source."""

    def __init__(self, vendor: Baremetrics, account: Account):
        self.vendor = vendor
        self.account = account
        self.source = account.data_source_id

    async def send(self, outgoing: Outgoing) -> Sent:
        async with bm.baremetrics(self.vendor.api_base, self.account.api_key, self.vendor.timeout) as client:
            return await attempt(client.api, lambda: self._write(client, outgoing))

    async def _write(self, client: bm.BaremetricsClient, outgoing: Outgoing) -> str:
        data = json.loads(outgoing.payload)["data"]
        match outgoing.type:
            case "customer.created":
                await self._customer(client, data["customer"], created=True)
            case "customer.updated":
                await self._customer(client, data["customer"], created=False)
            case "subscription.started":
                await self._subscription(client, data["subscription"], data["plan"])
            case "subscription.terminated":
                subscription = data["subscription"]
                when = subscription.get("terminated_at")
                await self._cancel(client, subscription["id"], unix(when) if when else seconds(outgoing.occur_time))
            case "subscription.plan_changed":
                await self._plan_changed(client, data["subscription"])
            case "payment.succeeded" | "payment.failed":
                await self._charge(client, data["payment"], paid=outgoing.type == "payment.succeeded")
            case "credit_note.created":
                return await self._refund(client, data["credit_note"])
            case _:
                raise ValueError(f"{outgoing.type} is not synced to Baremetrics")
        return ""

    async def _customer(self, client: bm.BaremetricsClient, customer: dict[str, Any], *, created: bool) -> None:
        oid, name, email = customer["id"], _named(customer, "name") or None, _named(customer, "email") or None
        update = bm.CustomerUpdate(name=name, email=email)
        if not created:
            try:
                await client.update_customer(self.source, oid, update)
                return
            except Missing:
                pass  # made before the account was connected: create it
        when = customer.get("created_at")
        request = bm.CustomerRequest(oid, name, email, unix(when) if when else None)

        async def brought_up_to_date() -> bool:
            await client.update_customer(self.source, oid, update)
            return True

        await made_or_found(lambda: client.create_customer(self.source, request), brought_up_to_date)

    async def _plan(self, client: bm.BaremetricsClient, plan: dict[str, Any]) -> str:
        oid = plan_key(plan["code"], plan["version"])
        interval, count = INTERVALS[plan["interval"]]
        request = bm.PlanRequest(
            oid=oid,
            name=plan.get("name") or plan["code"],
            currency=plan["currency"].lower(),
            amount=int(plan["amount_cents"]),
            interval=interval,
            interval_count=count,
            trial_duration=int(plan.get("trial_period_days") or 0),
        )
        # A plan version never changes: one made before is the same.
        await made_or_found(
            lambda: client.create_plan(self.source, request), lambda: _exists(client.plan(self.source, oid))
        )
        return oid

    async def _subscription(self, client: bm.BaremetricsClient, sub: dict[str, Any], plan: dict[str, Any]) -> None:
        plan_oid = await self._plan(client, plan)
        request = bm.SubscriptionRequest(sub["id"], sub["customer_id"], plan_oid, unix(sub["start_date"]))
        await made_or_found(
            lambda: client.create_subscription(self.source, request),
            lambda: _exists(client.subscription(self.source, sub["id"])),
        )

    async def _cancel(self, client: bm.BaremetricsClient, oid: str, canceled_at: int) -> None:
        async def cancelled() -> bool:  # by an earlier attempt, or by its termination after a plan change
            return (await client.subscription(self.source, oid)).canceled_at is not None

        await made_or_found(lambda: client.cancel_subscription(self.source, oid, canceled_at), cancelled)

    async def _plan_changed(self, client: bm.BaremetricsClient, sub: dict[str, Any]) -> None:
        if sub.get("next_subscription_id"):  # the subscription that ends
            await self._cancel(client, sub["id"], unix(sub["terminated_at"]))
        else:  # its successor: the previous one ends when it starts
            await self._cancel(client, sub["previous_subscription_id"], unix(sub["start_date"]))

    async def _charge(self, client: bm.BaremetricsClient, payment: dict[str, Any], *, paid: bool) -> None:
        oid = payment["invoice_id"] if paid else f"{payment['invoice_id']}-failed-{payment['attempt_count']}"
        request = bm.ChargeRequest(
            oid=oid,
            amount=int(payment["amount_cents"]),
            currency=payment["currency"].lower(),
            customer_oid=payment["customer_id"],
            created=unix(payment["update_time"] or payment["create_time"]),
            status="paid" if paid else "failed",
        )
        await made_or_found(
            lambda: client.create_charge(self.source, request), lambda: _exists(client.charge(self.source, oid))
        )

    async def _refund(self, client: bm.BaremetricsClient, note: dict[str, Any]) -> str:
        if note["type"] != "refund":
            return "a credit (not a refund): nothing to sync"
        request = bm.RefundRequest(
            oid=note["id"],
            amount=int(note["amount_cents"]),
            currency=note["currency"].lower(),
            customer_oid=note["customer_id"],
            charge_oid=note["invoice_id"],
            created=unix(note["created_at"]),
        )
        await made_or_found(
            lambda: client.create_refund(self.source, request), lambda: _exists(client.refund(self.source, note["id"]))
        )
        return ""


async def _exists(lookup: Awaitable[object]) -> bool:
    await lookup  # raises Missing when it does not
    return True


@dataclass
class Baremetrics:
    """The Baremetrics vendor (services/payments/sinks.Vendor)."""

    api_base: str
    timeout: float
    name: str = NAME
    accepts: frozenset[str] = frozenset(
        {
            "customer.created",
            "customer.updated",
            "subscription.started",
            "subscription.terminated",
            "subscription.plan_changed",
            "payment.succeeded",
            "payment.failed",
            "credit_note.created",
        }
    )

    async def connect(self, api_key: str, data_source_id: str) -> str:
        """Checks the key by listing the account's sources; returns the API
        source given, or the account's own when none is."""
        try:
            async with bm.baremetrics(self.api_base, api_key, self.timeout) as client:
                sources = await client.sources()
        except Unauthorized as exc:
            raise InvalidArgument("Baremetrics refused the API key", field="api_key") from exc
        except VendorError as exc:
            raise Unavailable(f"Baremetrics could not check the key: {exc.message}") from exc
        writable = [source.id for source in sources if source.provider == API_SOURCE]
        if data_source_id:
            if data_source_id not in writable:
                raise InvalidArgument(
                    f"{data_source_id!r} is not an API source of this Baremetrics account", field="data_source_id"
                )
            return data_source_id
        if not writable:
            raise FailedPrecondition("the Baremetrics account has no API source")
        return writable[0]

    def sink(self, account: Account) -> Sink:
        return BaremetricsSink(self, account)
