"""The volume, package, percentage, graduated percentage and flat charge
models through POST /v1/plans and back: each charge shows only its model's
properties, canonical; bad input is a 400 naming the field and stores nothing."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant, unique


async def metric(t: Tenant, aggregation: str = "sum") -> str:
    code = unique("metric")
    body = {"code": code, "aggregation_type": aggregation}
    if aggregation != "count":
        body["field_name"] = "amount"
    response = await t.http.post("/v1/billable_metrics", json=body)
    assert response.status_code == 201, response.text
    return code


async def create(t: Tenant, *charges: dict) -> dict:
    """Creates a plan with these charges and checks a read gives the same plan back."""
    code = unique("plan")
    response = await t.http.post("/v1/plans", json={"code": code, "interval": "monthly", "charges": list(charges)})
    assert response.status_code == 201, response.text
    plan = response.json()
    assert (await t.http.get(f"/v1/plans/{code}")).json() == plan
    return plan


async def only_charge(t: Tenant, model: str, properties: dict, aggregation: str = "sum") -> dict:
    charge = {"billable_metric_code": await metric(t, aggregation), "charge_model": model, "properties": properties}
    [stored] = (await create(t, charge))["charges"]
    assert (stored["charge_model"], stored["billable_metric_code"]) == (model, charge["billable_metric_code"])
    return stored["properties"]


async def refused(t: Tenant, charges: list[dict], field: str, reason: str = "INVALID_ARGUMENT") -> dict:
    code = unique("plan")
    response = await t.http.post("/v1/plans", json={"code": code, "interval": "monthly", "charges": charges})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["field"], error["reason"]) == (field, reason)
    assert (await t.http.get(f"/v1/plans/{code}")).status_code == 404
    assert (await t.http.get("/v1/plans")).json()["plans"] == []
    return error


# --- accepted and read back -------------------------------------------------


async def test_a_volume_charge_round_trips_with_integer_bounds(tenant: Tenant):
    properties = await only_charge(
        tenant,
        "volume",
        {
            "volume_ranges": [
                {"from": 0, "to": 100, "per_unit": "1.00", "flat_amount": "10"},
                {"from": "101", "to": "1000", "per_unit": 0.5},
                {"from": 1001, "to": None, "per_unit": "0.25"},
            ]
        },
    )
    assert properties == {
        "volume_ranges": [
            {"from": 0, "to": 100, "per_unit": "1", "flat_amount": "10"},
            {"from": 101, "to": 1000, "per_unit": "0.5", "flat_amount": "0"},
            {"from": 1001, "to": None, "per_unit": "0.25", "flat_amount": "0"},
        ]
    }


async def test_a_package_charge_round_trips(tenant: Tenant):
    properties = await only_charge(tenant, "package", {"amount": "5.00", "package_size": 100, "free_units": 20})
    assert properties == {"amount": "5", "package_size": 100, "free_units": 20}


async def test_a_package_charge_shows_zero_free_units_when_none_are_given(tenant: Tenant):
    properties = await only_charge(tenant, "package", {"amount": 2, "package_size": 1}, aggregation="count")
    assert properties == {"amount": "2", "package_size": 1, "free_units": 0}


async def test_a_percentage_charge_round_trips_every_option(tenant: Tenant):
    given = {
        "rate": "1.50",
        "fixed_amount": 0.1,
        "free_units_per_events": 3,
        "free_units_per_total_aggregation": "500.00",
        "per_transaction_min_amount": "0.5",
        "per_transaction_max_amount": "25",
    }
    assert await only_charge(tenant, "percentage", given) == {
        "rate": "1.5",
        "fixed_amount": "0.1",
        "free_units_per_events": 3,
        "free_units_per_total_aggregation": "500",
        "per_transaction_min_amount": "0.5",
        "per_transaction_max_amount": "25",
    }


async def test_a_percentage_charge_shows_unset_options_as_null(tenant: Tenant):
    assert await only_charge(tenant, "percentage", {"rate": "2", "per_transaction_max_amount": None}) == {
        "rate": "2",
        "fixed_amount": None,
        "free_units_per_events": None,
        "free_units_per_total_aggregation": None,
        "per_transaction_min_amount": None,
        "per_transaction_max_amount": None,
    }


async def test_a_graduated_percentage_charge_round_trips(tenant: Tenant):
    properties = await only_charge(
        tenant,
        "graduated_percentage",
        {
            "graduated_percentage_ranges": [
                {"from": 0, "to": 1000, "rate": "2.0", "flat_amount": "0.20"},
                {"from": 1001, "to": None, "rate": 1},
            ]
        },
    )
    assert properties == {
        "graduated_percentage_ranges": [
            {"from": 0, "to": 1000, "rate": "2", "flat_amount": "0.2"},
            {"from": 1001, "to": None, "rate": "1", "flat_amount": "0"},
        ]
    }


async def test_a_flat_charge_round_trips(tenant: Tenant):
    assert await only_charge(tenant, "flat", {"amount": "49.90"}, aggregation="count") == {"amount": "49.9"}


async def test_one_plan_holds_charges_of_every_model_each_showing_its_own_properties(tenant: Tenant):
    code = await metric(tenant)
    given = {
        "standard": {"amount": "0.001"},
        "graduated": {"graduated_ranges": [{"from": 0, "to": None, "per_unit": "1"}]},
        "volume": {"volume_ranges": [{"from": 0, "to": None, "per_unit": "1"}]},
        "package": {"amount": "1", "package_size": 10},
        "percentage": {"rate": "1"},
        "graduated_percentage": {"graduated_percentage_ranges": [{"from": 0, "to": None, "rate": "1"}]},
        "flat": {"amount": "1"},
    }
    charges = [{"billable_metric_code": code, "charge_model": m, "properties": p} for m, p in given.items()]
    plan = await create(tenant, *charges)
    assert [c["charge_model"] for c in plan["charges"]] == list(given)
    shown = {c["charge_model"]: sorted(c["properties"]) for c in plan["charges"]}
    assert shown == {
        "standard": ["amount"],
        "graduated": ["graduated_ranges"],
        "volume": ["volume_ranges"],
        "package": ["amount", "free_units", "package_size"],
        "percentage": [
            "fixed_amount",
            "free_units_per_events",
            "free_units_per_total_aggregation",
            "per_transaction_max_amount",
            "per_transaction_min_amount",
            "rate",
        ],
        "graduated_percentage": ["graduated_percentage_ranges"],
        "flat": ["amount"],
    }
    listed = (await tenant.http.get("/v1/plans")).json()["plans"]
    assert listed == [plan]


# --- refused ----------------------------------------------------------------

P = "charges[0].properties"


@pytest.mark.parametrize(
    ("model", "properties", "field"),
    [
        ("volume", {}, f"{P}.volume_ranges"),
        ("volume", {"volume_ranges": [{"from": 0, "to": 10}, {"from": 12, "to": None}]}, f"{P}.volume_ranges[1].from"),
        ("volume", {"volume_ranges": [{"from": 0, "to": None, "per_unit": "-1"}]}, f"{P}.volume_ranges[0].per_unit"),
        ("volume", {"volume_ranges": [{"from": 0, "to": None}], "amount": "1"}, f"{P}.amount"),
        ("package", {"amount": "1"}, f"{P}.package_size"),
        ("package", {"amount": "1", "package_size": 0}, f"{P}.package_size"),
        ("package", {"amount": "1", "package_size": -5}, f"{P}.package_size"),
        ("package", {"package_size": 10}, f"{P}.amount"),
        ("package", {"amount": "1", "package_size": 10, "free_units": -1}, f"{P}.free_units"),
        ("package", {"amount": "1", "package_size": 10, "rate": "1"}, f"{P}.rate"),
        ("percentage", {}, f"{P}.rate"),
        ("percentage", {"rate": "-1"}, f"{P}.rate"),
        ("percentage", {"rate": "1", "fixed_amount": "-0.5"}, f"{P}.fixed_amount"),
        ("percentage", {"rate": "1", "free_units_per_events": -1}, f"{P}.free_units_per_events"),
        (
            "percentage",
            {"rate": "1", "per_transaction_min_amount": "10", "per_transaction_max_amount": "1"},
            f"{P}.per_transaction_min_amount",
        ),
        ("percentage", {"rate": "1", "amount": "1"}, f"{P}.amount"),
        ("graduated_percentage", {}, f"{P}.graduated_percentage_ranges"),
        (
            "graduated_percentage",
            {"graduated_percentage_ranges": [{"from": 0, "to": 10, "rate": "1"}, {"from": 11, "to": 20, "rate": "1"}]},
            f"{P}.graduated_percentage_ranges[1].to",
        ),
        (
            "graduated_percentage",
            {"graduated_percentage_ranges": [{"from": 0, "to": None, "rate": "1"}], "rate": "1"},
            f"{P}.rate",
        ),
        ("flat", {}, f"{P}.amount"),
        ("flat", {"amount": "1", "volume_ranges": [{"from": 0, "to": None}]}, f"{P}.volume_ranges"),
    ],
)
async def test_bad_properties_are_a_400_naming_the_field(tenant: Tenant, model, properties, field):
    charge = {"billable_metric_code": await metric(tenant), "charge_model": model, "properties": properties}
    await refused(tenant, [charge], field)


@pytest.mark.parametrize(
    ("model", "properties", "foreign"),
    [
        ("standard", {"amount": "1", "free_units": 0}, "free_units"),
        ("flat", {"amount": "1", "package_size": 0}, "package_size"),
        ("package", {"amount": "1", "package_size": 1, "free_units_per_events": 0}, "free_units_per_events"),
        ("percentage", {"rate": "1", "free_units": 0}, "free_units"),
    ],
)
async def test_an_integer_property_of_another_model_is_refused_even_as_zero(tenant: Tenant, model, properties, foreign):
    charge = {"billable_metric_code": await metric(tenant), "charge_model": model, "properties": properties}
    error = await refused(tenant, [charge], f"{P}.{foreign}")
    assert error["message"] == f"{P}.{foreign} does not apply to the {model} model"


async def test_the_failing_charge_is_named_by_its_index(tenant: Tenant):
    code = await metric(tenant)
    good = {"billable_metric_code": code, "charge_model": "flat", "properties": {"amount": "1"}}
    bad = {"billable_metric_code": code, "charge_model": "package", "properties": {"amount": "1", "rate": "1"}}
    await refused(tenant, [good, bad], "charges[1].properties.rate")
    zero = {"billable_metric_code": code, "charge_model": "flat", "properties": {"amount": "1", "free_units": 0}}
    await refused(tenant, [good, good, zero], "charges[2].properties.free_units")


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        ({"package_size": "10"}, f"{P}.package_size"),
        ({"package_size": 1.5}, f"{P}.package_size"),
        ({"free_units_per_events": True}, f"{P}.free_units_per_events"),
        ({"rate": [1]}, f"{P}.rate"),
        (
            {"graduated_percentage_ranges": [{"from": 0, "per_unit": "1"}]},
            f"{P}.graduated_percentage_ranges[0].per_unit",
        ),
        ({"volume_ranges": [{"from": 0, "rate": "1"}]}, f"{P}.volume_ranges[0].rate"),
    ],
)
async def test_malformed_properties_are_refused_before_the_catalog(tenant: Tenant, properties, field):
    charge = {"billable_metric_code": await metric(tenant), "charge_model": "package", "properties": properties}
    error = await refused(tenant, [charge], field, reason="UNKNOWN_FIELD" if "ranges" in field else "INVALID_TYPE")
    assert field in error["message"]


@pytest.mark.parametrize(
    ("model", "properties"),
    [
        ("percentage", {"rate": "1"}),
        ("graduated_percentage", {"graduated_percentage_ranges": [{"from": 0, "to": None, "rate": "1"}]}),
    ],
)
@pytest.mark.parametrize("aggregation", ["count", "max", "unique_count", "latest"])
async def test_a_percentage_charge_on_a_metric_that_is_not_a_sum_is_refused(
    tenant: Tenant, model, properties, aggregation
):
    charge = {
        "billable_metric_code": await metric(tenant, aggregation),
        "charge_model": model,
        "properties": properties,
    }
    error = await refused(tenant, [charge], "charges[0].charge_model", reason="INCOMPATIBLE_METRIC")
    assert error["message"] == f"charges[0].charge_model {model} needs a billable metric with aggregation_type sum"
