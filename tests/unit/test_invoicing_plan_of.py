"""billing.plan_of: a published plan version is parsed once per process, and
every caller gets its own copy."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from bxb.catalog.v1 import plans_pb2
from services.invoicing import billing
from services.invoicing.models import Subscription


def pinned(plan: plans_pb2.Plan) -> Subscription:
    return Subscription(id="sub_1", plan=json_format.MessageToDict(plan, preserving_proto_field_name=True))


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(billing, "_PLANS", {})


def test_a_published_version_is_parsed_once_and_each_caller_gets_a_copy():
    subscription = pinned(plans_pb2.Plan(id="plan_1", version=2, code="pro", amount_cents=4900))
    first = billing.plan_of(subscription)
    first.amount_cents = 1  # a caller changing its copy
    subscription.plan = {"id": "plan_1", "version": 2, "code": "changed"}  # ignored: the version is known
    again = billing.plan_of(subscription)
    assert (again.code, again.amount_cents) == ("pro", 4900)
    assert list(billing._PLANS) == [("plan_1", 2)]


def test_another_version_of_the_same_plan_is_parsed_apart():
    assert billing.plan_of(pinned(plans_pb2.Plan(id="plan_1", version=1, amount_cents=100))).amount_cents == 100
    assert billing.plan_of(pinned(plans_pb2.Plan(id="plan_1", version=2, amount_cents=200))).amount_cents == 200


def test_a_plan_without_an_id_is_parsed_every_time():
    assert billing.plan_of(pinned(plans_pb2.Plan(code="a"))).code == "a"
    assert billing.plan_of(pinned(plans_pb2.Plan(code="b"))).code == "b"
    assert billing._PLANS == {}


def test_the_oldest_parsed_version_makes_room(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(billing, "PLANS_KEPT", 2)
    for version in (1, 2, 3):
        billing.plan_of(pinned(plans_pb2.Plan(id="plan_1", version=version)))
    assert list(billing._PLANS) == [("plan_1", 2), ("plan_1", 3)]
