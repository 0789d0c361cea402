"""ProfitWell: bxb's public events written to a company's ProfitWell account.

ProfitWell computes revenue from subscriptions alone: it has no API for
charges, refunds or plans, nor one that creates a customer. So only the
subscriptions' lifecycle is synced:

- subscription.started creates the subscription (alias = its id) for the
  user aliased by the customer's id (made with its first subscription),
  "trialing" while its free trial runs, at the plan's base fee per period
  (`plan_id` = code and version, as baremetrics.plan_key); ProfitWell knows
  monthly and yearly plans only, so a weekly or quarterly plan is refused;
- subscription.trial_ended converts it: an update to "active" from the end
  of the trial, at the plan and value ProfitWell holds;
- subscription.terminated churns it (voluntary) at its termination; a plan
  change churns the subscription that ends (its successor starts as one of
  its own; ProfitWell sums a user's subscriptions, so it reads as an upgrade
  or a downgrade);
- customer.updated changes the user's email, once the user exists.

ProfitWell needs an email to create a subscription: the announcement's
`data.customer.email` when it carries the customer, else the user's at
ProfitWell (a customer's later subscriptions). Amounts are bxb's minor
units unchanged (ProfitWell's "cents" are the currency's smallest unit).
Idempotent by alias: a refused creation or churn is a success when the
user's history at ProfitWell shows it done already."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.common.errors import InvalidArgument, Unavailable
from services.common.timestamps import parse_rfc3339
from services.payments import profitwell_client as pw
from services.payments.baremetrics import plan_key
from services.payments.sinks import Account, Outgoing, Sent, Sink
from services.payments.vendor_http import (
    Missing,
    Refused,
    Unauthorized,
    VendorError,
    attempt,
    made_or_found,
    seconds,
    unix,
)

NAME = "profitwell"
INTERVALS = {"monthly": "month", "yearly": "year"}


class ProfitWellSink:
    """Writes one company's announcements to ProfitWell."""

    def __init__(self, vendor: ProfitWell, account: Account):
        self.vendor = vendor
        self.account = account

    async def send(self, outgoing: Outgoing) -> Sent:
        async with pw.profitwell(self.vendor.api_base, self.account.api_key, self.vendor.timeout) as client:
            return await attempt(client.api, lambda: self._write(client, outgoing))

    async def _write(self, client: pw.ProfitWellClient, outgoing: Outgoing) -> str:
        data = json.loads(outgoing.payload)["data"]
        match outgoing.type:
            case "customer.updated":
                return await self._email(client, data["customer"])
            case "subscription.started":
                await self._start(client, data, outgoing)
            case "subscription.trial_ended":
                return await self._convert(client, data)
            case "subscription.terminated":
                sub = data["subscription"]
                when = sub.get("terminated_at")
                await self._churn(
                    client, sub["customer_id"], sub["id"], unix(when) if when else seconds(outgoing.occur_time)
                )
            case "subscription.plan_changed":
                sub = data["subscription"]
                if sub.get("next_subscription_id"):  # the subscription that ends
                    await self._churn(client, sub["customer_id"], sub["id"], unix(sub["terminated_at"]))
                else:  # its successor: the previous one ends when it starts
                    await self._churn(
                        client, sub["customer_id"], sub["previous_subscription_id"], unix(sub["start_date"])
                    )
            case _:
                raise ValueError(f"{outgoing.type} is not synced to ProfitWell")
        return ""

    async def _latest(self, client: pw.ProfitWellClient, user: str, alias: str) -> pw.Subscription | None:
        """The subscription as ProfitWell last recorded it; None when it has none."""
        try:
            history = await client.history(user)
        except Missing:
            return None
        changes = [change for change in history if change.subscription_alias == alias]
        return changes[-1] if changes else None

    async def _start(self, client: pw.ProfitWellClient, data: dict[str, Any], outgoing: Outgoing) -> None:
        sub, plan = data["subscription"], data["plan"]
        interval = INTERVALS.get(plan["interval"])
        if interval is None:
            raise Refused(f"ProfitWell has monthly and yearly plans only, not {plan['interval']} ({plan['code']})")
        user = sub["customer_id"]
        email = (data.get("customer") or {}).get("email") or await self._known_email(client, user)
        if not email:
            raise Refused(f"ProfitWell needs an email to create a subscription; customer {user} has none")
        trial_end = sub.get("trial_end_date")
        trialing = bool(trial_end) and parse_rfc3339(trial_end) > outgoing.occur_time
        request = pw.NewSubscription(
            user_alias=user,
            subscription_alias=sub["id"],
            email=email,
            plan_id=plan_key(plan["code"], plan["version"]),
            plan_interval=interval,
            plan_currency=plan["currency"].lower(),
            value=int(plan["amount_cents"]),
            effective_date=unix(sub["start_date"]),
            status=pw.TRIALING if trialing else pw.ACTIVE,
        )

        async def created() -> bool:
            return await self._latest(client, user, sub["id"]) is not None

        await made_or_found(lambda: client.create_subscription(request), created)

    async def _known_email(self, client: pw.ProfitWellClient, user: str) -> str:
        try:
            history = await client.history(user)
        except Missing:
            return ""
        return history[-1].email if history else ""

    async def _convert(self, client: pw.ProfitWellClient, data: dict[str, Any]) -> str:
        alias = data["subscription_id"]
        latest = await self._latest(client, data["customer_id"], alias)
        if latest is None:
            raise Refused(f"subscription {alias} is not at ProfitWell")
        if latest.status != pw.TRIALING:
            return "converted before"
        change = pw.SubscriptionChange(
            latest.plan_id, latest.plan_interval, latest.value, unix(data["trial_end_time"]), pw.ACTIVE
        )
        await client.update_subscription(alias, change)
        return ""

    async def _churn(self, client: pw.ProfitWellClient, user: str, alias: str, when: int) -> None:
        async def churned() -> bool:  # by an earlier attempt, or by its termination after a plan change
            latest = await self._latest(client, user, alias)
            return latest is not None and latest.status not in (pw.ACTIVE, pw.TRIALING)

        await made_or_found(lambda: client.churn_subscription(alias, when), churned)

    async def _email(self, client: pw.ProfitWellClient, customer: dict[str, Any]) -> str:
        if not customer.get("email"):
            return "no email to set"
        try:
            await client.update_user(customer["id"], customer["email"])
        except Missing:
            return "no ProfitWell user yet: its first subscription will carry the email"
        return ""


@dataclass
class ProfitWell:
    """The ProfitWell vendor (services/payments/sinks.Vendor)."""

    api_base: str
    timeout: float
    name: str = NAME
    accepts: frozenset[str] = frozenset(
        {
            "customer.updated",
            "subscription.started",
            "subscription.trial_ended",
            "subscription.terminated",
            "subscription.plan_changed",
        }
    )

    async def connect(self, api_key: str, data_source_id: str) -> str:
        """Checks the private token on the API status endpoint. ProfitWell has
        no data sources: the company is the token's."""
        try:
            async with pw.profitwell(self.api_base, api_key, self.timeout) as client:
                await client.check()
        except Unauthorized as exc:
            raise InvalidArgument("ProfitWell refused the API token", field="api_key") from exc
        except VendorError as exc:
            raise Unavailable(f"ProfitWell could not check the token: {exc.message}") from exc
        return ""

    def sink(self, account: Account) -> Sink:
        return ProfitWellSink(self, account)
