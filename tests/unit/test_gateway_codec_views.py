"""The View declarations of gateway/codec.py a dialect spells messages with:
alternatives, groups, switches, copies through a message field, REQUIRED
fields, how the client spelled each field, and the Spec a message's JSON is
described by."""

from __future__ import annotations

import pytest

from bxb.catalog.v1 import add_ons_pb2, billable_metrics_pb2, coupons_pb2, customers_pb2, subscriptions_pb2
from bxb.metering.v1 import usage_events_pb2
from gateway.bindings import bindings
from gateway.codec import Decoder, Encoder
from gateway.dialects import ABAXUS, BXB, PUBLIC
from gateway.errors import ApiError
from gateway.openapi import Writer
from gateway.transcoder import Transcoder

PERCENTAGE = {"code": "P", "discount_type": "percentage", "discount_value": "20", "duration": "forever"}


def coupon(body: dict, spelled: dict[str, str] | None = None) -> coupons_pb2.Coupon:
    message = coupons_pb2.Coupon()
    Decoder(BXB).into(message, body, spelled=spelled)
    return message


def refused(body: dict, message=None, **options) -> ApiError:
    with pytest.raises(ApiError) as error:
        Decoder(BXB).into(message if message is not None else coupons_pb2.Coupon(), body, **options)
    return error.value


def test_a_switch_reads_into_the_field_its_enum_chooses():
    assert coupon(PERCENTAGE).percentage == "20"
    fixed = coupon({**PERCENTAGE, "discount_type": "fixed_amount", "discount_value": 5})
    assert (fixed.amount, fixed.percentage) == ("5", "")


def test_a_switch_without_a_choice_is_left_for_the_rules_to_name_the_enum():
    error = refused({"code": "P", "discount_value": "20", "duration": "forever"})
    assert (error.reason, error.field) == ("MISSING_FIELD", "discount_type")


def test_a_switch_and_the_field_it_chose_exclude_each_other():
    error = refused({**PERCENTAGE, "percentage_rate": "20"})
    assert (error.reason, error.field) == ("CONFLICTING_FIELDS", "percentage_rate")


@pytest.mark.parametrize(
    "body",
    [
        {**PERCENTAGE, "coupon_type": "percentage"},
        {"coupon_type": "percentage", **PERCENTAGE},
    ],
)
def test_an_alternative_and_its_field_exclude_each_other_even_alike(body):
    error = refused(body)
    assert (error.reason, error.field) == ("CONFLICTING_FIELDS", "coupon_type")


def test_an_alternative_alone_reads_as_its_field():
    lago = {"code": "P", "coupon_type": "percentage", "percentage_rate": "5", "frequency": "once"}
    read = coupon(lago)
    assert (read.coupon_type, read.percentage, read.duration) == (
        coupons_pb2.COUPON_TYPE_PERCENTAGE,
        "5",
        coupons_pb2.COUPON_DURATION_ONCE,
    )


def test_a_group_is_read_and_shown_as_its_own_object():
    limited = coupon({**PERCENTAGE, "applies_to": {"plan_codes": ["pro"]}})
    assert list(limited.plan_codes) == ["pro"]
    shown = Encoder(BXB).message(limited)
    assert shown["applies_to"] == {"plan_codes": ["pro"], "billable_metric_codes": []}
    assert "plan_codes" not in shown
    assert coupon({**PERCENTAGE, "applies_to": None}).plan_codes == []


@pytest.mark.parametrize(
    ("applies_to", "reason", "field"),
    [
        (["pro"], "INVALID_TYPE", "applies_to"),
        ({"plans": ["pro"]}, "UNKNOWN_FIELD", "applies_to.plans"),
    ],
)
def test_a_group_is_an_object_of_its_members(applies_to, reason, field):
    error = refused({**PERCENTAGE, "applies_to": applies_to})
    assert (error.reason, error.field) == (reason, field)


def test_a_switch_shows_the_chosen_field_or_null():
    assert Encoder(BXB).message(coupon(PERCENTAGE))["discount_value"] == "20"
    assert Encoder(BXB).message(coupons_pb2.Coupon())["discount_value"] is None


def test_the_client_s_spelling_of_each_field_is_told():
    spelled: dict[str, str] = {}
    lago = {"code": "P", "coupon_type": "percentage", "percentage_rate": "5", "frequency": "once", "name": None}
    coupon({**lago, "applies_to": {"plan_codes": ["pro"]}}, spelled)
    assert spelled == {
        "code": "code",
        "coupon_type": "coupon_type",
        "percentage": "percentage_rate",
        "duration": "frequency",
        "name": "name",
        "plan_codes": "applies_to.plan_codes",
    }


