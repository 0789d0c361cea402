"""A cross-tenant probe: organizations A and B hold the same codes and ids
(a metric, a plan, a customer, its subscription, a coupon applied to it, a
tax, an add-on applied to it, a test clock, events under the same keys,
invoices, a credit note, a calculation, a parked message). With B's key,
every route of the app is called with each of A's server-assigned ids in its
path, its query string and its body's id fields, and with the shared codes.

B never sees anything of A's: no answer holds a value only A has (its ids,
its names, its prices), unless the request itself said it. A is unchanged:
every read of A, through every GET route with A's ids and codes, answers
the same bytes before and after the probe, and A's payments are the same.
A route that takes A's id (in its path, or in a body field naming a
server-assigned resource) answers 404, or 400 when the request is invalid
for another reason.

Routes and their body schemas are read from the OpenAPI document of the
app's routes (tests/service/openapi_routes.py), so a new route is probed as
soon as it exists; its ids are found in A's answers (every `id` and `*_id`
field)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from bxb.payments.v1 import payments_pb2, payments_pb2_grpc
from services.common import bus
from services.common.parking import ParkedMessages
from services.common.tenancy import metadata
from services.invoicing.models import Parked
from tests.conftest import Stack, Tenant, eventually, new_tenant
from tests.service.invoicing_helpers import InvoicingDb
from tests.service.openapi_routes import ROUTES, Schema, fields, kind, required, sensible
from tests.stripe import LocalStripe

METRIC, PLAN, CUSTOMER, CLOCK_CUSTOMER = "calls", "basic", "cus_shared", "cus_clock"
COUPON, TAX, ADD_ON, TXN, KEY, EXTERNAL = "SHARED10", "vat", "setup", "txn_shared", "idem_shared", "ext_shared"
SHARED = (METRIC, PLAN, CUSTOMER, CLOCK_CUSTOMER, COUPON, TAX, ADD_ON, TXN, KEY, EXTERNAL)
# Path parameters and body fields the client names (what it creates, or one
# of the shared codes): any text names something of B's there, maybe nothing
# (a customer without invoices lists none), so A's ids need not be refused.
CLIENT_NAMED = {
    "code",
    "key",
    "id",
    "external_id",
    "customer_id",
    "external_customer_id",
    "transaction_id",
    "idempotency_key",
}
# Server-assigned ids a route takes without looking them up: an event is
# stored whatever subscription it names (and counted for B only).
UNCHECKED = {("/v1/events", "subscription_id")}
# Body fields naming what a request creates, new in each probe.
NEW = ("id", "external_id", "transaction_id", "idempotency_key")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def month_start(months_ago: int) -> datetime:
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - months_ago
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def rfc3339(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


@dataclass
class Org:
    """One organization of the pair: its tenant, the name its data carries
    and the server-assigned ids of what it made."""

    tenant: Tenant
    mark: str
    made: dict[str, str] = field(default_factory=dict)

    async def post(self, path: str, body: dict, expect: int = 201) -> dict:
        response = await self.tenant.http.post(path, json=body)
        assert response.status_code == expect, (path, response.text)
        return response.json()


async def populate(org: Org, stack: Stack, localstripe: LocalStripe, price: int) -> None:
    """The same codes and ids in each organization; names carry `org.mark`,
    prices are `price`-based, so either's data is told apart."""
    mark, made = org.mark, org.made
    await org.post("/v1/taxes", {"code": TAX, "name": f"{mark} VAT", "rate": str(price % 30)})
    metric = {"code": METRIC, "name": f"{mark} calls", "aggregation_type": "sum", "field_name": "units"}
    made["metric"] = (await org.post("/v1/billable_metrics", metric))["id"]
    charge = {"billable_metric_code": METRIC, "charge_model": "standard", "properties": {"amount": f"0.{price}"}}
    plan = {"code": PLAN, "name": f"{mark} Basic", "interval": "monthly", "amount_cents": price * 100}
    made["plan"] = (await org.post("/v1/plans", {**plan, "charges": [charge], "tax_codes": [TAX]}))["id"]
    stripe_customer, method = await localstripe.customer_with_card()
    customer = {
        "id": CUSTOMER,
        "name": f"{mark} Customer",
        "email": f"{mark.lower()}@example.test",
        "billing": {"provider": "stripe", "auto_collect": False},  # nothing moves in the background
        "payment_method": {"provider_customer_id": stripe_customer, "provider_payment_method": method},
    }
    await org.post("/v1/customers", customer)
    start = month_start(1)
    sub = {"customer_id": CUSTOMER, "plan_code": PLAN, "start_date": rfc3339(start), "external_id": EXTERNAL}
    made["subscription"] = (await org.post("/v1/subscriptions", sub))["id"]
    clock = await org.post("/v1/test_clocks", {"name": f"{mark} clock", "frozen_time": "2026-01-01T00:00:00Z"})
    made["test_clock"] = clock["id"]
    await org.post("/v1/customers", {"id": CLOCK_CUSTOMER, "name": f"{mark} on a clock", "test_clock_id": clock["id"]})
    coupon = {
        "code": COUPON,
        "name": f"{mark} coupon",
        "discount_type": "fixed_amount",
        "discount_value": str(price),
        "duration": "forever",
    }
    made["coupon"] = (await org.post("/v1/coupons", coupon))["id"]
    applied = {"customer_id": CUSTOMER, "coupon_code": COUPON}
    made["applied_coupon"] = (await org.post("/v1/applied_coupons", applied))["id"]
    add_on = {"code": ADD_ON, "name": f"{mark} setup", "amount_cents": price * 1000}
    made["add_on"] = (await org.post("/v1/add_ons", add_on))["id"]
    applied = {"customer_id": CUSTOMER, "add_on_code": ADD_ON}
    made["applied_add_on"] = (await org.post("/v1/applied_add_ons", applied))["id"]
    made["add_on_invoice"] = (await invoiced(org, "one_off"))["id"]
    when = rfc3339(start + timedelta(days=2))
    event = {"customer_id": CUSTOMER, "code": METRIC, "timestamp": when, "properties": {"units": str(price)}}
    await org.post("/v1/events", {**event, "transaction_id": TXN}, 200)
    made["event"] = (await org.post("/v1/events", event, 200))["transaction_id"]  # a server-assigned key
    abaxus = {"idempotency_key": KEY, "customer_id": CUSTOMER, "metric_key": METRIC, "timestamp": when}
    await org.post("/v1/events", {**abaxus, "properties": {"units": str(price)}}, 202)
    await org.tenant.bill(CUSTOMER)
    made["invoice"] = (await invoiced(org, "in_arrears"))["id"]
    note = {"invoice_id": made["invoice"], "amount_cents": 100, "reason": "other", "description": f"{mark} credit"}
    made["credit_note"] = (await org.post("/v1/credit_notes", note))["id"]
    made["calculation"] = (await org.post("/v1/pricing/calculate", {"customer_id": CUSTOMER}, 200))["calculation_id"]
    made["parked"] = await parked(org, stack, price)


