"""/v1/metrics (ABAXUS: `key`, `value_type`) and /v1/billable_metrics (bxb:
`code`) over one set of metrics: create, read, list, PATCH, DELETE, through
the gateway app and the real catalog."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant, unique


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


async def create(t: Tenant, path: str = "/v1/metrics", **body) -> dict:
    response = await t.http.post(path, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def plan_charging(t: Tenant, metric: str) -> dict:
    charge = {"billable_metric_code": metric, "charge_model": "standard", "properties": {"amount": "0.01"}}
    response = await t.http.post("/v1/plans", json={"code": unique("plan"), "interval": "monthly", "charges": [charge]})
    assert response.status_code == 201, response.text
    return response.json()


async def test_the_seed_example_creates_a_value_fed_metric(tenant: Tenant):
    response = await tenant.http.post(
        "/v1/metrics", json={"key": "api_calls", "aggregation_type": "sum", "value_type": "integer"}
    )
    assert response.status_code == 201, response.text
    metric = response.json()
    assert metric["id"].startswith("bm")
    assert {k: metric[k] for k in ("key", "code", "name", "aggregation_type", "value_type", "field_name")} == {
        "key": "api_calls",
        "code": "api_calls",
        "name": "api_calls",
        "aggregation_type": "sum",
        "value_type": "integer",
        "field_name": None,
    }


async def test_both_spellings_read_and_list_the_same_metrics(tenant: Tenant):
    by_key = await create(tenant, key=unique("storage"), aggregation_type="weighted_sum", value_type="decimal")
    by_code = await create(
        tenant, "/v1/billable_metrics", code=unique("seats"), aggregation_type="weighted_sum", field_name="seats"
    )
    assert (by_key["aggregation_type"], by_key["value_type"]) == ("weighted_sum", "decimal")
    assert (by_code["key"], by_code["value_type"], by_code["field_name"]) == (by_code["code"], None, "seats")
    for metric in (by_key, by_code):
        assert (await tenant.http.get(f"/v1/metrics/{metric['key']}")).json() == metric
        assert (await tenant.http.get(f"/v1/billable_metrics/{metric['code']}")).json() == metric
    assert (await tenant.http.get("/v1/metrics")).json() == {"metrics": [by_key, by_code], "next_page_token": ""}
    bxb = (await tenant.http.get("/v1/billable_metrics", params={"page_size": 1})).json()
    assert bxb["billable_metrics"] == [by_key]
    assert bxb["next_page_token"]


async def test_a_field_name_next_to_a_value_type_is_a_400(tenant: Tenant):
    key = unique("calls")
    response = await tenant.http.post(
        "/v1/metrics", json={"key": key, "aggregation_type": "sum", "value_type": "integer", "field_name": "n"}
    )
    assert error_of(response, 400)["field"] == "field_name"
    assert (await tenant.http.get(f"/v1/metrics/{key}")).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"aggregation_type": "sum", "value_type": "float"}, "value_type"),
        ({"aggregation_type": "sum", "value_type": "integer"}, "key"),
    ],
)
async def test_create_bodies_are_checked(tenant: Tenant, body, field):
    response = await tenant.http.post("/v1/metrics", json={**({"key": "k"} if field != "key" else {}), **body})
    assert error_of(response, 400)["field"] == field


async def test_patch_changes_only_the_fields_present(tenant: Tenant):
    before = await create(tenant, key=unique("tokens"), name="Tokens", aggregation_type="sum", field_name="tokens")
    response = await tenant.http.patch(f"/v1/metrics/{before['key']}", json={"description": "LLM tokens"})
    assert response.status_code == 200, response.text
    assert response.json() == {**before, "description": "LLM tokens"}
    assert (await tenant.http.get(f"/v1/billable_metrics/{before['code']}")).json() == response.json()


async def test_patch_with_null_clears_a_field(tenant: Tenant):
    before = await create(tenant, key=unique("tokens"), aggregation_type="sum", field_name="tokens")
    response = await tenant.http.patch(
        f"/v1/billable_metrics/{before['code']}",
        json={"aggregation_type": "weighted_sum", "field_name": None, "value_type": "decimal"},
    )
    assert response.status_code == 200, response.text
    after = response.json()
    assert (after["aggregation_type"], after["field_name"], after["value_type"]) == ("weighted_sum", None, "decimal")


@pytest.mark.parametrize(
    ("content", "status", "reason", "field"),
    [
        (b"", 400, "MISSING_BODY", None),
        (b"{}", 400, "MISSING_FIELD", None),
        (b'{"key": "other"}', 400, "UNKNOWN_FIELD", "key"),
        (b'{"aggregation_type": "median"}', 400, "INVALID_VALUE", "aggregation_type"),
        (b'{"name": ', 400, "MALFORMED_JSON", None),
        (b'{"value_type": "integer"}', 400, "INVALID_ARGUMENT", "field_name"),
    ],
)
async def test_bad_patches_change_nothing(tenant: Tenant, content, status, reason, field):
    before = await create(tenant, key=unique("tokens"), aggregation_type="sum", field_name="tokens")
    response = await tenant.http.patch(f"/v1/metrics/{before['key']}", content=content)
    error = error_of(response, status)
    assert (error["reason"], error.get("field")) == (reason, field)
    assert (await tenant.http.get(f"/v1/metrics/{before['key']}")).json() == before


async def test_patching_an_unknown_metric_is_a_404(tenant: Tenant):
    assert error_of(await tenant.http.patch("/v1/metrics/nope", json={"name": "x"}), 404)["field"] == "code"


async def test_a_metric_used_by_a_plan_refuses_usage_changes_and_deletion(tenant: Tenant):
    before = await create(tenant, key=unique("tokens"), aggregation_type="sum", value_type="integer")
    await plan_charging(tenant, before["key"])
    for body, field in (
        ({"aggregation_type": "max"}, "aggregation_type"),
        ({"value_type": "decimal"}, "value_type"),
        ({"value_type": None, "field_name": "tokens"}, "field_name"),
    ):
        error = error_of(await tenant.http.patch(f"/v1/metrics/{before['key']}", json=body), 409)
        assert (error["code"], error["reason"], error["field"]) == ("FAILED_PRECONDITION", "METRIC_IN_USE", field)
    error = error_of(await tenant.http.delete(f"/v1/billable_metrics/{before['code']}"), 409)
    assert (error["reason"], error["field"]) == ("METRIC_IN_USE", "code")
    assert (await tenant.http.get(f"/v1/metrics/{before['key']}")).json() == before

    renamed = await tenant.http.patch(f"/v1/metrics/{before['key']}", json={"name": "API calls"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json() == {**before, "name": "API calls"}


async def test_delete_then_recreate_with_the_same_key(tenant: Tenant):
    key = unique("tokens")
    first = await create(tenant, key=key, aggregation_type="sum", field_name="tokens")
    deleted = await tenant.http.delete(f"/v1/metrics/{key}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert error_of(await tenant.http.get(f"/v1/billable_metrics/{key}"), 404)["field"] == "code"
    assert (await tenant.http.get("/v1/metrics")).json()["metrics"] == []
    again = await create(tenant, "/v1/billable_metrics", code=key, aggregation_type="count")
    assert again["id"] != first["id"]
    assert (again["key"], again["aggregation_type"], again["field_name"]) == (key, "count", None)


async def test_deleting_an_unknown_metric_is_a_404(tenant: Tenant):
    assert error_of(await tenant.http.delete("/v1/billable_metrics/nope"), 404)["reason"] == "NOT_FOUND"
