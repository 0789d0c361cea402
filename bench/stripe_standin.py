"""A fast stand-in for Stripe, for the collection bench only: the handful of
endpoints automatic collection calls, in memory, in its own process
(`python -m bench.stripe_standin --port P --api-key K`).

Why not localstripe: it pickles its whole store to /tmp/localstripe.pickle
on every object it stores and again after every POST, so each write costs
time proportional to everything stored before (0.25 s of pickling alone at
10,000 customers with a card), and N charges cost O(N^2): measured here,
customers with a card fall from about 40/s to 9/s over the first 1,000, and
PaymentIntents run at 2 to 8/s with 1,000 customers stored (p50 1.8 to 7 s
at 16 at once); 10,000 would take hours, all of them localstripe's. The
bench still measures localstripe (its own rates, and the whole scenario
with `--stripe localstripe` at a small N), and runs the N against this
stand-in, whose own rate it prints next to bxb's, so the figure is bxb's.

Served, as Stripe answers them (the fields bxb reads): customers (create,
retrieve), card payment methods (create, retrieve, attach), PaymentIntents
created confirmed (a card always succeeds), listed and retrieved, charges
listed by customer and creation time (the lookup of an attempt whose answer
was lost), `GET /v1/account`; `POST /bench/customers` makes `count`
customers with an attached card at once (the bench's setup). Idempotency
keys are honoured (a replay answers the first object); a wrong key is a 401.
`--latency-ms` holds each PaymentIntent creation that long (Stripe's own
confirmation takes a few hundred milliseconds), others answering meanwhile.
Not a test double: no declines, 3-D Secure, webhooks or persistence.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Obj = dict[str, Any]


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _nested(pairs: list[tuple[str, str]]) -> Obj:
    """Stripe's form encoding (`metadata[a]=1`, `expand[0]=x`, `created[gt]=5`) as nested values."""
    out: Obj = {}
    for key, value in pairs:
        if "[" not in key:
            out[key] = value
            continue
        head, rest = key.split("[", 1)
        sub = rest.rstrip("]").split("][")[0]
        if sub == "" or sub.isdigit():
            out.setdefault(head, []).append(value)
        else:
            out.setdefault(head, {})[sub] = value
    return out


def _error(status: int, message: str, code: str = "", kind: str = "invalid_request_error") -> Response:
    error = {"type": kind, "message": message, **({"code": code} if code else {})}
    return Response(json.dumps({"error": error}), status, media_type="application/json")


def _json(obj: Obj) -> Response:
    return Response(json.dumps(obj), media_type="application/json")


class Store:
    def __init__(self, api_key: str):
        self.api_key = api_key
        self.customers: dict[str, Obj] = {}
        self.methods: dict[str, Obj] = {}
        self.intents: dict[str, Obj] = {}  # in creation order
        self.charges: dict[str, Obj] = {}
        self.replays: dict[str, Obj] = {}  # idempotency key -> the object first answered
        self._sequence = itertools.count()

    def customer(self, params: Obj) -> Obj:
        customer: Obj = {
            "id": _id("cus_"),
            "object": "customer",
            "created": int(time.time()),
            "email": params.get("email"),
            "name": params.get("name"),
            "metadata": params.get("metadata", {}),
            "invoice_settings": {"default_payment_method": None},
            "livemode": False,
        }
        self.customers[customer["id"]] = customer
        return customer

    def method(self, params: Obj) -> Obj:
        card = params.get("card", {})
        number = str(card.get("number", "4242424242424242"))
        method: Obj = {
            "id": _id("pm_"),
            "object": "payment_method",
            "type": "card",
            "created": int(time.time()),
            "customer": None,
            "card": {
                "brand": "visa",
                "last4": number[-4:],
                "exp_month": int(card.get("exp_month", 12)),
                "exp_year": int(card.get("exp_year", 2040)),
            },
            "metadata": {},
            "livemode": False,
        }
        self.methods[method["id"]] = method
        return method

    def intent(self, params: Obj) -> Obj:
        now = int(time.time())
        intent_id, charge_id = _id("pi_"), _id("ch_")
        amount, currency = int(params["amount"]), str(params["currency"])
        metadata = params.get("metadata", {})
        intent: Obj = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": amount,
            "currency": currency,
            "customer": params.get("customer"),
            "payment_method": params.get("payment_method"),
            "status": "succeeded",
            "confirmation_method": "automatic",
            "capture_method": "automatic",
            "off_session": params.get("off_session") == "true",
            "latest_charge": charge_id,
            "last_payment_error": None,
            "next_action": None,
            "metadata": metadata,
            "created": now,
            "livemode": False,
        }
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "currency": currency,
            "customer": intent["customer"],
            "payment_intent": intent_id,
            "payment_method": intent["payment_method"],
            "status": "succeeded",
            "paid": True,
            "created": now,
            "metadata": metadata,
            "livemode": False,
            "_sequence": next(self._sequence),
        }
        self.intents[intent_id] = intent
        return intent


