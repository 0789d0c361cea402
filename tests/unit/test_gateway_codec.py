"""gateway/codec.py and gateway/transcoder.py on what no transcoded route
needs yet: maps (of text and of messages), free-form values as text, query
parameters into an inlined message and a repeated field, booleans in a query,
a response_body, and an HTTP pattern the gateway cannot serve."""

from __future__ import annotations

from decimal import Decimal

import pytest
from google.api import http_pb2
from google.protobuf import struct_pb2
from starlette.requests import Request

from bxb.catalog.v1 import customers_pb2, taxes_pb2, test_clocks_pb2
from bxb.metering.v1 import usage_events_pb2
from gateway import codec, openapi, transcoder
from gateway.bindings import Binding, _binding
from gateway.codec import Decoder, Encoder
from gateway.dialects import BXB
from gateway.errors import ApiError
from gateway.transcoder import Spelling

CREATE_CUSTOMER = customers_pb2.DESCRIPTOR.services_by_name["CustomerService"].methods_by_name["CreateCustomer"]
LIST_CUSTOMERS = customers_pb2.DESCRIPTOR.services_by_name["CustomerService"].methods_by_name["ListCustomers"]
ADVANCE = test_clocks_pb2.DESCRIPTOR.services_by_name["TestClockService"].methods_by_name["AdvanceTestClock"]


def refused(call, *args) -> ApiError:
    with pytest.raises(ApiError) as error:
        call(*args)
    return error.value


def test_a_map_of_text_keeps_free_form_values_as_text():
    event = usage_events_pb2.UsageEvent()
    given = {"n": 1, "d": Decimal("1.50"), "b": True, "off": False, "o": {"x": [1]}, "s": "x", "gone": None}
    Decoder(BXB).into(event, {"properties": given}, partial=True)
    assert dict(event.properties) == {"n": "1", "d": "1.50", "b": "true", "off": "false", "o": '{"x":[1]}', "s": "x"}
    assert Encoder(BXB).message(event)["properties"] == dict(event.properties)


def test_a_map_is_an_object():
    error = refused(Decoder(BXB).into, usage_events_pb2.UsageEvent(), {"customer_id": "c", "properties": ["x"]})
    assert (error.reason, error.field) == ("INVALID_TYPE", "properties")


def test_a_map_of_messages_reads_and_shows_each():
    value = struct_pb2.Struct()
    Decoder(BXB).into(value, {"fields": {"a": {"string_value": "x"}}})
    assert value.fields["a"].string_value == "x"
    assert Encoder(BXB).message(value)["fields"]["a"]["string_value"] == "x"
    error = refused(Decoder(BXB).into, struct_pb2.Struct(), {"fields": {"a": None}})
    assert (error.reason, error.field, error.message) == ("INVALID_TYPE", "fields.a", "fields.a must be an object")


@pytest.mark.parametrize(
    ("field", "kind"),
    [
        (taxes_pb2.Tax.DESCRIPTOR.fields_by_name["applied_to_organization"], "a boolean"),
        (customers_pb2.Customer.DESCRIPTOR.fields_by_name["invoice_grace_period_days"], "an integer"),
    ],
)
def test_each_kind_of_value_is_named_in_errors(field, kind):
    assert codec._kind(field) == kind


@pytest.mark.parametrize(
    ("value", "message"),
    [("NaN", "x must be a finite number"), ("1e999", "x is out of range"), (Decimal("-1e-999"), "x is out of range")],
)
def test_a_decimal_is_finite_and_in_range(value, message):
    assert refused(codec.decimal, value, "x").message == message


def test_a_time_in_unix_seconds_beyond_the_calendar_is_out_of_range():
    assert refused(codec.timestamp, 10**30, "at").reason == "INVALID_VALUE"


def request(query: bytes = b"", path_params: dict | None = None) -> Request:
    scope = {"type": "http", "method": "GET", "path": "/x", "query_string": query, "headers": []}
    return Request({**scope, "path_params": path_params or {}})


async def test_query_parameters_fill_an_inlined_message_and_a_repeated_field():
    binding = Binding(CREATE_CUSTOMER, "GET", "/x", "", "")
    built = await transcoder.Transcoder(binding, BXB).request(request(b"tax_codes=a&tax_codes=b&name=N"))
    assert (list(built.customer.tax_codes), built.customer.name) == (["a", "b"], "N")


@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False)])
def test_a_boolean_query_parameter_is_true_or_false(text, value):
    applied = taxes_pb2.Tax.DESCRIPTOR.fields_by_name["applied_to_organization"]
    assert transcoder._from_query(applied, text, "applied") is value


def test_a_boolean_query_parameter_is_nothing_else():
    applied = taxes_pb2.Tax.DESCRIPTOR.fields_by_name["applied_to_organization"]
    assert refused(transcoder._from_query, applied, "yes", "applied").reason == "INVALID_TYPE"


def test_a_response_body_answers_that_field_of_the_reply():
    binding = Binding(ADVANCE, "POST", "/v1/test_clocks/{id}/advance", "*", "test_clock")
    reply = test_clocks_pb2.AdvanceTestClockResponse(test_clock=test_clocks_pb2.TestClock(id="clock_1"))
    answer = transcoder.Transcoder(binding, BXB).response(reply)
    assert (answer["id"], "invoices_created" in answer) == ("clock_1", False)


def test_no_field_is_named_as_no_field():
    binding = Binding(CREATE_CUSTOMER, "POST", "/v1/customers", "*", "")
    assert transcoder.Transcoder(binding, BXB).public_field("") == ""


def test_a_custom_http_pattern_cannot_be_served():
    rule = http_pb2.HttpRule(custom=http_pb2.CustomHttpPattern(kind="HEAD", path="/x"))
    with pytest.raises(ValueError, match="unsupported HTTP pattern custom"):
        _binding(CREATE_CUSTOMER, rule)


def test_an_rfc_3339_time_before_year_1_in_utc_is_out_of_range():
    error = refused(codec.timestamp, "0001-01-01T00:00:00+01:00", "at")
    assert (error.reason, error.field) == ("INVALID_VALUE", "at")


def test_two_spellings_of_a_query_parameter_must_agree():
    binding = Binding(LIST_CUSTOMERS, "GET", "/v1/customers", "", "")
    views = {**BXB, "bxb.catalog.v1.ListCustomersRequest": codec.View(aliases={"limit": "page_size"})}
    listing = transcoder.Transcoder(binding, views)
    agreed = listing.query(customers_pb2.ListCustomersRequest(), [("page_size", "5"), ("limit", "5")])
    assert agreed.page_size == 5
    disagreeing = [("page_size", "5"), ("limit", "6")]
    error = refused(listing.query, customers_pb2.ListCustomersRequest(), disagreeing)
    assert (error.field, error.message) == ("limit", "page_size and limit name the same thing and disagree")


def test_the_document_describes_a_response_body_and_leaves_untyped_schemas_alone():
    binding = Binding(ADVANCE, "POST", "/v1/test_clocks/{id}/advance", "*", "test_clock")
    described = openapi.operation(binding, Spelling(BXB))
    answer = described["responses"]["200"]["content"]["application/json"]["schema"]
    assert "frozen_time" in answer["properties"] and "invoices_created" not in answer["properties"]
    assert openapi._nullable({}) == {}
    assert openapi._nullable({"type": ["string", "null"]}) == {"type": ["string", "null"]}