async def invoiced(org: Org, timing: str) -> dict:
    """The customer's issued invoice of that timing, once it is there (an
    add-on's is issued when invoicing hears of it; billing may run before
    invoicing knows the subscription, so it runs again)."""

    async def issued():
        listed = (await org.tenant.http.get(f"/v1/customers/{CUSTOMER}/invoices")).json()["invoices"]
        found = [i for i in listed if i["status"] == "finalized" and i["timing"] == timing]
        if not found and timing == "in_arrears":
            await org.tenant.bill(CUSTOMER)
        assert len(found) == 1, listed
        return found[0]

    return await eventually(issued)


async def parked(org: Org, stack: Stack, sequence: int) -> str:
    """A message invoicing gave up on, parked for the organization (at a
    stream sequence no real message reaches); its id."""
    db = InvoicingDb(stack)
    try:
        message = bus.Parked("BXB_CATALOG", "invoicing", 3 * 10**9 + sequence, "bxb.catalog.v1.subscription_created",
                             b"\xff not an event", org.tenant.organization_id, 20, f"DecodeError: {org.mark}")  # fmt: skip
        await ParkedMessages("invoicing", db.sessions, Parked, {}).park(message)
    finally:
        await db.close()
    [listed] = (await org.tenant.http.get("/v1/parked_messages")).json()["parked_messages"]
    return listed["id"]


