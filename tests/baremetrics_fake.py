"""Baremetrics' API v1 as bxb calls it, for tests: a real HTTP server on
127.0.0.1 (tests/vendor_fake.py) serving the endpoints the product uses as
developers.baremetrics.com documents them:

- Bearer auth: an unknown key is answered 401 `{"error": "Unauthorized. Token not found"}`;
- `GET /v1/sources`: each account has its API source ("baremetrics") and a
  Stripe source, which can be read but not written (400);
- plans, customers, subscriptions (create, show, cancel), charges and
  refunds under `/v1/{source_id}/...`, named by `oid`: a missing required
  field, a wrong type or an unknown interval, status, customer, plan or
  charge is a 400 `{"error": "..."}`; an oid already taken is a 400 too (so
  a retry must look the object up); an unknown one is a 404; a cancelled
  subscription cannot be cancelled again, a refund cannot exceed its charge.

Every request is recorded (`requests`, `received`); faults as vendor_fake.
State is per account (`add_account()`), in memory."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.vendor_fake import FakeTool, Handler

Json = dict[str, Any]
INTERVALS = {"day", "month", "year"}


@dataclass
class BaremetricsAccount:
    api_key: str
    source_id: str  # the API source: writable
    stripe_source_id: str  # a payment provider's source: read-only
    plans: dict[str, Json] = field(default_factory=dict)
    customers: dict[str, Json] = field(default_factory=dict)
    subscriptions: dict[str, Json] = field(default_factory=dict)
    charges: dict[str, Json] = field(default_factory=dict)
    refunds: dict[str, Json] = field(default_factory=dict)


class Invalid(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(body: Any, spec: dict[str, type]) -> Json:
    """`body` with every field of `spec` present and of its type (int: a JSON integer)."""
    if not isinstance(body, dict):
        raise Invalid(400, "A JSON body is required")
    for name, kind in spec.items():
        if body.get(name) is None:
            raise Invalid(400, f"{name} is required")
        if (kind is int and not _integer(body[name])) or (kind is str and not isinstance(body[name], str)):
            raise Invalid(400, f"{name} must be {'an integer' if kind is int else 'a string'}")
    return body


def _answer(work: Callable[[Request, Any], Json]) -> Handler:
    """An endpoint answering what `work` returns, or its error as Baremetrics shapes them."""

    async def handler(request: Request, body: Any) -> Response:
        try:
            return JSONResponse(work(request, body))
        except Invalid as invalid:
            return JSONResponse({"error": invalid.message}, invalid.status)

    return handler


def _currency(value: str) -> str:
    if len(value) != 3 or not value.isalpha():
        raise Invalid(400, f"currency {value!r} is not an ISO code")
    return value.upper()


class BaremetricsFake(FakeTool):
    """`async with BaremetricsFake() as fake:`, then `fake.add_account()`."""

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[str, BaremetricsAccount] = {}

    def add_account(self, *, api_source: bool = True) -> BaremetricsAccount:
        """A new account: its Stripe source, and its API source unless `api_source` is False."""
        account = BaremetricsAccount(
            api_key=f"bm_{secrets.token_hex(16)}",
            source_id=f"src_{secrets.token_hex(6)}" if api_source else "",
            stripe_source_id=f"src_{secrets.token_hex(6)}",
        )
        self.accounts[account.api_key] = account
        return account

    def routes(self) -> list[tuple[str, str, Handler]]:
        endpoints: list[tuple[str, str, Any]] = [
            ("GET", "/v1/sources", self._sources),
            ("POST", "/v1/{source}/plans", self._create_plan),
            ("GET", "/v1/{source}/plans/{oid:path}", self._show("plans", "plan")),
            ("POST", "/v1/{source}/customers", self._create_customer),
            ("PUT", "/v1/{source}/customers/{oid:path}", self._update_customer),
            ("GET", "/v1/{source}/customers/{oid:path}", self._show("customers", "customer")),
            ("POST", "/v1/{source}/subscriptions", self._create_subscription),
            ("PUT", "/v1/{source}/subscriptions/{oid:path}/cancel", self._cancel_subscription),
            ("GET", "/v1/{source}/subscriptions/{oid:path}", self._show("subscriptions", "subscription")),
            ("POST", "/v1/{source}/charges", self._create_charge),
            ("GET", "/v1/{source}/charges/{oid:path}", self._show("charges", "charge")),
            ("POST", "/v1/{source}/refunds", self._create_refund),
            ("GET", "/v1/{source}/refunds/{oid:path}", self._show("refunds", "refund")),
        ]
        return [(method, path, _answer(work)) for method, path, work in endpoints]

    # -- plumbing

    def _account(self, request: Request) -> BaremetricsAccount:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        account = self.accounts.get(key) if scheme == "Bearer" else None
        if account is None:
            raise Invalid(401, "Unauthorized. Token not found")
        return account

    def _source(self, request: Request, *, write: bool) -> BaremetricsAccount:
        account = self._account(request)
        source = request.path_params["source"]
        if not source or source not in (account.source_id, account.stripe_source_id):
            raise Invalid(404, "Source not found")
        if write and source != account.source_id:
            raise Invalid(400, "You can only modify data that has been added via the API")
        return account

    def _show(self, kind: str, key: str) -> Callable[[Request, Any], Json]:
        def show(request: Request, body: Any) -> Json:
            objects: dict[str, Json] = getattr(self._source(request, write=False), kind)
            found = objects.get(request.path_params["oid"])
            if found is None:
                raise Invalid(404, f"{key.capitalize()} not found")
            return {key: found}

        return show

    @staticmethod
    def _customer_json(account: BaremetricsAccount, oid: str) -> Json:
        return dict(account.customers[oid])

    # -- endpoints

    def _sources(self, request: Request, body: Any) -> Json:
        account = self._account(request)
        sources = [{"id": account.stripe_source_id, "provider": "stripe", "provider_id": "acct_1"}]
        if account.source_id:
            sources.append({"id": account.source_id, "provider": "baremetrics", "provider_id": None})
        return {"sources": sources}

    def _create_plan(self, request: Request, body: Any) -> Json:
        account = self._source(request, write=True)
        spec = {"oid": str, "name": str, "currency": str, "amount": int, "interval": str, "interval_count": int}
        plan = _require(body, spec)
        if plan["interval"] not in INTERVALS:
            raise Invalid(400, "interval must be day, month or year")
        if plan["amount"] < 0 or plan["interval_count"] < 1:
            raise Invalid(400, "amount and interval_count must be positive")
        if plan["oid"] in account.plans:
            raise Invalid(400, "oid has already been taken")
        account.plans[plan["oid"]] = {
            "oid": plan["oid"],
            "source_id": account.source_id,
            "source": "baremetrics",
            "name": plan["name"],
            "interval": plan["interval"],
            "interval_count": plan["interval_count"],
            "trial_duration": plan.get("trial_duration"),
            "trial_duration_unit": plan.get("trial_duration_unit"),
            "created": int(time.time()),
            "active": True,
            "setup_fees": 0,
            "amounts": [{"currency": _currency(plan["currency"]), "amount": plan["amount"]}],
        }
        return {"plan": account.plans[plan["oid"]]}

    def _create_customer(self, request: Request, body: Any) -> Json:
        account = self._source(request, write=True)
        customer = _require(body, {"oid": str})
        if customer["oid"] in account.customers:
            raise Invalid(400, "oid has already been taken")
        account.customers[customer["oid"]] = {
            "oid": customer["oid"],
            "source_id": account.source_id,
            "source": "baremetrics",
            "created": customer.get("created") or int(time.time()),
            "email": customer.get("email"),
            "name": customer.get("name"),
            "display_name": customer.get("name"),
            "notes": customer.get("notes"),
            "ltv": 0,
        }
        return {"customer": account.customers[customer["oid"]]}

    def _update_customer(self, request: Request, body: Any) -> Json:
        account = self._source(request, write=True)
        customer = account.customers.get(request.path_params["oid"])
        if customer is None:
            raise Invalid(404, "Customer not found")
        for key in ("name", "email", "notes", "created"):
            if isinstance(body, dict) and key in body:
                customer[key] = body[key]
        return {"customer": customer}

    def _create_subscription(self, request: Request, body: Any) -> Json:
        account = self._source(request, write=True)
        sub = _require(body, {"oid": str, "customer_oid": str, "plan_oid": str, "started_at": int})
        if sub["customer_oid"] not in account.customers:
            raise Invalid(400, "Customer not found")
        if sub["plan_oid"] not in account.plans:
            raise Invalid(400, "Plan not found")
        if sub["oid"] in account.subscriptions:
            raise Invalid(400, "oid has already been taken")
        account.subscriptions[sub["oid"]] = {
            "oid": sub["oid"],
            "source_id": account.source_id,
            "source": "baremetrics",
            "customer": self._customer_json(account, sub["customer_oid"]),
            "plan": account.plans[sub["plan_oid"]],
            "started_at": sub["started_at"],
            "canceled_at": sub.get("canceled_at"),
            "active": True,
            "quantity": sub.get("quantity", 1),
            "discount": 0,
        }
        info = {key: sub.get(key) for key in ("oid", "started_at", "plan_oid", "customer_oid", "canceled_at")}
        return self._event("subscription.created", info)

    def _cancel_subscription(self, request: Request, body: Any) -> Json:
        account = self._source(request, write=True)
        sub = account.subscriptions.get(request.path_params["oid"])
        if sub is None:
            raise Invalid(404, "Subscription not found")
        canceled_at = _require(body, {"canceled_at": int})["canceled_at"]
        if sub["canceled_at"] is not None:
            raise Invalid(400, "Subscription is already canceled")
        if canceled_at < sub["started_at"]:
            raise Invalid(400, "canceled_at must be after started_at")
        sub["canceled_at"] = canceled_at
        sub["active"] = False
        return self._event("subscription.canceled", {"canceled_at": canceled_at})

    @staticmethod
    def _event(kind: str, info: Json) -> Json:
        now = int(time.time())
        return {
            "event": {"id": secrets.token_hex(7), "type": kind, "info": info, "occurred_at": now, "received_at": now}
        }

    def _create_charge(self, request: Request, body: Any) -> Json:
        account = self._source(request, write=True)
        charge = _require(body, {"oid": str, "amount": int, "currency": str, "customer_oid": str})
        status = charge.get("status", "paid")
        if status not in ("paid", "failed"):
            raise Invalid(400, "status must be paid or failed")
        if charge["amount"] < 0:
            raise Invalid(400, "amount must be positive")
        if charge["customer_oid"] not in account.customers:
            raise Invalid(400, "Customer not found")
        if charge["oid"] in account.charges:
            raise Invalid(400, "oid has already been taken")
        account.charges[charge["oid"]] = {
            "oid": charge["oid"],
            "source_id": account.source_id,
            "source": "baremetrics",
            "status": status,
            "created": charge.get("created") or int(time.time()),
            "customer": self._customer_json(account, charge["customer_oid"]),
            "subscription": None,
            "amount": charge["amount"],
            "currency": _currency(charge["currency"]),
            "original_amount": charge["amount"],
            "fee": charge.get("fee", 0),
            "original_fee": charge.get("fee", 0),
        }
        return {"charge": account.charges[charge["oid"]]}

    def _create_refund(self, request: Request, body: Any) -> Json:
        account = self._source(request, write=True)
        spec = {"oid": str, "amount": int, "currency": str, "customer_oid": str, "charge_oid": str}
        refund = _require(body, spec)
        charge = account.charges.get(refund["charge_oid"])
        if charge is None or charge["status"] != "paid":
            raise Invalid(400, "Charge not found")
        if _currency(refund["currency"]) != charge["currency"]:
            raise Invalid(400, "currency must be the charge's")
        given = sum(r["amount"] for r in account.refunds.values() if r["charge"]["oid"] == charge["oid"])
        if not 0 < refund["amount"] <= charge["amount"] - given:
            raise Invalid(400, "amount exceeds what the charge has left")
        if refund["oid"] in account.refunds:
            raise Invalid(400, "oid has already been taken")
        account.refunds[refund["oid"]] = {
            "oid": refund["oid"],
            "source_id": account.source_id,
            "source": "baremetrics",
            "created": refund.get("created") or int(time.time()),
            "customer": self._customer_json(account, charge["customer"]["oid"]),
            "charge": {key: charge[key] for key in ("oid", "status", "created", "currency", "amount")},
            "amount": refund["amount"],
        }
        return {"refund": account.refunds[refund["oid"]]}
