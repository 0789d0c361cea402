"""A small typed client of Baremetrics' API v1 (developers.baremetrics.com),
for the endpoints bxb syncs through: sources, plans, customers,
subscriptions (create, show, cancel), charges and refunds.

Bearer auth with the account's API key. Every object belongs to a source
(`/v1/{source_id}/...`); only the account's "baremetrics" (API) source can
be written. Amounts are integers in the currency's smallest unit ("cents":
yen for JPY, fils for KWD), times are Unix seconds, objects are named by
our own ids (`oid`). Errors answer `{"error": "..."}`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

import httpx

from services.payments.vendor_http import JsonApi


def _error(body: Any) -> str:
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def _path(source_id: str, kind: str, oid: str = "") -> str:
    path = f"/v1/{quote(source_id, safe='')}/{kind}"
    return f"{path}/{quote(oid, safe='')}" if oid else path


def _fields(request: object) -> dict[str, Any]:
    return {key: value for key, value in asdict(request).items() if value is not None}  # type: ignore[call-overload]


@dataclass(frozen=True)
class Source:
    id: str
    provider: str  # "baremetrics" for the API source, else the payment provider ("stripe", ...)
    provider_id: str | None


@dataclass(frozen=True)
class PlanRequest:
    oid: str
    name: str
    currency: str  # ISO 4217, lower case
    amount: int  # per interval, in the currency's smallest unit
    interval: str  # "day", "month" or "year"
    interval_count: int
    trial_duration: int = 0
    trial_duration_unit: str = "day"


@dataclass(frozen=True)
class Plan:
    oid: str
    name: str
    interval: str
    interval_count: int


@dataclass(frozen=True)
class CustomerRequest:
    oid: str
    name: str | None = None
    email: str | None = None
    created: int | None = None  # Unix seconds


@dataclass(frozen=True)
class CustomerUpdate:
    name: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Customer:
    oid: str
    name: str | None
    email: str | None


@dataclass(frozen=True)
class SubscriptionRequest:
    oid: str
    customer_oid: str
    plan_oid: str
    started_at: int  # Unix seconds
    quantity: int = 1


@dataclass(frozen=True)
class Subscription:
    oid: str
    customer_oid: str
    plan_oid: str
    started_at: int | None
    canceled_at: int | None


@dataclass(frozen=True)
class Event:
    """What a subscription write answers: the event Baremetrics recorded."""

    id: str
    type: str  # "subscription.created", "subscription.canceled", ...


@dataclass(frozen=True)
class ChargeRequest:
    oid: str
    amount: int
    currency: str
    customer_oid: str
    created: int  # Unix seconds
    status: str = "paid"  # or "failed"


@dataclass(frozen=True)
class Charge:
    oid: str
    status: str
    amount: int
    currency: str


@dataclass(frozen=True)
class RefundRequest:
    oid: str
    amount: int
    currency: str
    customer_oid: str
    charge_oid: str  # an API charge
    created: int  # Unix seconds


@dataclass(frozen=True)
class Refund:
    oid: str
    amount: int


def _plan(body: Any) -> Plan:
    plan = body["plan"]
    return Plan(plan["oid"], plan["name"], plan["interval"], plan["interval_count"])


def _customer(body: Any) -> Customer:
    customer = body["customer"]
    return Customer(customer["oid"], customer.get("name"), customer.get("email"))


def _subscription(body: Any) -> Subscription:
    sub = body["subscription"]
    return Subscription(
        sub["oid"], sub["customer"]["oid"], sub["plan"]["oid"], sub.get("started_at"), sub.get("canceled_at")
    )


def _event(body: Any) -> Event:
    return Event(body["event"]["id"], body["event"]["type"])


def _charge(body: Any) -> Charge:
    charge = body["charge"]
    return Charge(charge["oid"], charge["status"], charge["amount"], charge["currency"])


def _refund(body: Any) -> Refund:
    return Refund(body["refund"]["oid"], body["refund"]["amount"])


class BaremetricsClient:
    """One Baremetrics account. Raises the VendorErrors of vendor_http."""

    def __init__(self, http: httpx.AsyncClient):
        self.api = JsonApi(http, _error)

    async def sources(self) -> list[Source]:
        answer = await self.api.call("GET", "/v1/sources")
        return [Source(s["id"], s["provider"], s.get("provider_id")) for s in answer.body["sources"]]

    async def create_plan(self, source_id: str, plan: PlanRequest) -> Plan:
        return _plan((await self.api.call("POST", _path(source_id, "plans"), body=_fields(plan))).body)

    async def plan(self, source_id: str, oid: str) -> Plan:
        return _plan((await self.api.call("GET", _path(source_id, "plans", oid))).body)

    async def create_customer(self, source_id: str, customer: CustomerRequest) -> Customer:
        return _customer((await self.api.call("POST", _path(source_id, "customers"), body=_fields(customer))).body)

    async def update_customer(self, source_id: str, oid: str, update: CustomerUpdate) -> Customer:
        answer = await self.api.call("PUT", _path(source_id, "customers", oid), body=_fields(update))
        return _customer(answer.body)

    async def customer(self, source_id: str, oid: str) -> Customer:
        return _customer((await self.api.call("GET", _path(source_id, "customers", oid))).body)

    async def create_subscription(self, source_id: str, subscription: SubscriptionRequest) -> Event:
        answer = await self.api.call("POST", _path(source_id, "subscriptions"), body=_fields(subscription))
        return _event(answer.body)

    async def subscription(self, source_id: str, oid: str) -> Subscription:
        return _subscription((await self.api.call("GET", _path(source_id, "subscriptions", oid))).body)

    async def cancel_subscription(self, source_id: str, oid: str, canceled_at: int) -> Event:
        path = _path(source_id, "subscriptions", oid) + "/cancel"
        return _event((await self.api.call("PUT", path, body={"canceled_at": canceled_at})).body)

    async def create_charge(self, source_id: str, charge: ChargeRequest) -> Charge:
        return _charge((await self.api.call("POST", _path(source_id, "charges"), body=_fields(charge))).body)

    async def charge(self, source_id: str, oid: str) -> Charge:
        return _charge((await self.api.call("GET", _path(source_id, "charges", oid))).body)

    async def create_refund(self, source_id: str, refund: RefundRequest) -> Refund:
        return _refund((await self.api.call("POST", _path(source_id, "refunds"), body=_fields(refund))).body)

    async def refund(self, source_id: str, oid: str) -> Refund:
        return _refund((await self.api.call("GET", _path(source_id, "refunds", oid))).body)


@asynccontextmanager
async def baremetrics(api_base: str, api_key: str, timeout: float) -> AsyncIterator[BaremetricsClient]:
    """A client of the account `api_key`, every request within `timeout` seconds."""
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    async with httpx.AsyncClient(base_url=api_base, headers=headers, timeout=timeout) as http:
        yield BaremetricsClient(http)
