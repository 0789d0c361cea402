"""ChartMogul as bxb calls it, for tests: a small HTTP server on 127.0.0.1
(its own thread) serving the endpoints of ChartMogul's API that the
ChartMogul sink uses, as https://dev.chartmogul.com documents them:

- Basic auth with an account's API key as user name (401 otherwise); each
  account sees only its own data sources, and each object lives in one;
- GET /v1/ping; data sources (GET one, list by name, POST);
- customers: list by data_source_uuid and external_id, POST (422 when a
  required field is missing or the external id exists in the data source),
  PATCH /v1/customers/{uuid}, GET /v1/customers/{uuid}/subscriptions;
- plans: list by data_source_uuid and external_id, POST (422 likewise);
- POST /v1/import/customers/{uuid}/invoices (422 for a missing field, an
  unknown plan, or an external id that exists: "already exists"), GET
  /v1/invoices by data_source_uuid and external_id; subscriptions are made
  from subscription line items, as ChartMogul does;
- POST /v1/import/invoices/{uuid}/transactions (422 likewise);
- PATCH /v1/import/subscriptions/{uuid} with cancellation_dates.

Every request is recorded (`requests`) so tests assert exactly what was
sent. Faults: `fail_next(status)` answers the next write that status
without doing it; `lose_next_answer()` does the next write and then answers
502 as a proxy that lost ChartMogul's answer would."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Json = dict[str, Any]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    api_key: str


@dataclass
class Store:
    """One account's objects."""

    data_sources: dict[str, Json] = field(default_factory=dict)
    customers: dict[str, Json] = field(default_factory=dict)
    plans: dict[str, Json] = field(default_factory=dict)
    invoices: dict[str, Json] = field(default_factory=dict)
    subscriptions: dict[str, Json] = field(default_factory=dict)


class Refusal(Exception):
    def __init__(self, status: int, body: Json):
        self.status, self.body = status, body


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4()}"


def _required(document: Json, *names: str) -> None:
    missing = [name for name in names if document.get(name) in (None, "")]
    if missing:
        raise Refusal(422, {"errors": {name: "can't be blank" for name in missing}})


