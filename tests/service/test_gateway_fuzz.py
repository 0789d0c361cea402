"""Hostile input, generated: every /v1 route and method, called with bodies
built from its own schema (the OpenAPI document of the app's routes, read
by tests/service/openapi_routes.py) and filled with hostile values,
with hostile query strings and hostile ids in its path, answers a success or
a 4xx with the one JSON error body, never a 5xx. A write that succeeds is
read back (its route's own GET, the customer's invoices and current usage),
so what the API accepted can be shown.

Hostile values: numbers huge, negative, fractional or in exponent notation
(1e90, -1e20, 2^63 - 1, 10^40), as JSON numbers and as strings; strings of 0
to 100,000 characters, unicode, NUL, lone surrogates; nested arrays and
objects; null; values of the wrong type; unknown fields; bodies that are no
JSON object at all. Most examples change a few fields, at any depth, of a
sensible body naming the test's own resources (made one the API takes
first), so hostile values reach the services and their stores.

Each write route gets a tenant of its own, so its examples do not depend on
which routes ran before (the reads share one: reading changes nothing);
generation is derandomized (the same examples on every run) and small per
route. Asked separately, one case each: ids and query values of thousands
of characters, and amounts far beyond any price, priced or refused."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Stack, Tenant, eventually, new_tenant
from tests.service.openapi_routes import (
    ROUTES,
    Schema,
    bits,
    choices,
    fields,
    items,
    kind,
    query_parameters,
    required,
    sensible,
)

EXAMPLES = int(os.environ.get("BXB_FUZZ_EXAMPLES", "10"))  # a route; a soak run sets more
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one tenant for a route's examples, on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# Hostile values.

NUMBERS = st.one_of(
    st.sampled_from(
        [0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**40, 1e90, -1e20, 1e-30, 0.1, 5e-324]
    ),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)
NUMERIC_TEXT = st.sampled_from(
    ["1e90", "-1e20", "9223372036854775807", "9223372036854775808", "-0", "1E+3", "0.0000000000001", "NaN",
     "Infinity", "-Infinity", "0x10", "1_000", " 7 ", "1e-400", "1e999999999", "1" * 400]
)  # fmt: skip
TIMES = st.sampled_from(
    ["9999-12-31T23:59:59Z", "9998-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
     "1970-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-01-01T00:00:00+23:59", "2026-01-01", "now",
     "2026-01-01T00:00:00.123456789Z", 253402300799, -1, 1e20, 10**30]
)  # fmt: skip
CHARACTERS = ["x", "é", "💥", "\x00", "\u202e", "\ud800", "/", "%", "'", "\\"]
LONG_TEXT = st.builds(
    lambda char, length: char * length,
    st.sampled_from(CHARACTERS),
    st.sampled_from([0, 1, 101, 201, 2001, 5000, 20000, 60000, 100_000]),
)
SHORT_TEXT = st.one_of(st.text(max_size=20), NUMERIC_TEXT, st.sampled_from(CHARACTERS))
TEXT = st.one_of(SHORT_TEXT, LONG_TEXT, TIMES.filter(lambda t: isinstance(t, str)))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
ANYTHING = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SHORT_TEXT, inner, max_size=3), max_leaves=6
)
RAW_BODIES = st.sampled_from(
    [b"", b" ", b"null", b"[]", b'"text"', b"0", b"{", b'{"a":1,}', b"\xff\xfe", b"{}" * 2, b"[" * 5000,
     b'{"a":' * 3000, b'{"x": NaN}', b'{"x": Infinity}', b'{"x": 1' + b"0" * 5000 + b"}", b'{"\\u0000": 1}',
     b'{"x": "\\ud800"}', b"\x00", b"{" + b" " * 70000 + b"}"]
)  # fmt: skip
# Path ids and query values: short, so their echo in an error stays under
# gRPC's metadata limit; long ones are test_a_long_id_in_a_path_...'s.
PATH_IDS = st.one_of(
    st.sampled_from(["x" * 1000, "%2F", "%2e%2e", "..", ".", "%00", "%", "%FF", "a b", "-1", "0", "null", "*", "{id}"]),
    st.text(min_size=1, max_size=50),
)
QUERY_VALUES = st.one_of(
    st.text(max_size=30), NUMERIC_TEXT, TIMES.map(str), st.sampled_from(["x" * 1000, "%00", "", "-1", "0", "501"])
)
RAW_QUERIES = st.sampled_from(["&&", "=", "a=%ZZ", "%00=1", "page_size=1&page_size=2", "page_size", "?", "%"])


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in `n` draws."""
    return st.integers(1, n).map(lambda drawn: drawn == 1)


