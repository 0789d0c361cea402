"""How the gateway reads and checks JSON request bodies, and that a refused
request stores nothing. The test stack refuses bodies over 65536 bytes."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Tenant, unique

LIMIT = 65536


def metric(code: str, **extra) -> dict:
    return {"code": code, "aggregation_type": "count", **extra}


async def assert_no_metric(tenant: Tenant, code: str) -> None:
    response = await tenant.http.get(f"/v1/billable_metrics/{code}")
    assert response.status_code == 404, response.text
    assert (await tenant.http.get("/v1/billable_metrics")).json()["billable_metrics"] == []


def padded(body: dict, size: int) -> bytes:
    """The JSON of `body` followed by spaces up to exactly `size` bytes."""
    raw = json.dumps(body).encode()
    return raw + b" " * (size - len(raw))


def assert_error(response, status: int, reason: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["status"], error["reason"]) == (status, reason)
    assert error.get("field") == field
    return error


async def test_malformed_json_is_a_400_saying_where(tenant: Tenant):
    code = unique("m")
    response = await tenant.http.post("/v1/billable_metrics", content=f'{{"code": "{code}",\n "aggregation_type": }}')
    error = assert_error(response, 400, "MALFORMED_JSON")
    assert error["code"] == "INVALID_ARGUMENT"
    assert "line 2 column" in error["message"]
    await assert_no_metric(tenant, code)


@pytest.mark.parametrize("raw", [b"", b"   \n\t "])
async def test_an_empty_body_is_a_400_missing_body(tenant: Tenant, raw: bytes):
    response = await tenant.http.post("/v1/billable_metrics", content=raw)
    error = assert_error(response, 400, "MISSING_BODY")
    assert error["message"] == "a JSON body is required"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"code": "m", "aggregation_type": "count", "name": "\\ud800"}',  # lone surrogate escape in a value
        b'{"\\udfff": 1}',  # ... and in a key
        b'{"code": "\xff\xfe"}',  # not UTF-8 at all
        b'{"code": "m", "aggregation_type": NaN}',
    ],
)
async def test_bodies_that_are_not_valid_unicode_json_are_malformed(tenant: Tenant, raw: bytes):
    response = await tenant.http.post("/v1/billable_metrics", content=raw)
    assert_error(response, 400, "MALFORMED_JSON")
    await assert_no_metric(tenant, "m")


@pytest.mark.parametrize("raw", [b'["count"]', b"null", b"7"])
@pytest.mark.parametrize("path", ["/v1/billable_metrics", "/v1/events/batch", "/v1/pricing/calculate"])
async def test_a_json_body_that_is_not_an_object_is_refused(tenant: Tenant, path: str, raw: bytes):
    response = await tenant.http.post(path, content=raw)
    error = assert_error(response, 400, "INVALID_TYPE")  # the body itself: no field
    assert error["message"] == "the body must be an object"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"code": "m\u0000", "aggregation_type": "count"}, "code"),
        ({"code": "m", "aggregation_type": "count", "name": "\u0000"}, "name"),
        (
            {"code": "m", "aggregation_type": "count", "filters": [{"key": "region", "values": ["us", "\u0000"]}]},
            "filters[0].values[1]",
        ),
        ({"code": "m", "aggregation_type": "count", "filters": [{"key\u0000": "region"}]}, "filters[0].key\\u0000"),
    ],
)
async def test_a_nul_character_anywhere_in_a_body_is_refused_by_its_path(tenant: Tenant, body: dict, field: str):
    raw = json.dumps(body).encode()  # the NUL characters as \\u0000 escapes
    assert b"\\u0000" in raw
    response = await tenant.http.post("/v1/billable_metrics", content=raw)
    error = assert_error(response, 400, "INVALID_VALUE", field)
    assert "NUL" in error["message"]
    await assert_no_metric(tenant, "m")


async def test_an_escaped_backslash_before_u0000_is_plain_text(tenant: Tenant):
    code = unique("m")
    body = {"code": code, "aggregation_type": "count", "description": "C strings end with \\u0000"}
    response = await tenant.http.post("/v1/billable_metrics", content=json.dumps(body).encode())
    assert response.status_code == 201, response.text
    assert response.json()["description"] == "C strings end with \\u0000"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/billable_metrics/m%00", "code"),
        ("/v1/customers/c%00/invoices", "customer_id"),
        ("/v1/invoices?customer_id=c%00", "customer_id"),
        (
            "/v1/usage/summary?customer_id=c%00&metric_key=m&period_start=2026-01-01T00:00:00Z"
            "&period_end=2026-02-01T00:00:00Z",
            "customer_id",
        ),
        ("/v1/events?customer_id=c%00", "customer_id"),
    ],
)
async def test_a_nul_character_in_the_path_or_query_is_refused_by_name(tenant: Tenant, path: str, field: str):
    assert_error(await tenant.http.get(path), 400, "INVALID_VALUE", field)


async def test_an_unknown_field_is_refused_by_name(tenant: Tenant):
    code = unique("m")
    response = await tenant.http.post("/v1/billable_metrics", json=metric(code, colour="blue"))
    error = assert_error(response, 400, "UNKNOWN_FIELD", "colour")
    assert "colour" in error["message"]
    await assert_no_metric(tenant, code)


async def test_a_nested_unknown_field_is_refused_by_its_path(tenant: Tenant):
    metric_code = unique("m")
    assert (await tenant.http.post("/v1/billable_metrics", json=metric(metric_code))).status_code == 201
    plan = {
        "code": unique("plan"),
        "interval": "monthly",
        "charges": [
            {"billable_metric_code": metric_code, "charge_model": "standard", "properties": {"amount": "1"}},
            {"billable_metric_code": metric_code, "charge_model": "standard", "properties": {"amount": "1", "foo": 1}},
        ],
    }
    response = await tenant.http.post("/v1/plans", json=plan)
    assert_error(response, 400, "UNKNOWN_FIELD", "charges[1].properties.foo")
    assert (await tenant.http.get(f"/v1/plans/{plan['code']}")).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"code": 7, "aggregation_type": "count"}, "code"),
        ({"code": "m", "aggregation_type": ["count"]}, "aggregation_type"),
        ({"code": "m", "aggregation_type": "count", "name": {"en": "Calls"}}, "name"),
        ({"code": "m", "aggregation_type": "count", "description": False}, "description"),
    ],
)
async def test_a_wrong_type_is_refused_naming_the_field(tenant: Tenant, body: dict, field: str):
    response = await tenant.http.post("/v1/billable_metrics", json=body)
    error = assert_error(response, 400, "INVALID_TYPE", field)
    assert error["message"] == f"{field} must be a string"
    await assert_no_metric(tenant, "m")


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"amount_cents": "100"}, "amount_cents", "INVALID_TYPE"),
        ({"amount_cents": 1.5}, "amount_cents", "INVALID_TYPE"),
        ({"charges": {"billable_metric_code": "m"}}, "charges", "INVALID_TYPE"),
        (
            {"charges": [{"charge_model": "standard", "properties": {}}]},
            "charges[0].billable_metric_code",
            "MISSING_FIELD",
        ),
        (
            {"charges": [{"billable_metric_code": "m", "charge_model": "standard"}]},
            "charges[0].properties",
            "MISSING_FIELD",
        ),
        (
            {"charges": [{"billable_metric_code": "m", "charge_model": "dynamic", "properties": {}}]},
            "charges[0].charge_model",
            "INVALID_VALUE",
        ),
        (
            {
                "charges": [
                    {
                        "billable_metric_code": "m",
                        "charge_model": "graduated",
                        "properties": {"graduated_ranges": [{"from": 0, "to": None, "per_unit": True}]},
                    }
                ]
            },
            "charges[0].properties.graduated_ranges[0].per_unit",
            "INVALID_TYPE",
        ),
        ({"interval": "daily"}, "interval", "INVALID_VALUE"),
    ],
)
async def test_plan_bodies_are_checked_down_to_the_nested_field(tenant: Tenant, change: dict, field: str, reason: str):
    code = unique("plan")
    response = await tenant.http.post("/v1/plans", json={"code": code, "interval": "monthly", **change})
    assert_error(response, 400, reason, field)
    assert (await tenant.http.get(f"/v1/plans/{code}")).status_code == 404


async def test_a_missing_required_field_is_named(tenant: Tenant):
    response = await tenant.http.post("/v1/billable_metrics", json={"code": unique("m")})
    error = assert_error(response, 400, "MISSING_FIELD", "aggregation_type")
    assert error["message"] == "aggregation_type is required"


async def test_a_body_sent_as_curl_sends_it_is_still_json(tenant: Tenant):
    code = unique("m")
    response = await tenant.http.post(
        "/v1/billable_metrics",
        content=json.dumps(metric(code, name="Calls")),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Calls"
    assert (await tenant.http.get(f"/v1/billable_metrics/{code}")).json()["name"] == "Calls"


async def test_a_body_of_exactly_the_limit_is_accepted(tenant: Tenant):
    code = unique("m")
    response = await tenant.http.post("/v1/billable_metrics", content=padded(metric(code), LIMIT))
    assert response.status_code == 201, response.text


async def test_a_body_over_the_limit_by_content_length_is_a_413(tenant: Tenant):
    code = unique("m")
    raw = padded(metric(code), LIMIT + 1)
    response = await tenant.http.post("/v1/billable_metrics", content=raw)
    assert response.request.headers["content-length"] == str(LIMIT + 1)
    error = assert_error(response, 413, "BODY_TOO_LARGE")
    assert error["message"] == f"the body exceeds {LIMIT} bytes"
    await assert_no_metric(tenant, code)


async def stream(raw: bytes, chunk: int = 10_000):
    for start in range(0, len(raw), chunk):
        yield raw[start : start + chunk]


async def test_a_streamed_body_over_the_limit_is_a_413(tenant: Tenant):
    code = unique("m")
    response = await tenant.http.post("/v1/billable_metrics", content=stream(padded(metric(code), LIMIT + 1)))
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, "BODY_TOO_LARGE")
    await assert_no_metric(tenant, code)


async def test_a_streamed_body_within_the_limit_is_read_whole(tenant: Tenant):
    code = unique("m")
    response = await tenant.http.post(
        "/v1/billable_metrics", content=stream(padded(metric(code, name="Streamed"), LIMIT))
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Streamed"