def _page(url: str, items: list[Obj], params: Obj) -> Obj:
    """Newest first, `limit` at a time after `starting_after`."""
    limit = min(int(params.get("limit", 10)), 100)
    after = params.get("starting_after")
    newest = items[::-1]
    start = next((n + 1 for n, item in enumerate(newest) if item["id"] == after), 0) if after else 0
    data = newest[start : start + limit]
    return {"object": "list", "url": url, "data": data, "has_more": start + limit < len(newest)}


def app(api_key: str, latency: float = 0.0) -> Starlette:
    store = Store(api_key)

    async def params_of(request: Request) -> Obj:
        body = (await request.body()).decode()
        return _nested(parse_qsl(body, keep_blank_values=True) + list(request.query_params.multi_items()))

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {store.api_key}"

    def once(request: Request, make: Any, params: Obj) -> Response:
        key = request.headers.get("idempotency-key")
        if key and key in store.replays:
            return _json(store.replays[key])
        made: Obj = make(params)
        if key:
            store.replays[key] = made
        return _json(made)

    async def handle(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "Invalid API Key provided")
        params = await params_of(request)
        path, method = request.url.path, request.method
        parts = path.strip("/").split("/")  # v1, kind, [id, [action]]
        kind = parts[1] if len(parts) > 1 else ""
        found: Obj | None
        if path == "/v1/account":
            return _json({"id": "acct_standin", "object": "account", "livemode": False})
        if kind == "customers" and len(parts) == 2 and method == "POST":
            return once(request, store.customer, params)
        if kind == "customers" and len(parts) == 3:
            found = store.customers.get(parts[2])
            return _json(found) if found else _error(404, f"No such customer: '{parts[2]}'", "resource_missing")
        if kind == "payment_methods" and len(parts) == 2 and method == "POST":
            return once(request, store.method, params)
        if kind == "payment_methods" and len(parts) >= 3:
            found = store.methods.get(parts[2])
            if found is None:
                return _error(404, f"No such PaymentMethod: '{parts[2]}'", "resource_missing")
            if parts[3:] == ["attach"]:
                found["customer"] = params.get("customer")
            return _json(found)
        if kind == "payment_intents" and len(parts) == 2 and method == "POST":
            if params.get("customer") not in store.customers or params.get("payment_method") not in store.methods:
                return _error(400, "No such customer or PaymentMethod", "resource_missing")
            if latency:
                await asyncio.sleep(latency)
            return once(request, store.intent, params)
        if kind == "payment_intents" and len(parts) == 2:
            return _json(_page("/v1/payment_intents", list(store.intents.values()), params))
        if kind == "payment_intents" and len(parts) == 3:
            found = store.intents.get(parts[2])
            return _json(found) if found else _error(404, f"No such payment_intent: '{parts[2]}'", "resource_missing")
        if kind == "charges" and len(parts) == 2 and method == "GET":
            since = int(params.get("created", {}).get("gt", 0))
            expand = "data.payment_intent" in params.get("expand", [])
            listed = [
                {k: v for k, v in c.items() if k != "_sequence"}
                | ({"payment_intent": store.intents[c["payment_intent"]]} if expand else {})
                for c in store.charges.values()
                if c["customer"] == params.get("customer") and c["created"] > since
            ]
            return _json(_page("/v1/charges", listed, params))
        return _error(404, f"Unrecognized request URL ({method}: {path})")

    async def bench_customers(request: Request) -> Response:
        """`count` customers, each with an attached card: [[cus_..., pm_...], ...]."""
        if not authorized(request):
            return _error(401, "Invalid API Key provided")
        made = []
        for _ in range(int(request.query_params.get("count", "1"))):
            customer, method = store.customer({"email": "billing@bench.test"}), store.method({})
            method["customer"] = customer["id"]
            made.append([customer["id"], method["id"]])
        return Response(json.dumps(made), media_type="application/json")

    methods = ["GET", "POST", "DELETE"]
    return Starlette(
        routes=[
            Route("/bench/customers", bench_customers, methods=["POST"]),
            Route("/v1/{rest:path}", handle, methods=methods),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    uvicorn.run(
        app(args.api_key, args.latency_ms / 1000),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