def typed(schema: Schema) -> st.SearchStrategy:
    """A hostile value of the schema's own type (or near it)."""
    found = kind(schema)
    if found == "string":
        fitting = st.text(max_size=schema.get("maxLength") or 200)
        return st.one_of(TEXT, fitting, *([st.sampled_from(choices(schema))] if choices(schema) else []))
    if found == "integer":
        width = bits(schema)
        return st.one_of(NUMBERS, NUMERIC_TEXT, st.integers(-(2 ** (width - 1)) + 1, 2 ** (width - 1) - 1))
    if found == "decimal":
        return st.one_of(NUMBERS, NUMERIC_TEXT, st.decimals(allow_nan=False, allow_infinity=False).map(str))
    if found == "timestamp":
        return TIMES
    if found == "array":
        return st.one_of(st.lists(typed(items(schema)), max_size=3), SCALARS.map(lambda one: [one] * 501))
    if found == "map":
        return st.dictionaries(SHORT_TEXT, typed(items(schema)), max_size=3)
    if found == "object":
        return st.fixed_dictionaries({}, optional={name: typed(sub) for name, sub in fields(schema).items()})
    return ANYTHING  # boolean, any: anything at all


@st.composite
def mutated(draw, value: Any, schema: Schema) -> Any:
    """`value` with something in it made hostile: in an object a few fields
    (changed deeper, replaced, left out) and maybe an unknown one; in an
    array one item; else the whole value."""
    if kind(schema) == "object" and isinstance(value, dict) and fields(schema):
        value = dict(value)
        for name in draw(st.lists(st.sampled_from(sorted(fields(schema))), min_size=1, max_size=3, unique=True)):
            how = draw(st.sampled_from(["deeper", "replaced", "replaced", "left out"]))
            if how == "left out":
                value.pop(name, None)
            elif how == "deeper" and name in value:
                value[name] = draw(mutated(value[name], fields(schema)[name]))
            else:
                value[name] = draw(st.one_of(typed(fields(schema)[name]), ANYTHING))
        if draw(one_in(10)):
            value[draw(SHORT_TEXT)] = draw(ANYTHING)
        return value
    if kind(schema) == "array" and isinstance(value, list) and value and draw(st.booleans()):
        index = draw(st.integers(0, len(value) - 1))
        return [*value[:index], draw(mutated(value[index], items(schema))), *value[index + 1 :]]
    return draw(st.one_of(typed(schema), ANYTHING))


@st.composite
def bodies(draw, schema: Schema, base: Any) -> bytes:
    """A body: most often `base` made hostile somewhere; else any JSON value,
    or bytes that are no JSON."""
    shape = draw(st.sampled_from(["mutated", "mutated", "mutated", "value", "raw"]))
    if shape == "raw":
        return draw(RAW_BODIES)
    body = draw(mutated(base, schema)) if shape == "mutated" else draw(ANYTHING)
    return json.dumps(body).encode()


