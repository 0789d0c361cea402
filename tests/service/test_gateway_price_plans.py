"""/v1/price-plans: ABAXUS price plans on the same versioned plans as
/v1/plans. Bodies use ABAXUS names (id, metric_key, model, tiers with up_to),
come back in that shape, and errors name the ABAXUS field path."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant, unique


async def metric(t: Tenant, aggregation: str = "sum") -> str:
    code = unique("api_calls")
    body = {"code": code, "aggregation_type": aggregation}
    if aggregation != "count":
        body["field_name"] = "amount"
    response = await t.http.post("/v1/billable_metrics", json=body)
    assert response.status_code == 201, response.text
    return code


def seed_body(plan_id: str, metric_key: str) -> dict:
    return {
        "id": plan_id,
        "currency": "USD",
        "charges": [
            {
                "metric_key": metric_key,
                "model": "tiered",
                "properties": {
                    "tiers": [{"up_to": 10000, "unit_amount": "0.001"}, {"up_to": None, "unit_amount": "0.0005"}]
                },
            }
        ],
    }


async def created(t: Tenant, body: dict) -> dict:
    response = await t.http.post("/v1/price-plans", json=body)
    assert response.status_code == 201, response.text
    plan = response.json()
    assert (await t.http.get(f"/v1/price-plans/{body['id']}")).json() == plan
    return plan


async def only_charge(t: Tenant, model: str, properties: dict | None, aggregation: str = "sum") -> dict:
    charge = {"metric_key": await metric(t, aggregation), "model": model}
    if properties is not None:
        charge["properties"] = properties
    [stored] = (await created(t, {"id": unique("plan"), "charges": [charge]}))["charges"]
    assert stored["metric_key"] == charge["metric_key"]
    return stored


async def refused(t: Tenant, charges: list[dict], field: str, reason: str = "INVALID_ARGUMENT", **plan) -> dict:
    plan_id = unique("plan")
    response = await t.http.post("/v1/price-plans", json={"id": plan_id, "charges": charges, **plan})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["field"], error["reason"]) == (field, reason)
    assert (await t.http.get(f"/v1/price-plans/{plan_id}")).status_code == 404
    return error


async def test_the_seed_plan_is_created_with_monthly_interval_and_graduated_tiers(tenant: Tenant):
    key = await metric(tenant)
    plan_id = unique("plan_growth")
    plan = await created(tenant, seed_body(plan_id, key))
    assert plan["created_at"]
    assert plan["version_id"].startswith("plan_")
    [charge] = plan["charges"]
    assert charge["id"]
    assert {k: v for k, v in plan.items() if k not in ("created_at", "version_id", "charges")} == {
        "id": plan_id,
        "version": 1,
        "name": plan_id,
        "description": "",
        "currency": "USD",
        "interval": "monthly",
        "amount_cents": 0,
        "pay_in_advance": False,
        "trial_period_days": 0,
        "minimum_commitment": None,
        "tax_codes": [],
        "usage_thresholds": [],
    }
    assert (charge["metric_key"], charge["model"]) == (key, "tiered")
    assert charge["properties"] == {
        "tiers": [
            {"up_to": 10000, "unit_amount": "0.001", "flat_amount": "0"},
            {"up_to": None, "unit_amount": "0.0005", "flat_amount": "0"},
        ]
    }
    # the same plan in bxb shape: graduated ranges, each starting one above the previous bound
    bxb = (await tenant.http.get(f"/v1/plans/{plan_id}")).json()
    assert bxb["id"] == plan["version_id"]
    assert bxb["charges"][0]["charge_model"] == "graduated"
    assert [(r["from"], r["to"]) for r in bxb["charges"][0]["properties"]["graduated_ranges"]] == [
        (0, 10000),
        (10001, None),
    ]


async def test_posting_the_same_id_again_creates_version_two_and_versions_lists_both(tenant: Tenant):
    key = await metric(tenant)
    plan_id = unique("plan_growth")
    first = await created(tenant, seed_body(plan_id, key))
    second = await created(tenant, {**seed_body(plan_id, key), "amount_cents": 4900, "interval": "yearly"})
    assert (second["version"], second["amount_cents"], second["interval"]) == (2, 4900, "yearly")
    assert second["version_id"] != first["version_id"]
    versions = (await tenant.http.get(f"/v1/price-plans/{plan_id}/versions")).json()
    assert versions == {"plans": [first, second], "next_page_token": ""}
    old = await tenant.http.get(f"/v1/price-plans/{plan_id}", params={"version": 1})
    assert old.json() == first
    listed = (await tenant.http.get("/v1/price-plans")).json()
    assert listed == {"plans": [second], "next_page_token": ""}


async def test_a_subscription_to_the_seed_plan_by_plan_id_is_active(tenant: Tenant):
    key = await metric(tenant)
    plan_id = unique("plan_growth")
    plan = await created(tenant, seed_body(plan_id, key))
    customer_id = unique("cust_acme")
    assert (await tenant.http.post("/v1/customers", json={"id": customer_id})).status_code == 201
    body = {"customer_id": customer_id, "plan_id": plan_id, "start_date": "2026-01-01T00:00:00Z"}
    response = await tenant.http.post("/v1/subscriptions", json=body)
    assert response.status_code == 201, response.text
    subscription = response.json()
    assert subscription["id"].startswith("sub_")
    assert subscription["status"] == "active"
    assert (subscription["plan_code"], subscription["plan_id"]) == (plan_id, plan["version_id"])


@pytest.mark.parametrize("model", ["per-unit", "per_unit", "standard"])
async def test_a_per_unit_charge_is_standard(tenant: Tenant, model: str):
    charge = await only_charge(tenant, model, {"unit_amount": "0.0010"})
    assert (charge["model"], charge["properties"]) == ("per-unit", {"unit_amount": "0.001"})


async def test_a_volume_charge_keeps_its_tiers(tenant: Tenant):
    tiers = [{"up_to": 100, "unit_amount": "1", "flat_amount": "10"}, {"up_to": None, "unit_amount": "0.5"}]
    charge = await only_charge(tenant, "volume", {"tiers": tiers})
    assert charge["model"] == "volume"
    assert charge["properties"] == {"tiers": [tiers[0], {**tiers[1], "flat_amount": "0"}]}


@pytest.mark.parametrize("amount_name", ["unit_amount", "amount"])
async def test_a_package_charge_takes_either_amount_name(tenant: Tenant, amount_name: str):
    charge = await only_charge(tenant, "package", {amount_name: "5.00", "package_size": 100, "free_units": 20})
    assert (charge["model"], charge["properties"]) == (
        "package",
        {"unit_amount": "5", "package_size": 100, "free_units": 20},
    )


@pytest.mark.parametrize("model", ["flat fee", "flat_fee", "flat"])
@pytest.mark.parametrize("amount_name", ["amount", "unit_amount"])
async def test_a_flat_fee_charge_is_flat(tenant: Tenant, model: str, amount_name: str):
    charge = await only_charge(tenant, model, {amount_name: "49.90"}, aggregation="count")
    assert (charge["model"], charge["properties"]) == ("flat_fee", {"amount": "49.9"})


async def test_a_percentage_charge_keeps_its_options(tenant: Tenant):
    charge = await only_charge(
        tenant, "percentage", {"rate": "1.50", "fixed_amount": "0.1", "free_units_per_events": 3}
    )
    assert (charge["model"], charge["properties"]) == (
        "percentage",
        {
            "rate": "1.5",
            "fixed_amount": "0.1",
            "free_units_per_events": 3,
            "free_units_per_total_aggregation": None,
            "per_transaction_min_amount": None,
            "per_transaction_max_amount": None,
        },
    )


async def test_a_graduated_percentage_charge_takes_tiers_with_rates(tenant: Tenant):
    tiers = [{"up_to": 1000, "rate": "2", "flat_amount": "0.2"}, {"up_to": None, "rate": "1"}]
    charge = await only_charge(tenant, "graduated_percentage", {"tiers": tiers})
    assert (charge["model"], charge["properties"]) == (
        "graduated_percentage",
        {"tiers": [tiers[0], {**tiers[1], "flat_amount": "0"}]},
    )


async def test_a_bxb_model_name_is_accepted(tenant: Tenant):
    tiers = [{"up_to": 5, "unit_amount": "2"}, {"up_to": None, "unit_amount": "1"}]
    charge = await only_charge(tenant, "graduated", {"tiers": tiers})
    assert charge["model"] == "tiered"
    assert [t["up_to"] for t in charge["properties"]["tiers"]] == [5, None]


# --- refused, naming the ABAXUS field ----------------------------------------


async def test_tiers_out_of_order_name_the_tier_bound(tenant: Tenant):
    tiers = [{"up_to": 100, "unit_amount": "1"}, {"up_to": 50, "unit_amount": "1"}, {"up_to": None}]
    error = await refused(
        tenant,
        [{"metric_key": await metric(tenant), "model": "tiered", "properties": {"tiers": tiers}}],
        "charges[0].properties.tiers[1].up_to",
    )
    assert error["message"].startswith("charges[0].properties.tiers[1].up_to ")


async def test_an_open_tier_before_the_last_names_its_bound(tenant: Tenant):
    tiers = [{"up_to": None, "unit_amount": "1"}, {"up_to": None, "unit_amount": "1"}]
    await refused(
        tenant,
        [{"metric_key": await metric(tenant), "model": "volume", "properties": {"tiers": tiers}}],
        "charges[0].properties.tiers[0].up_to",
    )


async def test_a_tier_price_that_is_not_a_number_names_unit_amount(tenant: Tenant):
    tiers = [{"up_to": None, "unit_amount": "cheap"}]
    await refused(
        tenant,
        [{"metric_key": await metric(tenant), "model": "tiered", "properties": {"tiers": tiers}}],
        "charges[0].properties.tiers[0].unit_amount",
        "INVALID_VALUE",
    )


async def test_an_unknown_metric_names_metric_key(tenant: Tenant):
    error = await refused(
        tenant,
        [{"metric_key": unique("nope"), "model": "per-unit", "properties": {"unit_amount": "1"}}],
        "charges[0].metric_key",
        "UNKNOWN_METRIC",
    )
    assert error["message"].startswith("charges[0].metric_key: ")


@pytest.mark.parametrize(
    ("model", "field"),
    [("per-unit", "charges[1].properties.unit_amount"), ("flat fee", "charges[1].properties.amount")],
)
async def test_a_missing_amount_names_the_models_amount_field(tenant: Tenant, model: str, field: str):
    key = await metric(tenant, "count")
    charges = [
        {"metric_key": key, "model": "flat", "properties": {"amount": "1"}},
        {"metric_key": key, "model": model},
    ]
    await refused(tenant, charges, field)


async def test_a_negative_amount_names_the_field_given(tenant: Tenant):
    charge = {"metric_key": await metric(tenant), "model": "package", "properties": {"amount": "-1", "package_size": 1}}
    await refused(tenant, [charge], "charges[0].properties.amount")


async def test_tiers_on_a_model_without_tiers_are_refused(tenant: Tenant):
    charge = {
        "metric_key": await metric(tenant),
        "model": "per-unit",
        "properties": {"unit_amount": "1", "tiers": [{"up_to": None, "unit_amount": "1"}]},
    }
    await refused(tenant, [charge], "charges[0].properties.tiers")


async def test_a_property_of_another_model_is_refused(tenant: Tenant):
    charge = {"metric_key": await metric(tenant), "model": "per-unit", "properties": {"unit_amount": "1", "rate": "2"}}
    await refused(tenant, [charge], "charges[0].properties.rate")


async def test_an_unknown_model_names_model(tenant: Tenant):
    await refused(tenant, [{"metric_key": "m", "model": "stairstep"}], "charges[0].model", "INVALID_VALUE")


async def test_a_bad_id_names_id(tenant: Tenant):
    response = await tenant.http.post("/v1/price-plans", json={"id": "has space"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "id"


async def test_an_unknown_price_plan_is_404(tenant: Tenant):
    missing = unique("missing")
    assert (await tenant.http.get(f"/v1/price-plans/{missing}")).status_code == 404
    assert (await tenant.http.get(f"/v1/price-plans/{missing}/versions")).status_code == 404


@pytest.mark.parametrize(
    ("charge", "field", "reason"),
    [
        ({"model": "tiered", "properties": {"tiers": "x"}}, "charges[0].properties.tiers", "INVALID_TYPE"),
        ({"model": "tiered", "properties": {"tiers": [5]}}, "charges[0].properties.tiers[0]", "INVALID_TYPE"),
        (
            {"model": "tiered", "properties": {"tiers": [{"up_to": "10", "unit_amount": "1"}]}},
            "charges[0].properties.tiers[0].up_to",
            "INVALID_TYPE",
        ),
        ({"model": "per-unit", "properties": "x"}, "charges[0].properties", "INVALID_TYPE"),
        ({"model": "per-unit", "billable_metric_code": "m"}, "charges[0].billable_metric_code", "UNKNOWN_FIELD"),
        ({"properties": {"unit_amount": "1"}}, "charges[0].model", "MISSING_FIELD"),
    ],
)
async def test_a_malformed_abaxus_charge_is_refused_naming_its_abaxus_field(tenant: Tenant, charge, field, reason):
    code = await metric(tenant)
    await refused(tenant, [{"metric_key": code, **charge}], field, reason)


async def test_a_price_plan_is_named_by_id_not_code(tenant: Tenant):
    response = await tenant.http.post("/v1/price-plans", json={"id": unique("pp"), "code": "x"})
    assert (response.status_code, response.json()["error"]["field"]) == (400, "code")
