"""Protobuf values as the JSON API spells them, and the gateway's JSON error body."""

from __future__ import annotations

import json

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from bxb.catalog.v1 import plans_pb2 as pb
from gateway import render
from gateway.errors import ApiError, body_path, error_response, invalid


def test_time_renders_set_timestamps_as_rfc3339_utc():
    plan = pb.Plan(create_time=Timestamp(seconds=1767225600, nanos=250_000_000))
    assert render.time(plan, "create_time") == "2026-01-01T00:00:00.250000Z"


def test_time_of_an_unset_timestamp_is_null():
    assert render.time(pb.Plan(), "create_time") is None


@pytest.mark.parametrize(
    ("value", "name"), [(pb.CHARGE_MODEL_STANDARD, "standard"), (pb.CHARGE_MODEL_GRADUATED, "graduated")]
)
def test_enum_names_round_trip(value, name):
    assert render.enum(pb.ChargeModel, value, "CHARGE_MODEL_") == name
    assert render.enum_value(pb.ChargeModel, name, "CHARGE_MODEL_") == value


def test_enum_value_is_case_insensitive_and_refuses_unknown_names():
    assert render.enum_value(pb.PlanInterval, "Quarterly", "PLAN_INTERVAL_") == pb.PLAN_INTERVAL_QUARTERLY
    with pytest.raises(ValueError):
        render.enum_value(pb.PlanInterval, "daily", "PLAN_INTERVAL_")


@pytest.mark.parametrize(
    ("text", "value"), [("", None), ("0", 0), ("100", 100), ("100.0", 100), ("1e3", 1000), ("2.5", "2.5")]
)
def test_bound_renders_whole_numbers_as_integers_and_the_open_end_as_null(text, value):
    rendered = render.bound(text)
    assert rendered == value
    assert type(rendered) is type(value)


def test_bound_keeps_huge_integers_exact():
    assert render.bound("123456789012345678901234567890") == 123456789012345678901234567890


def body(response) -> dict:
    return json.loads(response.body)


def test_error_response_body_with_a_field():
    response = error_response(400, "INVALID_ARGUMENT", "UNKNOWN_FIELD", "unknown field 'x'", "x")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert body(response) == {
        "error": {
            "status": 400,
            "code": "INVALID_ARGUMENT",
            "reason": "UNKNOWN_FIELD",
            "message": "unknown field 'x'",
            "field": "x",
        }
    }


def test_error_response_without_a_field_omits_it_and_keeps_headers():
    response = error_response(
        401, "UNAUTHENTICATED", "MISSING_API_KEY", "no key", headers={"WWW-Authenticate": "Bearer"}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert body(response) == {
        "error": {"status": 401, "code": "UNAUTHENTICATED", "reason": "MISSING_API_KEY", "message": "no key"}
    }


def test_api_error_renders_its_own_response():
    error = ApiError(413, "INVALID_ARGUMENT", "BODY_TOO_LARGE", "the body exceeds 10 bytes")
    assert str(error) == "the body exceeds 10 bytes"
    response = error.response()
    assert response.status_code == 413
    assert body(response)["error"] == {
        "status": 413,
        "code": "INVALID_ARGUMENT",
        "reason": "BODY_TOO_LARGE",
        "message": "the body exceeds 10 bytes",
    }


def test_invalid_is_a_400_invalid_argument():
    error = invalid("amount must be positive", "charges[0].properties.amount", "INVALID_VALUE")
    assert (error.status, error.code, error.reason, error.field) == (
        400,
        "INVALID_ARGUMENT",
        "INVALID_VALUE",
        "charges[0].properties.amount",
    )
    default = invalid("bad")
    assert (default.reason, default.field) == ("INVALID_ARGUMENT", "")
    assert body(default.response())["error"] == {
        "status": 400,
        "code": "INVALID_ARGUMENT",
        "reason": "INVALID_ARGUMENT",
        "message": "bad",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plan.charges[1].billable_metric_code", "charges[1].billable_metric_code"),
        ("add_on.name must be at most 200 characters", "name must be at most 200 characters"),
        ("customer_id value is required", "customer_id value is required"),  # a top-level field stays
        ("planet", "planet"),
    ],
)
def test_a_field_of_a_wrapped_resource_is_named_as_the_body_names_it(text, expected):
    assert body_path(text) == expected