@st.composite
def query_strings(draw, base: dict[str, str]) -> str:
    """`base` with a few parameters hostile or left out, maybe an odd one and a raw piece."""
    query = dict(base)
    for name in draw(st.lists(st.sampled_from(sorted(base)), max_size=3, unique=True)) if base else []:
        if draw(st.booleans()):
            query[name] = draw(QUERY_VALUES)
        else:
            del query[name]
    if draw(one_in(4)):
        query[draw(st.text(min_size=1, max_size=10))] = draw(QUERY_VALUES)
    pairs = [f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in query.items()]
    return "&".join([*pairs, *([draw(RAW_QUERIES)] if draw(one_in(4)) else [])])


# The test's resources and what a sensible request names.

# The test clock's time, and the times sensible bodies give: inside the
# subscription's open period, by field name (others: NOW).
CLOCK, NOW = "2026-04-15T00:00:00Z", "2026-04-01T00:00:00Z"
TIMES_BY_NAME = {
    "period_end": "2026-04-10T00:00:00Z",
    "cutoff_date": "2026-04-10T00:00:00Z",
    "frozen_time": "2026-04-20T00:00:00Z",
}
# Fields naming what a request creates, new in every example (an event's key).
NEW = ("transaction_id", "idempotency_key")
QUERY = {
    "customer_id": "c",
    "metric_key": "m",
    "code": "m",
    "period_start": NOW,
    "period_end": TIMES_BY_NAME["period_end"],
    "interval": "day",
    "group_by": "region",
    "status": "rejected",
    "service": "invoicing",
    "idempotency_key": "e",
    "page_size": "10",
    "page_token": "",
    "version": "1",
}


class Resources:
    """A tenant's resources: a metric m, a plan p charging it, a customer c
    on a test clock subscribed to it since March and invoiced for March, a
    tax t, an add-on a, a coupon k applied to c; for reads also a credit
    note, a applied to c, an event e and a calculation. `names` are what
    sensible bodies name, by the ending of a field's name; `ids` what a path
    names, by the collection it is under."""

    def __init__(self, tenant: Tenant):
        self.tenant = tenant
        self.names: dict[str, str] = {}
        self.ids: dict[str, str] = {}

    async def post(self, path: str, body: dict, expect: int = 201) -> dict:
        """A resource, once invoicing knows what it names (a 503 says retry)."""

        async def posted():
            response = await self.tenant.http.post(path, json=body)
            assert response.status_code != 503, response.text
            return response

        response = await eventually(posted)
        assert response.status_code == expect, response.text
        return response.json()

    async def populate(self, read: bool) -> None:
        """The resources; those no write names (a credit note, an event, a
        calculation, an applied add-on: work in the background) only for `read`."""
        await self.post("/v1/billable_metrics", {"code": "m", "aggregation_type": "sum", "field_name": "units"})
        charges = [{"billable_metric_code": "m", "charge_model": "standard", "properties": {"amount": "1"}}]
        await self.post("/v1/plans", {"code": "p", "interval": "monthly", "amount_cents": 100, "charges": charges})
        clock = await self.post("/v1/test_clocks", {"frozen_time": CLOCK})
        await self.post("/v1/customers", {"id": "c", "test_clock_id": clock["id"]})
        sub = {"customer_id": "c", "plan_code": "p", "start_date": "2026-03-01T00:00:00Z"}
        subscription = await self.post("/v1/subscriptions", sub)
        invoice = await self.post("/v1/invoices", {"customer_id": "c", "cutoff_date": "2026-03-31T23:59:59Z"})
        await self.post("/v1/taxes", {"code": "t", "rate": "10"})
        await self.post("/v1/add_ons", {"code": "a", "amount_cents": 100})
        coupon = {"code": "k", "discount_type": "percentage", "discount_value": "10", "duration": "once"}
        await self.post("/v1/coupons", coupon)
        applied = await self.post("/v1/applied_coupons", {"customer_id": "c", "coupon_code": "k"})
        if read:
            note = await self.post("/v1/credit_notes", {"invoice_id": invoice["id"], "amount_cents": 1})
            await self.post("/v1/applied_add_ons", {"customer_id": "c", "add_on_code": "a"})
            event = {
                "transaction_id": "e",
                "customer_id": "c",
                "code": "m",
                "timestamp": NOW,
                "properties": {"units": 1},
            }
            await self.post("/v1/events", event, 200)
            calculation = await self.post("/v1/pricing/calculate", {"customer_id": "c"}, 200)
            self.ids.update(
                {
                    "/v1/credit_notes": note["id"],
                    "/v1/events": "e",
                    "/v1/pricing/calculations": calculation["calculation_id"],
                }
            )
        self.names = {
            "subscription_id": subscription["id"],
            "invoice_id": invoice["id"],
            "test_clock_id": clock["id"],
            "customer_id": "c",
            "plan_code": "p",
            "plan_id": "p",
            "plan_codes": "p",
            "tax_codes": "t",
            "add_on_code": "a",
            "coupon_code": "k",
            "metric_code": "m",
            "metric_codes": "m",
            "metric_key": "m",
            "code": "m",
            "currency": "USD",
            "email": "c@example.test",
            "to": "c@example.test",
        }
        self.ids |= {
            "/v1/billable_metrics": "m",
            "/v1/metrics": "m",
            "/v1/plans": "p",
            "/v1/price-plans": "p",
            "/v1/customers": "c",
            "/v1/subscriptions": subscription["id"],
            "/v1/invoices": invoice["id"],
            "/v1/test_clocks": clock["id"],
            "/v1/taxes": "t",
            "/v1/add_ons": "a",
            "/v1/coupons": "k",
            "/v1/applied_coupons": applied["id"],
        }

    def own(self, path: str) -> str:
        """The path naming the test's resource of its collection (c when none is known)."""
        collection = path.split("/{")[0]
        return fill(path, self.ids.get(collection, "c"))