class ChartMogulFake:
    def __init__(self, port: int = 0) -> None:
        self.accounts: dict[str, Store] = {}
        self.requests: list[Recorded] = []
        self.faults: list[str | int] = []  # for the next writes: a status to answer, or "lose"
        self.hidden = 0  # listings still to answer empty (hide_next_find)
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, answer = fake.handle(self.command, self.path, self.headers.get("Authorization", ""), raw)
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> ChartMogulFake:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_account(self) -> str:
        """A new ChartMogul account; its API key."""
        key = secrets.token_hex(16)
        self.accounts[key] = Store()
        return key

    def add_data_source(self, api_key: str, name: str = "Elsewhere") -> str:
        source = {"uuid": _id("ds"), "name": name, "created_at": "2026-01-01T00:00:00Z", "status": "idle"}
        self.accounts[api_key].data_sources[source["uuid"]] = source
        return str(source["uuid"])

    def fail_next(self, status: int) -> None:
        self.faults.append(status)

    def lose_next_answer(self) -> None:
        self.faults.append("lose")

    def hide_next_find(self) -> None:
        """The next listing (GET) answers nothing, as if what it looks for
        were made just after it was read (by a request running alongside)."""
        self.hidden += 1

    def sent(self, api_key: str, method: str = "") -> list[tuple[str, str, Any]]:
        """(method, path with query, body) of the account's requests, in order."""
        return [
            (
                r.method,
                r.path + ("?" + "&".join(f"{k}={v}" for k, v in sorted(r.query.items())) if r.query else ""),
                r.body,
            )
            for r in self.requests
            if r.api_key == api_key and (not method or r.method == method)
        ]

    def store(self, api_key: str) -> Store:
        return self.accounts[api_key]

    # Serving

    def handle(self, method: str, target: str, authorization: str, raw: bytes) -> tuple[int, Any]:
        parts = urlsplit(target)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        body = json.loads(raw) if raw else None
        key = ""
        if authorization.startswith("Basic "):
            key = base64.b64decode(authorization[6:]).decode().partition(":")[0]
        with self.lock:
            self.requests.append(Recorded(method, parts.path, query, body, key))
            if key not in self.accounts:
                return 401, {"code": 401, "message": "No valid API key provided", "param": None}
            fault = self.faults.pop(0) if self.faults and method != "GET" else None
            if isinstance(fault, int):
                return fault, {"code": fault, "message": "Something went wrong on ChartMogul's end"}
            try:
                status, answer = self._route(self.accounts[key], method, parts.path.removeprefix("/v1"), query, body)
            except Refusal as refusal:
                return refusal.status, refusal.body
            if fault == "lose":
                return 502, {"code": 502, "message": "Bad Gateway"}
            return status, answer

    def _route(self, store: Store, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        segments = path.strip("/").split("/")
        match method, segments:
            case "GET", ["ping"]:
                return 200, {"data": "pong!"}
            case "GET", ["data_sources", source_id]:
                if source_id not in store.data_sources:
                    raise Refusal(404, {"code": 404, "message": f"Data source {source_id} not found"})
                return 200, store.data_sources[source_id]
            case "GET", ["data_sources"]:
                named = [s for s in store.data_sources.values() if s["name"] == query.get("name", s["name"])]
                return 200, {"data_sources": named}
            case "POST", ["data_sources"]:
                _required(body, "name")
                source_id = self.add_data_source(next(k for k, v in self.accounts.items() if v is store), body["name"])
                return 201, store.data_sources[source_id]
            case "GET", ["customers"]:
                return 200, {"entries": self._find(store.customers, query), "has_more": False, "cursor": None}
            case "POST", ["customers"]:
                self._new(store, store.customers, body, "name")
                customer = {**body, "uuid": _id("cus"), "id": len(store.customers) + 1}
                store.customers[customer["uuid"]] = customer
                return 201, customer
            case "PATCH", ["customers", customer_id]:
                customer = self._get(store.customers, customer_id)
                customer.update(body)
                return 200, customer
            case "GET", ["customers", customer_id, "subscriptions"]:
                self._get(store.customers, customer_id)
                owned = [s for s in store.subscriptions.values() if s["customer_uuid"] == customer_id]
                return 200, {"entries": owned, "has_more": False, "cursor": None}
            case "GET", ["plans"]:
                found = self._find(store.plans, query)
                if self.hidden:
                    self.hidden, found = self.hidden - 1, []
                return 200, {"plans": found, "has_more": False, "cursor": None}
            case "POST", ["plans"]:
                self._new(store, store.plans, body, "name", "interval_count", "interval_unit")
                plan = {**body, "uuid": _id("pl")}
                store.plans[plan["uuid"]] = plan
                return 201, plan
            case "POST", ["import", "customers", customer_id, "invoices"]:
                customer = self._get(store.customers, customer_id)
                return 201, {"invoices": [self._import(store, customer, invoice) for invoice in body["invoices"]]}
            case "GET", ["invoices"]:
                return 200, {"invoices": self._find(store.invoices, query), "has_more": False, "cursor": None}
            case "POST", ["import", "invoices", invoice_id, "transactions"]:
                invoice = self._get(store.invoices, invoice_id)
                _required(body, "type", "date", "result")
                if body.get("external_id") and any(
                    t.get("external_id") == body["external_id"] for t in invoice["transactions"]
                ):
                    raise Refusal(
                        422,
                        {
                            "errors": {
                                "external_id": "The external ID for this transaction already exists in our system."
                            }
                        },
                    )
                transaction = {**body, "uuid": _id("tr")}
                invoice["transactions"].append(transaction)
                return 201, transaction
            case "PATCH", ["import", "subscriptions", subscription_id]:
                subscription = self._get(store.subscriptions, subscription_id)
                subscription["cancellation_dates"] = body["cancellation_dates"]
                return 200, subscription
        raise Refusal(404, {"code": 404, "message": f"No route {method} {path}"})

    @staticmethod
    def _find(objects: dict[str, Json], query: dict[str, str]) -> list[Json]:
        return [
            o
            for o in objects.values()
            if all(o.get(name) == query[name] for name in ("data_source_uuid", "external_id") if name in query)
        ]

    @staticmethod
    def _get(objects: dict[str, Json], object_id: str) -> Json:
        if object_id not in objects:
            raise Refusal(404, {"code": 404, "message": f"{object_id} not found"})
        return objects[object_id]

    @staticmethod
    def _new(store: Store, objects: dict[str, Json], body: Json, *names: str) -> None:
        _required(body, "data_source_uuid", "external_id", *names)
        if body["data_source_uuid"] not in store.data_sources:
            raise Refusal(422, {"errors": {"data_source_uuid": "Data source not found"}})
        if any(
            o["data_source_uuid"] == body["data_source_uuid"] and o["external_id"] == body["external_id"]
            for o in objects.values()
        ):
            raise Refusal(
                422, {"code": 422, "message": f"The external ID {body['external_id']} already exists in our system."}
            )

    def _import(self, store: Store, customer: Json, invoice: Json) -> Json:
        _required(invoice, "external_id", "date", "currency", "line_items")
        source = customer["data_source_uuid"]
        if any(
            i["data_source_uuid"] == source and i["external_id"] == invoice["external_id"]
            for i in store.invoices.values()
        ):
            raise Refusal(
                422,
                {
                    "invoices": [
                        {
                            "external_id": invoice["external_id"],
                            "errors": {"external_id": "The external ID for this invoice already exists in our system."},
                        }
                    ]
                },
            )
        for line in invoice["line_items"]:
            _required(line, "type", "amount_in_cents")
            if line["type"] == "subscription":
                _required(line, "subscription_external_id", "plan_uuid", "service_period_start", "service_period_end")
                if line["plan_uuid"] not in store.plans:
                    raise Refusal(422, {"errors": {"plan_uuid": "Plan not found"}})
        made = {
            **invoice,
            "uuid": _id("inv"),
            "data_source_uuid": source,
            "customer_uuid": customer["uuid"],
            "transactions": [],
        }
        store.invoices[made["uuid"]] = made
        for line in invoice["line_items"]:
            if line["type"] == "subscription" and not any(
                s["external_id"] == line["subscription_external_id"] and s["customer_uuid"] == customer["uuid"]
                for s in store.subscriptions.values()
            ):
                subscription = {
                    "uuid": _id("sub"),
                    "external_id": line["subscription_external_id"],
                    "plan_uuid": line["plan_uuid"],
                    "customer_uuid": customer["uuid"],
                    "data_source_uuid": source,
                    "cancellation_dates": [],
                }
                store.subscriptions[subscription["uuid"]] = subscription
        return made


if __name__ == "__main__":
    import argparse
    import time

    parser = argparse.ArgumentParser(description="A ChartMogul stand-in on 127.0.0.1 with one account.")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    fake = ChartMogulFake(port=args.port).start()
    key = fake.add_account()
    print(f"ChartMogul stand-in at {fake.url}; an account's API key: {key}", flush=True)
    try:
        while True:
            time.sleep(5)
            store = fake.store(key)
            print(
                f"customers={len(store.customers)} plans={len(store.plans)} "
                f"subscriptions={len(store.subscriptions)} invoices={len(store.invoices)}",
                flush=True,
            )
    except KeyboardInterrupt:
        fake.stop()