@pytest.fixture(scope="module")
async def pair(stack: Stack, localstripe: LocalStripe):
    a, b = Org(await new_tenant(stack), "Alpha"), Org(await new_tenant(stack), "Bravo")
    await populate(a, stack, localstripe, 77)
    await populate(b, stack, localstripe, 33)
    yield a, b
    await a.tenant.http.aclose()
    await b.tenant.http.aclose()


# Reading an organization.

Seen = dict[tuple[str, str], Any]  # (url, query string) -> (status, bytes)


def fill(path: str, value: str) -> str:
    return re.sub(r"{\w+}", lambda _: value, path)


def read_queries(ids: dict[str, set[str]]) -> Iterator[dict[str, str]]:
    """The query strings a listing is read with: none, the shared customer,
    its events by key and the rejected ones, a usage window, and ids by the
    name they were found under."""
    window = {
        "customer_id": CUSTOMER,
        "metric_key": METRIC,
        "period_start": rfc3339(month_start(1)),
        "period_end": rfc3339(month_start(0)),
    }
    yield from ({}, {"customer_id": CUSTOMER}, {"customer_id": CUSTOMER, "status": "rejected"})
    yield from ({"idempotency_key": KEY}, {"transaction_id": TXN}, window, {**window, "interval": "day"})
    for name in ("subscription_id", "invoice_id"):
        for value in sorted(ids.get(name, ())):
            yield {name: value}


def collection(path: str) -> str:
    """What a path names things in: `/v1/invoices/` for `/v1/invoices/{id}/void`."""
    return path.split("{")[0]


GETS = [path for path, method, _ in ROUTES if method == "GET"]