class World:
    """One route's examples on `resources`: its sensible body and query,
    made ones the route takes at the first example."""

    def __init__(self, resources: Resources):
        self.resources, self.tenant, self.names = resources, resources.tenant, resources.names
        self.own = resources.own
        self.base: Any = None
        self.fresh: set[str] = set()
        self.query: dict[str, str] | None = None
        self.examples = 0

    async def sensible_body(self, method: str, path: str, schema: Schema) -> Any:
        """The route's sensible body, with new names for what it creates."""
        if self.base is None:
            self.base = sensible_body(schema, self.names)
            self.fresh = await self.accepted(method, self.own(path), schema)
        self.examples += 1
        return {**self.base, **{name: f"{name}{self.examples}" for name in self.fresh | set(NEW) if name in self.base}}

    async def accepted(self, method: str, url: str, schema: Schema) -> set[str]:
        """Leaves out of the base body the optional fields the API refuses, one
        by one; the names of what it creates: the fields holding the value a
        second request is refused for (409, it exists)."""
        http = self.tenant.http
        for _ in range(60):
            response = await http.request(method, url, json=self.base)
            refused = refused_field(response)
            if refused is None or not drop(self.base, schema, refused):
                break
        if response.status_code >= 300:
            return set()
        again = await http.request(method, url, json=self.base)
        named = steps(error_field(again))[:1] if again.status_code == 409 else []
        return {name for name, value in self.base.items() if named and value == self.base.get(named[0])}

    async def sensible_query(self, path: str, url: str) -> dict[str, str]:
        """The route's query parameters, sensible values, less those a 400 names."""
        if self.query is None:
            self.query = sensible_query(path, self.names)
            for _ in range(len(self.query)):
                response = await self.tenant.http.get(url, params=self.query)
                if response.status_code != 400 or self.query.pop(error_field(response), None) is None:
                    break
        return self.query


def sensible_body(schema: Schema, names: dict[str, str]) -> Any:
    """A body of `schema` a client would send, naming the test's resources,
    its times in the open period."""
    return sensible(schema, "", names, {**TIMES_BY_NAME, "": NOW})