def test_a_copy_may_repeat_a_message_field_s_own_field():
    applied = add_ons_pb2.AppliedAddOn(id="aao_1", add_on=add_ons_pb2.AddOn(code="setup"))
    assert Encoder(BXB).message(applied)["add_on_code"] == "setup"
    assert Encoder(BXB).message(add_ons_pb2.AppliedAddOn(id="aao_1"))["add_on_code"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"values": ["a"]}, "key"),
        ({"key": None, "values": ["a"]}, "key"),
        ({"key": "region"}, "values"),
        ({"key": "region", "values": [None]}, "values[0]"),
    ],
)
def test_a_required_field_must_be_given(body, field):
    error = refused(body, billable_metrics_pb2.PropertyValues())
    assert (error.reason, error.field) == ("MISSING_FIELD", field)


def test_a_partial_object_may_leave_required_fields_out():
    metric = billable_metrics_pb2.BillableMetric()
    Decoder(BXB).into(metric, {"name": "Calls"}, partial=True)
    assert metric == billable_metrics_pb2.BillableMetric(name="Calls")


def test_a_null_item_of_an_optional_array_is_of_the_wrong_type():
    error = refused({**PERCENTAGE, "applies_to": {"plan_codes": [None]}})
    assert (error.reason, error.field) == ("INVALID_TYPE", "applies_to.plan_codes[0]")


def test_a_message_is_described_with_its_groups_switches_enums_and_limits():
    coupon = Writer(BXB).input(coupons_pb2.Coupon.DESCRIPTOR)
    fields = coupon["properties"]
    assert fields["discount_value"]["type"] == ["string", "number", "null"]  # a decimal, read from either
    assert fields["discount_type"]["enum"] == ["percentage", "fixed_amount", None]
    assert "discount_type" not in coupon["required"]  # coupon_type may stand for it
    assert fields["applies_to"]["properties"]["plan_codes"]["items"]["maxLength"] == 100
    assert fields["expiration_at"]["format"] == "date-time"
    assert (fields["duration_in_months"]["minimum"], fields["duration_in_months"]["maximum"]) == (0, 1200)
    assert "amount" not in fields and "id" not in fields
    event = Writer(BXB).input(usage_events_pb2.UsageEvent.DESCRIPTOR)
    assert event["properties"]["properties"] == {"type": "object"}
    request = Writer(BXB).input(subscriptions_pb2.CreateSubscriptionRequest.DESCRIPTOR)
    assert request["properties"]["start_date"]["format"] == "date-time"


def transcoder(verb: str, template: str) -> Transcoder:
    binding = next(
        b
        for b in bindings([billable_metrics_pb2.DESCRIPTOR, coupons_pb2.DESCRIPTOR])
        if (b.verb, b.template) == (verb, template)
    )
    return Transcoder(binding, PUBLIC.spelling(binding).views)


def test_a_field_the_path_binds_is_named_as_its_template_names_it():
    patch = transcoder("PATCH", "/v1/metrics/{billable_metric.code}")
    assert patch.public_field("billable_metric.code") == "code"
    assert patch.public_field("code") == "code"
    assert patch.public_field("billable_metric.name") == "name"


def test_a_field_the_client_gave_is_named_as_it_was_given():
    create = transcoder("POST", "/v1/coupons")
    assert create.public_field("coupon.percentage", {"percentage": "discount_value"}) == "discount_value"
    assert create.public_field("percentage") == "percentage_rate"
    assert create.public_field("coupon.plan_codes[1]") == "applies_to.plan_codes[1]"
    assert create.public_field("coupon.plan_codes[1]", {"plan_codes": "applies_to.plan_codes"}) == (
        "applies_to.plan_codes[1]"
    )


def test_the_abaxus_spelling_names_a_metric_by_its_key():
    assert Decoder(ABAXUS).names(billable_metrics_pb2.BillableMetric.DESCRIPTOR)["key"][0] == "code"


def test_an_optional_scalar_among_nulls_is_null_only_when_unset():
    show = Encoder(BXB).message
    for given, shown in ((False, False), (True, True), (None, None)):
        billing = customers_pb2.BillingConfiguration(provider="stripe", auto_collect=given)
        assert show(billing) == {"provider": "stripe", "provider_customer_id": None, "auto_collect": shown}
        read = customers_pb2.BillingConfiguration()
        Decoder(BXB).into(read, {"auto_collect": given})
        assert (read.HasField("auto_collect"), read.auto_collect) == (given is not None, bool(given))
    schema = Writer(BXB).output(customers_pb2.BillingConfiguration.DESCRIPTOR)["properties"]["auto_collect"]
    assert schema == {"type": ["boolean", "null"]}
