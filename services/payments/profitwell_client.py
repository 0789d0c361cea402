"""A small typed client of ProfitWell's API v2 (profitwellapiv2.docs.apiary.io),
for the endpoints bxb syncs through: the API status (to check a key),
subscriptions (create; update for an upgrade, a downgrade or a trial's
conversion; churn) and users (their subscription history; email).

Auth: the account's private token as the `Authorization` header, with no
scheme. ProfitWell has no plan or customer objects to create: a user
exists once it has a subscription, and a plan is the `plan_id` label its
subscriptions carry. `value` is an integer per billing period in the
currency's smallest unit, `effective_date` Unix seconds. Subscriptions and
users are named by our own ids (`subscription_alias`, `user_alias`). It is a
Django REST Framework API: errors answer `{"detail": "..."}` or the fields'
messages (`{"email": ["..."]}`, `{"non_field_errors": ["..."]}`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

import httpx

from services.payments.vendor_http import JsonApi

TRIALING = "trialing"
ACTIVE = "active"
VOLUNTARY = "voluntary"  # churn_type; "delinquent" when the customer did not pay


def _error(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    return "; ".join(
        f"{field}: {' '.join(map(str, messages)) if isinstance(messages, list) else messages}"
        for field, messages in body.items()
    )


@dataclass(frozen=True)
class NewSubscription:
    user_alias: str
    subscription_alias: str  # unique in the company, at most 36 characters
    email: str
    plan_id: str
    plan_interval: str  # "month" or "year"
    plan_currency: str  # ISO 4217, lower case
    value: int
    effective_date: int
    status: str = ACTIVE  # or TRIALING


@dataclass(frozen=True)
class SubscriptionChange:
    plan_id: str
    plan_interval: str
    value: int
    effective_date: int
    status: str = ACTIVE


@dataclass(frozen=True)
class Subscription:
    """A subscription as ProfitWell answers it; a user's history is a list of them."""

    user_id: str
    user_alias: str | None
    subscription_id: str
    subscription_alias: str | None
    email: str
    plan_id: str
    plan_interval: str
    plan_currency: str | None
    status: str
    value: int
    effective_date: int


def _subscription(item: dict[str, Any]) -> Subscription:
    return Subscription(
        item["user_id"],
        item.get("user_alias"),
        item["subscription_id"],
        item.get("subscription_alias"),
        item["email"],
        item["plan_id"],
        item["plan_interval"],
        item.get("plan_currency"),
        item["status"],
        item["value"],
        item["effective_date"],
    )


def _name(id_or_alias: str) -> str:
    return quote(id_or_alias, safe="")


class ProfitWellClient:
    """One ProfitWell company. Raises the VendorErrors of vendor_http."""

    def __init__(self, http: httpx.AsyncClient):
        self.api = JsonApi(http, _error)

    async def check(self) -> None:
        """200 when the API works and the token is good (401 otherwise)."""
        await self.api.call("GET", "/v2/api-status/")

    async def create_subscription(self, subscription: NewSubscription) -> Subscription:
        answer = await self.api.call("POST", "/v2/subscriptions/", body=asdict(subscription))
        return _subscription(answer.body)

    async def update_subscription(self, id_or_alias: str, change: SubscriptionChange) -> Subscription:
        answer = await self.api.call("PUT", f"/v2/subscriptions/{_name(id_or_alias)}/", body=asdict(change))
        return _subscription(answer.body)

    async def churn_subscription(self, id_or_alias: str, effective_date: int, churn_type: str = VOLUNTARY) -> None:
        params = {"effective_date": effective_date, "churn_type": churn_type}
        await self.api.call("DELETE", f"/v2/subscriptions/{_name(id_or_alias)}/", params=params)

    async def history(self, user_id_or_alias: str) -> list[Subscription]:
        """Every change made to the user's subscriptions, oldest first."""
        answer = await self.api.call("GET", f"/v2/users/{_name(user_id_or_alias)}/")
        return [_subscription(item) for item in answer.body]

    async def update_user(self, user_id_or_alias: str, email: str) -> None:
        await self.api.call("PUT", f"/v2/users/{_name(user_id_or_alias)}/", body={"email": email})


@asynccontextmanager
async def profitwell(api_base: str, api_key: str, timeout: float) -> AsyncIterator[ProfitWellClient]:
    """A client of the company whose private token is `api_key`, every request within `timeout` seconds."""
    headers = {"Authorization": api_key, "Accept": "application/json"}
    async with httpx.AsyncClient(base_url=api_base, headers=headers, timeout=timeout) as http:
        yield ProfitWellClient(http)