def sensible_query(path: str, names: dict[str, str]) -> dict[str, str]:
    """The route's query parameters with values a client would send."""
    query = {}
    for name, schema in query_parameters(path, "GET").items():
        value = QUERY.get(name, sensible(schema, name, names, {**TIMES_BY_NAME, "": NOW}))
        query[name] = json.dumps(value) if isinstance(value, bool | int) else str(value)
    return query


def error_field(response: httpx.Response) -> str:
    return response.json()["error"].get("field", "") if response.status_code >= 400 else ""


def refused_field(response: httpx.Response) -> str | None:
    """The field a 400 names, or the first refused item of a batch's 207; None when nothing was refused."""
    if response.status_code == 400:
        return error_field(response)
    if response.status_code == 207:
        return next((r["field"] for r in response.json()["results"] if r["status"] == 400), None)
    return None


def steps(field: str) -> list[str | int]:
    """`charges[0].properties.amount` -> ["charges", 0, "properties", "amount"]."""
    return [int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", field)]


def drop(body: Any, schema: Schema, field: str) -> bool:
    """Leaves out of `body` what `field` names, or the nearest of its parents
    that may be left out (an optional field, a map's key, an array's item);
    False when none may."""
    path = steps(field)
    return any(drop_at(body, schema, path[:end]) for end in range(len(path), 0, -1))


def drop_at(body: Any, schema: Schema, path: list[str | int]) -> bool:
    *parents, last = path
    for step in parents:
        if isinstance(step, int) and isinstance(body, list) and step < len(body):
            body, schema = body[step], items(schema)
        elif isinstance(step, str) and isinstance(body, dict) and step in body:
            body, schema = body[step], fields(schema).get(step) or items(schema)
        else:
            return False
    if isinstance(last, int) and isinstance(body, list) and last < len(body):
        del body[last]
        return True
    optional = kind(schema) == "map" or (last in fields(schema) and not required(schema, last))
    if isinstance(body, dict) and last in body and optional:
        del body[last]
        return True
    return False


def fill(path: str, value: str) -> str:
    return re.sub(r"{\w+}", lambda _: quote(value, safe=""), path)


async def populated(tenant: Tenant, read: bool) -> Resources:
    resources = Resources(tenant)
    await resources.populate(read)
    return resources


@pytest.fixture(scope="module")
async def shared(stack: Stack) -> AsyncIterator[Resources]:
    """Resources the reads share: reading changes nothing, so no read depends on another."""
    tenant = await new_tenant(stack)
    yield await populated(tenant, read=True)
    await tenant.http.aclose()


@pytest.fixture
async def own(tenant: Tenant) -> Resources:
    """Resources of one write route's own, so no write depends on which routes ran before."""
    return await populated(tenant, read=False)


@pytest.fixture
def world(request) -> World:
    reads = request.node.callspec.params["method"] == "GET"
    return World(request.getfixturevalue("shared" if reads else "own"))


# What every answer must be.


def assert_client_error(response: httpx.Response) -> None:
    """A success, or a 4xx with the JSON error body; never a 5xx, nor a 429:
    no service limits rates, so a 429 is gRPC's own RESOURCE_EXHAUSTED, a
    transport limit the request reached."""
    request = response.request
    where = f"{request.method} {str(request.url)[:300]} {request.content[:300]!r}"
    assert response.status_code < 500, f"{where} -> {response.status_code} {response.text[:500]}"
    assert response.status_code != 429, f"{where} -> {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["status"] == response.status_code, where
        assert {"status", "code", "reason", "message"} <= error.keys(), where
        assert all(isinstance(error[key], str) for key in ("code", "reason", "message")), where


def read_backs(path: str, method: str, response: httpx.Response) -> list[str]:
    """What a successful write is read back through: the route's own GET
    (its listing, or the resource), and the customer's invoices and usage."""
    if method == "GET" or response.status_code >= 300:
        return []
    own = [response.request.url.path] if any(p == path and m == "GET" for p, m, _ in ROUTES) else []
    return [*own, "/v1/customers/c/invoices", "/v1/customers/c/current_usage"]


@pytest.mark.parametrize(("path", "method", "schema"), ROUTES, ids=[f"{m} {p}" for p, m, _ in ROUTES])
@FUZZ
@given(data=st.data())
async def test_hostile_input_is_answered_with_a_client_error(world: World, path, method, schema, data):
    url = world.own(path)
    if "{" in path and data.draw(one_in(4), label="hostile path"):
        url = fill(path, data.draw(PATH_IDS, label="path id"))
    if method == "GET":
        url += "?" + data.draw(query_strings(await world.sensible_query(path, world.own(path))), label="query")
    content = None
    if schema is not None:
        content = data.draw(bodies(schema, await world.sensible_body(method, path, schema)), label="body")
    response = await world.tenant.http.request(method, url, content=content)
    assert_client_error(response)
    for read in read_backs(path, method, response):
        assert_client_error(await world.tenant.http.get(read))


# Ids of thousands of characters, and query values as long: one case each.

LONG = {"5000 é": "é" * 5000, "8000 x": "x" * 8000, "20000 x": "x" * 20000}
# The query parameters naming something looked up, or echoed.
QUERY_NAMES = ["customer_id", "subscription_id", "invoice_id", "metric_key", "idempotency_key", "page_token"]
LONG_IDS = [pytest.param(path, method, schema, id=f"{method} {path}") for path, method, schema in ROUTES if "{" in path]
GETS = [pytest.param(path, id=path) for path, method, _ in ROUTES if method == "GET"]


@pytest.mark.parametrize(("path", "method", "schema"), LONG_IDS)
async def test_a_long_id_in_a_path_is_a_client_error(shared: Resources, path, method, schema):
    body = json.dumps(sensible_body(schema, shared.names)).encode() if schema is not None else None
    for length in LONG.values():
        assert_client_error(await shared.tenant.http.request(method, fill(path, length), content=body))


@pytest.mark.parametrize("path", GETS)
async def test_a_long_query_value_is_a_client_error(shared: Resources, path):
    for name in QUERY_NAMES:
        assert_client_error(await shared.tenant.http.get(shared.own(path), params={name: "x" * 20000}))


# Amounts far beyond any price: refused, or accepted and then priced: one case each.

BIG = 2**63 - 1


def priced(model: str, **properties) -> dict:
    return {"charges": [{"billable_metric_code": "m", "charge_model": model, "properties": properties}]}


def graduated(*ranges: tuple) -> dict:
    return priced("graduated", graduated_ranges=[dict(zip(("from", "to", "per_unit"), r, strict=True)) for r in ranges])


ADD_ON = [
    ("/v1/add_ons", {"code": "big", "amount_cents": BIG}),
    ("/v1/applied_add_ons", {"customer_id": "d", "add_on_code": "big"}),
]
COUPON = [
    ("/v1/coupons", {"code": "big", "discount_type": "fixed_amount", "amount_cents": BIG, "duration": "forever"}),
    ("/v1/applied_coupons", {"customer_id": "d", "coupon_code": "big"}),
]
# name: (the plan's terms, the units used, other writes)
AMOUNTS = {
    "plan amount_cents 2^63-1": ({"amount_cents": BIG}, "1", []),
    "minimum_commitment 2^63-1": ({"minimum_commitment": {"amount_cents": BIG}}, "1", []),
    "min_amount_cents 2^63-1": ({"charges": [{**priced("standard", amount="1")["charges"][0], "min_amount_cents": BIG}]}, "1", []),
    "usage threshold 2^63-1": ({"usage_thresholds": [{"amount_cents": BIG}]}, "1", []),
    "package_size 2^63-1": (priced("package", amount="1", package_size=BIG), "1", []),
    "graduated bound 1e90": (graduated((0, "1e90", "1"), ("1e90", None, "1")), "1", []),
    "standard amount 1e-90": (priced("standard", amount="1e-90"), "1", []),
    "add-on amount_cents 2^63-1": (priced("standard", amount="1"), "1", ADD_ON),
    "fixed coupon amount_cents 2^63-1": (priced("standard", amount="1"), "1", COUPON),
    "standard amount 1e20": (priced("standard", amount="1e20"), "1", []),
    "standard amount 1e90": (priced("standard", amount="1e90"), "1", []),
    "package amount 1e90": (priced("package", amount="1e90", package_size=1), "1", []),
    "graduated per_unit 1e90": (graduated((0, None, "1e90")), "1", []),
    "flat amount 1e90": (priced("flat", amount="1e90"), "1", []),
    "percentage rate 1e90": (priced("percentage", rate="1e90"), "1", []),
    "event units 26 digits": (priced("standard", amount="1"), "9" * 26, []),
}  # fmt: skip


async def billed_customer(t: Tenant, plan: dict, units: str, writes: list[tuple[str, dict]]) -> dict | None:
    """Customer d on a test clock, subscribed since April 1st to a plan with
    `plan`'s terms, `units` used on April 2nd, and `writes`: d's subscription,
    or None when the API refuses what it was given."""
    resources = Resources(t)
    await resources.post("/v1/billable_metrics", {"code": "m", "aggregation_type": "sum", "field_name": "units"})
    created = await t.http.post("/v1/plans", json={"code": "p", "interval": "monthly", **plan})
    clock = await resources.post("/v1/test_clocks", {"frozen_time": CLOCK})
    await resources.post("/v1/customers", {"id": "d", "test_clock_id": clock["id"]})
    if created.status_code == 400:
        return None
    subscription = await resources.post("/v1/subscriptions", {"customer_id": "d", "plan_code": "p", "start_date": NOW})
    await known_to_invoicing(t, subscription["id"])
    event = {"customer_id": "d", "code": "m", "timestamp": "2026-04-02T00:00:00Z", "properties": {"units": units}}
    for path, body in [("/v1/events", event), *writes]:
        response = await t.http.post(path, json=body)
        assert_client_error(response)
        if response.status_code == 400:
            return None
    return {**subscription, "test_clock_id": clock["id"]}


async def known_to_invoicing(t: Tenant, subscription_id: str) -> None:
    """Waits until invoicing has the subscription (a preview is no longer a 503, retry)."""

    async def known():
        response = await t.http.post("/v1/invoices/preview", json={"subscription_id": subscription_id})
        assert response.status_code != 503, response.text

    await eventually(known)


async def assert_priced(h: httpx.AsyncClient, subscription: dict) -> None:
    """Every read pricing customer d's open period answers, and so does billing it."""
    window = {"customer_id": "d", "metric_key": "m", "period_start": NOW, "period_end": TIMES_BY_NAME["period_end"]}
    for method, path, body in [
        ("GET", "/v1/customers/d/invoices", None),
        ("GET", "/v1/customers/d/current_usage", None),
        ("POST", "/v1/invoices/preview", {"subscription_id": subscription["id"]}),
        ("POST", "/v1/pricing/calculate", {"customer_id": "d"}),
        ("POST", "/v1/usage/compute", window),
        ("POST", "/v1/invoices", {"customer_id": "d", "cutoff_date": TIMES_BY_NAME["cutoff_date"]}),
        ("POST", f"/v1/test_clocks/{subscription['test_clock_id']}/advance", {"frozen_time": "2026-05-02T00:00:00Z"}),
        ("GET", "/v1/invoices", None),
        ("GET", "/v1/customers/d/invoices", None),
    ]:
        assert_client_error(await h.request(method, path, json=body))


@pytest.mark.parametrize(("plan", "units", "writes"), [pytest.param(*case, id=name) for name, case in AMOUNTS.items()])
async def test_an_amount_far_beyond_any_price_is_refused_or_priced(make_tenant, plan, units, writes):
    t = await make_tenant()
    try:
        subscription = await billed_customer(t, plan, units, writes)
        if subscription is not None:
            await assert_priced(t.http, subscription)
    finally:
        await t.http.aclose()