def leaves(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for name, item in value.items():
            yield from leaves(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item, key)
    else:
        yield key, value


def telling(value: Any) -> bool:
    """A value that tells one organization's data from another's: not a
    timestamp, a boolean or a small number, which both may hold alike."""
    if isinstance(value, str):
        return len(value) >= 4 and not TIMESTAMP.match(value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1000


def decoded(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:  # a PDF
        return None


@dataclass
class Reading:
    """Everything an organization read of itself, and the ids and telling values in it."""

    seen: Seen = field(default_factory=dict)
    lists: set[tuple[str, str]] = field(default_factory=set)
    found: dict[str, set[str]] = field(default_factory=dict)  # by GET path: the values it found something with
    ids: dict[str, set[str]] = field(default_factory=dict)  # by the field name they were found under
    values: set[Any] = field(default_factory=set)

    async def get(self, org: Org, path: str, value: str, query: dict[str, str]) -> None:
        url = fill(path, value)
        key = (url, str(httpx.QueryParams(query)))
        if "{" not in path:
            self.lists.add(key)
        if key not in self.seen:
            response = await org.tenant.http.get(url, params=query)
            self.take(key, response)
            if response.status_code < 300 and "{" in path:
                self.found.setdefault(path, set()).add(value)

    def take(self, key: tuple[str, str], response: httpx.Response) -> None:
        self.seen[key] = (response.status_code, response.content)
        if response.status_code < 300:
            for name, value in leaves(decoded(response.content)):
                if telling(value):
                    self.values.add(value)
                    if isinstance(value, str) and (name == "id" or name.endswith("_id")) and value not in SHARED:
                        self.ids.setdefault(name, set()).add(value)

    @property
    def all_ids(self) -> list[str]:
        return sorted(set().union(*self.ids.values()))

    def reaching(self, path: str) -> list[str]:
        """The values with which a GET in the path's collection found
        something: what the path may name (A's invoices for
        /v1/invoices/{id}/void); every value read, when no GET finds any."""
        found = set().union(*(values for p, values in self.found.items() if collection(p) == collection(path)))
        return sorted(found) if found else [*SHARED, *self.all_ids]


async def read(org: Org, like: Reading | None = None) -> Reading:
    """Every GET of `org`: each path with each shared code and each of its
    own ids (read again with each id found in the answers until no new one
    turns up); each listing, and each path the shared customer names, with
    every query string. `like` another organization's reading: only the
    shared codes that found something there, and no ids."""
    reading, values = Reading(), [*SHARED, *sorted(org.made.values())]
    while True:
        for path in (p for p in GETS if "{" in p):
            for value in values if like is None else sorted(like.found.get(path, set()) & set(SHARED)):
                await reading.get(org, path, value, {})
        for path in GETS:
            if "{" not in path or CUSTOMER in reading.found.get(path, ()):
                for query in read_queries(reading.ids):
                    await reading.get(org, path, CUSTOMER, query)
        found = sorted(set(reading.all_ids) - set(values))
        if like is not None or not found:
            return reading
        values += found


def rendered(response: httpx.Response) -> tuple[int, Any]:
    """An answer as compared before and after: a PDF by its text (its bytes
    hold the time it was drawn), anything else by its bytes."""
    if response.headers.get("content-type") == "application/pdf":
        return response.status_code, [page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages]
    return response.status_code, response.content


async def snapshot(org: Org, reading: Reading, stack: Stack) -> dict[tuple[str, str], Any]:
    """The reads that found something, and every list, again; and the
    payments of every invoice. Something new would be in a list."""
    seen = {}
    for key, (status, _) in reading.seen.items():
        if status < 300 or key in reading.lists:
            seen[key] = rendered(await org.tenant.http.get(key[0], params=key[1]))
    async with stack.channel("payments") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        for value in reading.all_ids:
            request = payments_pb2.ListPaymentsRequest(invoice_id=value)
            listed = await stub.ListPayments(request, metadata=metadata(org.tenant.organization_id))
            seen[("payments", value)] = listed.SerializeToString(deterministic=True)
    return seen


# The probe.


@dataclass
class Probe:
    """Sends B's requests, and notes every answer that fails or shows A's data."""

    b: Org
    a: Reading
    a_only: set[Any]
    a_org: str
    findings: list[str] = field(default_factory=list)
    requests: int = 0

    async def send(self, method: str, url: str, query: dict | None = None, body: Any = None, takes_a: bool = False):
        content = None if body is None else json.dumps(body).encode()
        response = await self.b.tenant.http.request(method, url, params=query, content=content)
        self.requests += 1
        asked = f"{url} {query} {content!r}"
        where = f"{method} {url}?{httpx.QueryParams(query or {})} {(content or b'')[:200]!r} -> {response.status_code}"
        text = response.content.decode(errors="replace")
        if response.status_code >= 500:
            self.findings.append(f"{where}: {text[:300]!r}")
        if takes_a and response.status_code not in (400, 404):
            self.findings.append(f"{where}: took A's id: {text[:300]!r}")
        shown = {value for value in [*self.a.all_ids, self.a_org, "Alpha"] if value in text}
        shown |= {value for _, value in leaves(decoded(response.content)) if telling(value) and value in self.a_only}
        if leaked := {value for value in shown if str(value) not in asked}:
            self.findings.append(f"{where}: shows A's {sorted(map(str, leaked))}")
        return response


def server_assigned(path: str) -> bool:
    """Whether the path's parameter is an id the server assigned (`{id}`, but
    the plan code ABAXUS calls id), which must be found or refused."""
    return "{id}" in path and not path.startswith("/v1/price-plans/")


def probed_fields(schema: Schema) -> list[str]:
    """The body fields naming a server-assigned resource (`invoice_id`, `plan_id`, ...)."""
    return [
        name
        for name, sub in fields(schema).items()
        if kind(sub) == "string" and name.endswith("_id") and name not in CLIENT_NAMED
    ]


def naming(body: dict, name: str, value: str, fresh: str) -> dict:
    """`body` with `name` set to `value` and no other spelling of it
    (`plan_code` when `plan_id` is given, which it would win over), creating
    something new (`fresh` as its id or key) rather than finding it exists."""
    stem = name.rsplit("_", 1)[0]
    body = {k: fresh if k in NEW else v for k, v in body.items() if k.rsplit("_", 1)[0] != stem}
    return {**body, name: value}


def b_body(schema: Schema, b: Org) -> dict:
    """A body of `schema` naming B's resources, its times in B's open period."""
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    names = {
        "invoice_id": b.made["invoice"],
        "subscription_id": b.made["subscription"],
        "test_clock_id": b.made["test_clock"],
        "plan_id": b.made["plan"],
        "customer_id": CUSTOMER,
        "plan_code": PLAN,
        "coupon_code": COUPON,
        "add_on_code": ADD_ON,
        "metric_code": METRIC,
        "metric_key": METRIC,
        "code": METRIC,
    }
    times = {"period_start": month_start(1), "period_end": month_start(0), "timestamp": now, "cutoff_date": now}
    body = sensible(schema, "", names)
    return {**body, **{name: rfc3339(times[name]) for name in body if name in times}}


async def base_body(probe: Probe, method: str, url: str, schema: Schema) -> dict:
    """A body B's gateway takes: every field named after B's own resources,
    less the optional fields the answer names as wrong, one by one."""
    body = b_body(schema, probe.b)
    for _ in range(len(fields(schema))):
        response = await probe.send(method, url, body=body)
        if response.status_code != 400:
            break
        named = re.split(r"[.\[]", response.json()["error"].get("field", ""))[0]
        if named not in body or required(schema, named):
            break
        del body[named]
    return body


@pytest.mark.timeout(600)  # about 2,000 requests: 20 s alone, minutes on a machine shared with other suites
async def test_another_organizations_ids_find_nothing_and_change_nothing(pair, stack: Stack):
    a, b = pair
    # B's values as its probe sees them: its lists and the shared codes (it never asks B's ids).
    a_reading = await read(a)
    b_reading = await read(b, like=a_reading)
    assert set(a.made.values()) <= set(a_reading.all_ids), "every resource's id is found in A's answers"
    before = await snapshot(a, a_reading, stack)
    probe = Probe(b, a_reading, a_reading.values - b_reading.values, a.tenant.organization_id)
    for path, method, schema in ROUTES:
        if "{" in path:
            body = b_body(schema, b) if schema is not None else None
            for value in a_reading.reaching(path):
                a_id = value not in SHARED and server_assigned(path)
                await probe.send(method, fill(path, value), body=body, takes_a=a_id)
        if method == "GET" and ("{" not in path or CUSTOMER in a_reading.found.get(path, ())):
            for query in read_queries(a_reading.ids):
                await probe.send(method, fill(path, CUSTOMER), query)
        elif schema is not None and "{" not in path and probed_fields(schema):
            base = await base_body(probe, method, path, schema)
            for name in probed_fields(schema):
                for value in a_reading.all_ids:
                    refused = (path, name) not in UNCHECKED
                    body = naming(base, name, value, f"probe_{probe.requests}")
                    await probe.send(method, path, body=body, takes_a=refused)
    after = await snapshot(a, a_reading, stack)
    assert not probe.findings, "\n".join(probe.findings)
    assert [key for key in before if before[key] != after[key]] == []
