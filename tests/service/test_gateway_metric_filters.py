"""A billable metric's filters (the event properties charges may price
differently, with their values) through /v1/billable_metrics and /v1/metrics:
created, read, listed, changed by PATCH; a metric a plan uses may gain keys
and values but not lose any; plan metric snapshots carry them."""

from __future__ import annotations

import pytest

from bxb.catalog.v1 import plans_pb2 as plans_pb
from bxb.catalog.v1 import plans_pb2_grpc
from services.common.tenancy import metadata
from tests.conftest import Stack, Tenant, unique

REGIONS = {"key": "region", "values": ["us-east-1", "eu-west-1"]}
TIERS = {"key": "tier", "values": ["free", "pro"]}


async def create(t: Tenant, filters: list | None, base: str = "/v1/billable_metrics", id_name: str = "code") -> dict:
    body = {id_name: unique("calls"), "aggregation_type": "count"}
    if filters is not None:
        body["filters"] = filters
    response = await t.http.post(base, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def refused(t: Tenant, filters, field: str, reason: str = "INVALID_ARGUMENT") -> dict:
    code = unique("calls")
    response = await t.http.post(
        "/v1/billable_metrics", json={"code": code, "aggregation_type": "count", "filters": filters}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["field"], error["reason"]) == (field, reason)
    assert (await t.http.get(f"/v1/billable_metrics/{code}")).status_code == 404
    return error


async def patch(t: Tenant, code: str, body: dict, status: int = 200) -> dict:
    response = await t.http.patch(f"/v1/billable_metrics/{code}", json=body)
    assert response.status_code == status, response.text
    return response.json()


async def use_in_plan(t: Tenant, code: str) -> str:
    plan = unique("plan")
    charge = {"billable_metric_code": code, "charge_model": "standard", "properties": {"amount": "1"}}
    response = await t.http.post("/v1/plans", json={"code": plan, "interval": "monthly", "charges": [charge]})
    assert response.status_code == 201, response.text
    return plan


# --- created and read -------------------------------------------------------


async def test_filters_round_trip_through_create_get_and_list(tenant: Tenant):
    metric = await create(tenant, [REGIONS, TIERS])
    assert metric["filters"] == [REGIONS, TIERS]
    assert (await tenant.http.get(f"/v1/billable_metrics/{metric['code']}")).json() == metric
    assert (await tenant.http.get("/v1/billable_metrics")).json()["billable_metrics"] == [metric]


async def test_the_abaxus_spelling_takes_and_shows_the_same_filters(tenant: Tenant):
    metric = await create(tenant, [TIERS], base="/v1/metrics", id_name="key")
    assert metric["filters"] == [TIERS]
    assert (await tenant.http.get(f"/v1/metrics/{metric['key']}")).json() == metric
    assert (await tenant.http.get(f"/v1/billable_metrics/{metric['key']}")).json() == metric


@pytest.mark.parametrize("filters", [None, []])
async def test_a_metric_without_filters_shows_an_empty_list(tenant: Tenant, filters):
    assert (await create(tenant, filters))["filters"] == []


async def test_values_keep_their_order(tenant: Tenant):
    given = {"key": "region", "values": ["z", "a", "m"]}
    assert (await create(tenant, [given]))["filters"] == [given]


# --- refused, storing nothing -----------------------------------------------


@pytest.mark.parametrize(
    ("filters", "field", "reason"),
    [
        ([{"key": "", "values": ["a"]}], "filters[0].key", "INVALID_ARGUMENT"),
        ([{"key": "k" * 101, "values": ["a"]}], "filters[0].key", "INVALID_ARGUMENT"),
        ([REGIONS, {"key": "region", "values": ["x"]}], "filters[1].key", "INVALID_ARGUMENT"),
        ([{"key": "region", "values": []}], "filters[0].values", "INVALID_ARGUMENT"),
        ([{"key": "region", "values": ["a", ""]}], "filters[0].values[1]", "INVALID_ARGUMENT"),
        ([{"key": "region", "values": ["a", "a"]}], "filters[0].values[1]", "INVALID_ARGUMENT"),
        ([{"key": "region", "values": ["v" * 201]}], "filters[0].values[0]", "INVALID_ARGUMENT"),
        ([{"key": "region", "values": [str(n) for n in range(501)]}], "filters[0].values", "INVALID_ARGUMENT"),
        ([{"key": f"k{n}", "values": ["a"]} for n in range(51)], "filters", "INVALID_ARGUMENT"),
        ([{"key": "region"}], "filters[0].values", "MISSING_FIELD"),
        ([{"values": ["a"]}], "filters[0].key", "MISSING_FIELD"),
        ([{"key": "region", "values": [None]}], "filters[0].values[0]", "MISSING_FIELD"),
        ([{"key": "region", "values": [1]}], "filters[0].values[0]", "INVALID_TYPE"),
        ([{"key": "region", "values": "us-east-1"}], "filters[0].values", "INVALID_TYPE"),
        ({"region": ["us-east-1"]}, "filters", "INVALID_TYPE"),
        ([{"key": "region", "values": ["a"], "default": "a"}], "filters[0].default", "UNKNOWN_FIELD"),
    ],
)
async def test_bad_filters_are_refused_naming_the_field(tenant: Tenant, filters, field, reason):
    await refused(tenant, filters, field, reason)


# --- PATCH ------------------------------------------------------------------


async def test_patch_replaces_the_filters_of_an_unused_metric_and_keeps_the_rest(tenant: Tenant):
    metric = await create(tenant, [REGIONS])
    updated = await patch(tenant, metric["code"], {"filters": [TIERS]})
    assert updated == {**metric, "filters": [TIERS]}
    assert (await tenant.http.get(f"/v1/billable_metrics/{metric['code']}")).json() == updated


async def test_patch_with_null_clears_the_filters_of_an_unused_metric(tenant: Tenant):
    metric = await create(tenant, [REGIONS])
    assert (await patch(tenant, metric["code"], {"filters": None}))["filters"] == []


async def test_patching_another_field_keeps_the_filters(tenant: Tenant):
    metric = await create(tenant, [REGIONS])
    code = metric["code"]
    await use_in_plan(tenant, code)
    assert await patch(tenant, code, {"name": "Calls"}) == {**metric, "name": "Calls"}


async def test_patch_with_bad_filters_is_refused_and_changes_nothing(tenant: Tenant):
    metric = await create(tenant, [REGIONS])
    error = await patch(tenant, metric["code"], {"name": "New", "filters": [REGIONS, REGIONS]}, status=400)
    assert error["error"]["field"] == "filters[1].key"
    assert (await tenant.http.get(f"/v1/billable_metrics/{metric['code']}")).json() == metric


async def test_a_metric_in_use_may_gain_keys_and_values(tenant: Tenant):
    metric = await create(tenant, [REGIONS])
    code = metric["code"]
    await use_in_plan(tenant, code)
    grown = [{"key": "region", "values": ["eu-west-1", "ap-south-1", "us-east-1"]}, TIERS]
    assert (await patch(tenant, code, {"filters": grown}))["filters"] == grown


@pytest.mark.parametrize(
    ("filters", "lost"),
    [
        ([{"key": "region", "values": ["us-east-1"]}, TIERS], "region=eu-west-1"),
        ([TIERS], "region"),
        (None, "region"),
    ],
)
async def test_a_metric_in_use_may_not_lose_a_key_or_value(tenant: Tenant, filters, lost):
    metric = await create(tenant, [REGIONS])
    code = metric["code"]
    plan = await use_in_plan(tenant, code)
    error = (await patch(tenant, code, {"name": "Renamed", "filters": filters}, status=409))["error"]
    assert (error["reason"], error["field"]) == ("METRIC_IN_USE", "filters")
    assert plan in error["message"] and f"({lost})" in error["message"]
    assert (await tenant.http.get(f"/v1/billable_metrics/{code}")).json() == metric


async def test_a_usage_change_is_reported_before_a_lost_filter(tenant: Tenant):
    metric = await create(tenant, [REGIONS])
    code = metric["code"]
    await use_in_plan(tenant, code)
    body = {"aggregation_type": "sum", "field_name": "n", "filters": []}
    error = (await patch(tenant, code, body, status=409))["error"]
    assert (error["reason"], error["field"]) == ("METRIC_IN_USE", "aggregation_type")


async def test_the_abaxus_spelling_applies_the_same_in_use_rule(tenant: Tenant):
    metric = await create(tenant, [REGIONS], base="/v1/metrics", id_name="key")
    await use_in_plan(tenant, metric["key"])
    response = await tenant.http.patch(f"/v1/metrics/{metric['key']}", json={"filters": [TIERS]})
    assert response.status_code == 409
    assert response.json()["error"]["reason"] == "METRIC_IN_USE"


# --- plan snapshots ---------------------------------------------------------


async def test_a_plans_metric_snapshot_carries_the_filters_of_its_time(stack: Stack, tenant: Tenant):
    metric = await create(tenant, [REGIONS])
    code = metric["code"]
    first = await use_in_plan(tenant, code)
    await patch(tenant, code, {"filters": [REGIONS, TIERS]})
    async with stack.channel("catalog") as channel:
        stub = plans_pb2_grpc.PlanServiceStub(channel)
        md = metadata(tenant.organization_id)
        old = await stub.GetPlan(plans_pb.GetPlanRequest(code=first), metadata=md)
        second = await use_in_plan(tenant, code)
        new = await stub.GetPlan(plans_pb.GetPlanRequest(code=second), metadata=md)
    [old_charge], [new_charge] = old.charges, new.charges
    shown = [[(f.key, list(f.values)) for f in charge.billable_metric.filters] for charge in (old_charge, new_charge)]
    assert shown == [
        [("region", REGIONS["values"])],
        [("region", REGIONS["values"]), ("tier", TIERS["values"])],
    ]
