"""A charge's filters, grouping, minimum spend, payment in advance and display
name through /v1/plans and /v1/price-plans: accepted and shown back (filter
properties in each API's spelling of the model), refused naming the JSON
field, and nothing stored on any error."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant, unique

REGIONS = ["us-east-1", "eu-west-1", "ap-south-1"]


async def metric(t: Tenant, aggregation: str = "sum", filters: bool = True) -> str:
    code = unique("calls")
    body = {"code": code, "aggregation_type": aggregation}
    if aggregation != "count":
        body["field_name"] = "amount"
    if filters:
        body["filters"] = [{"key": "region", "values": REGIONS}, {"key": "tier", "values": ["free", "pro"]}]
    response = await t.http.post("/v1/billable_metrics", json=body)
    assert response.status_code == 201, response.text
    return code


async def plan(t: Tenant, charge: dict) -> dict:
    code = unique("plan")
    response = await t.http.post("/v1/plans", json={"code": code, "interval": "monthly", "charges": [charge]})
    assert response.status_code == 201, response.text
    created = response.json()
    assert (await t.http.get(f"/v1/plans/{code}")).json() == created
    return created["charges"][0]


async def price_plan(t: Tenant, charge: dict) -> dict:
    plan_id = unique("plan")
    response = await t.http.post("/v1/price-plans", json={"id": plan_id, "charges": [charge]})
    assert response.status_code == 201, response.text
    created = response.json()
    assert (await t.http.get(f"/v1/price-plans/{plan_id}")).json() == created
    return created["charges"][0]


async def refused(t: Tenant, charge: dict, field: str, reason: str = "INVALID_ARGUMENT", abaxus: bool = False) -> dict:
    code = unique("plan")
    if abaxus:
        response = await t.http.post("/v1/price-plans", json={"id": code, "charges": [charge]})
    else:
        response = await t.http.post("/v1/plans", json={"code": code, "interval": "monthly", "charges": [charge]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["field"], error["reason"]) == (field, reason)
    assert (await t.http.get(f"/v1/plans/{code}")).status_code == 404
    return error


def standard(code: str, *filters: dict, **terms) -> dict:
    return {
        "billable_metric_code": code,
        "charge_model": "standard",
        "properties": terms.pop("properties", {"amount": "1"}),
        "filters": list(filters),
        **terms,
    }


def region(*values: str, amount: str = "1", **more) -> dict:
    return {"values": {"region": list(values)}, "properties": {"amount": amount}, **more}


# --- /v1/plans: accepted ----------------------------------------------------


async def test_a_charge_with_filters_round_trips(tenant: Tenant):
    code = await metric(tenant)
    charge = await plan(
        tenant,
        standard(
            code,
            region("us-east-1", amount="0.50", invoice_display_name="US East"),
            {"values": {"region": ["eu-west-1", "ap-south-1"], "tier": ["pro"]}, "properties": {"amount": 0.4}},
            properties={"amount": "1.00"},
            invoice_display_name="API calls",
        ),
    )
    assert charge == {
        "id": charge["id"],
        "billable_metric_code": code,
        "charge_model": "standard",
        "invoice_display_name": "API calls",
        "pay_in_advance": False,
        "min_amount_cents": 0,
        "properties": {"amount": "1"},
        "filters": [
            {"values": {"region": ["us-east-1"]}, "properties": {"amount": "0.5"}, "invoice_display_name": "US East"},
            {
                "values": {"region": ["eu-west-1", "ap-south-1"], "tier": ["pro"]},
                "properties": {"amount": "0.4"},
                "invoice_display_name": None,
            },
        ],
    }


async def test_graduated_filter_properties_are_canonical_like_the_charges(tenant: Tenant):
    code = await metric(tenant)
    ranges = [{"from": 0, "to": 10, "per_unit": "1"}, {"from": 11, "to": None, "per_unit": "0.50"}]
    charge = await plan(
        tenant,
        {
            "billable_metric_code": code,
            "charge_model": "graduated",
            "properties": {"graduated_ranges": [ranges[0], {"from": 11, "to": None}]},
            "filters": [{"values": {"tier": ["pro"]}, "properties": {"graduated_ranges": ranges}}],
        },
    )
    assert charge["filters"][0]["properties"] == {
        "graduated_ranges": [
            {"from": 0, "to": 10, "per_unit": "1", "flat_amount": "0"},
            {"from": 11, "to": None, "per_unit": "0.5", "flat_amount": "0"},
        ]
    }
    assert charge["properties"]["graduated_ranges"][1]["per_unit"] == "0"


async def test_grouped_by_is_shown_with_the_models_properties(tenant: Tenant):
    code = await metric(tenant, "count")
    properties = {"amount": "2", "package_size": 10, "grouped_by": ["region", "az"]}
    charge = await plan(tenant, {"billable_metric_code": code, "charge_model": "package", "properties": properties})
    assert charge["properties"] == {"amount": "2", "package_size": 10, "free_units": 0, "grouped_by": ["region", "az"]}


async def test_an_empty_grouped_by_is_not_shown(tenant: Tenant):
    code = await metric(tenant)
    charge = await plan(tenant, standard(code, properties={"amount": "1", "grouped_by": []}))
    assert charge["properties"] == {"amount": "1"}


async def test_a_flat_charge_may_be_paid_in_advance_with_a_minimum(tenant: Tenant):
    code = await metric(tenant, "count")
    charge = await plan(
        tenant,
        {
            "billable_metric_code": code,
            "charge_model": "flat",
            "properties": {"amount": "49"},
            "pay_in_advance": True,
            "min_amount_cents": 5000,
        },
    )
    assert (charge["pay_in_advance"], charge["min_amount_cents"], charge["filters"]) == (True, 5000, [])


async def test_explicit_defaults_read_as_unset(tenant: Tenant):
    code = await metric(tenant)
    charge = await plan(
        tenant, standard(code, pay_in_advance=False, min_amount_cents=0, invoice_display_name="", filters=None)
    )
    assert {k: charge[k] for k in ("pay_in_advance", "min_amount_cents", "invoice_display_name", "filters")} == {
        "pay_in_advance": False,
        "min_amount_cents": 0,
        "invoice_display_name": None,
        "filters": [],
    }


# --- /v1/plans: refused -----------------------------------------------------


async def test_an_undeclared_key_is_named(tenant: Tenant):
    code = await metric(tenant)
    charge = standard(code, region("us-east-1"), {"values": {"country": ["fr"]}, "properties": {"amount": "1"}})
    await refused(tenant, charge, "charges[0].filters[1].values.country", "UNKNOWN_FILTER")


async def test_an_undeclared_value_is_named_by_its_key(tenant: Tenant):
    code = await metric(tenant)
    error = await refused(
        tenant, standard(code, region("mars-1")), "charges[0].filters[0].values.region", "UNKNOWN_FILTER"
    )
    assert "'mars-1'" in error["message"]


async def test_a_metric_without_filters_takes_no_charge_filter(tenant: Tenant):
    code = await metric(tenant, filters=False)
    await refused(tenant, standard(code, region("us-east-1")), "charges[0].filters[0].values.region", "UNKNOWN_FILTER")


@pytest.mark.parametrize(
    ("values", "field", "reason"),
    [
        ({}, "charges[0].filters[0].values", "INVALID_ARGUMENT"),
        ({"region": []}, "charges[0].filters[0].values.region", "INVALID_ARGUMENT"),
        ({"region": ["us-east-1", "us-east-1"]}, "charges[0].filters[0].values.region", "INVALID_ARGUMENT"),
        ({"region": "us-east-1"}, "charges[0].filters[0].values.region", "INVALID_TYPE"),
        ({"region": [None]}, "charges[0].filters[0].values.region[0]", "MISSING_FIELD"),
        ({"region": None}, "charges[0].filters[0].values.region", "MISSING_FIELD"),
        (["region"], "charges[0].filters[0].values", "INVALID_TYPE"),
    ],
)
async def test_bad_filter_values_are_named(tenant: Tenant, values, field, reason):
    code = await metric(tenant)
    await refused(tenant, standard(code, {"values": values, "properties": {"amount": "1"}}), field, reason)


async def test_two_filters_on_the_same_values_are_refused(tenant: Tenant):
    code = await metric(tenant)
    charge = standard(code, region("us-east-1", "eu-west-1"), region("eu-west-1", "us-east-1", amount="2"))
    error = await refused(tenant, charge, "charges[0].filters[1].values")
    assert "charges[0].filters[0]" in error["message"]


@pytest.mark.parametrize(
    ("properties", "field", "reason"),
    [
        ({}, "charges[0].filters[0].properties.amount", "INVALID_ARGUMENT"),
        ({"amount": "-1"}, "charges[0].filters[0].properties.amount", "INVALID_ARGUMENT"),
        ({"amount": "1", "rate": "2"}, "charges[0].filters[0].properties.rate", "INVALID_ARGUMENT"),
        ({"amount": "1", "package_size": 0}, "charges[0].filters[0].properties.package_size", "INVALID_ARGUMENT"),
        ({"amount": "1", "grouped_by": ["tier"]}, "charges[0].filters[0].properties.grouped_by", "INVALID_ARGUMENT"),
        ({"amount": "1", "colour": "red"}, "charges[0].filters[0].properties.colour", "UNKNOWN_FIELD"),
        (None, "charges[0].filters[0].properties", "MISSING_FIELD"),
    ],
)
async def test_filter_properties_are_checked_by_the_charges_model(tenant: Tenant, properties, field, reason):
    code = await metric(tenant)
    await refused(
        tenant, standard(code, {"values": {"region": ["us-east-1"]}, "properties": properties}), field, reason
    )


async def test_a_long_filter_display_name_is_refused(tenant: Tenant):
    code = await metric(tenant)
    charge = standard(code, region("us-east-1", invoice_display_name="x" * 201))
    await refused(tenant, charge, "charges[0].filters[0].invoice_display_name")


@pytest.mark.parametrize(
    ("terms", "field", "reason"),
    [
        ({"pay_in_advance": True}, "charges[0].pay_in_advance", "INVALID_ARGUMENT"),
        ({"pay_in_advance": 1}, "charges[0].pay_in_advance", "INVALID_TYPE"),
        ({"min_amount_cents": -1}, "charges[0].min_amount_cents", "INVALID_ARGUMENT"),
        ({"min_amount_cents": "100"}, "charges[0].min_amount_cents", "INVALID_TYPE"),
        ({"invoice_display_name": "x" * 201}, "charges[0].invoice_display_name", "INVALID_ARGUMENT"),
        (
            {"properties": {"amount": "1", "grouped_by": ["region", "region"]}},
            "charges[0].properties.grouped_by[1]",
            "INVALID_ARGUMENT",
        ),
        (
            {"properties": {"amount": "1", "grouped_by": [""]}},
            "charges[0].properties.grouped_by[0]",
            "INVALID_ARGUMENT",
        ),
        ({"properties": {"amount": "1", "grouped_by": "region"}}, "charges[0].properties.grouped_by", "INVALID_TYPE"),
    ],
)
async def test_bad_charge_terms_are_named(tenant: Tenant, terms, field, reason):
    code = await metric(tenant)
    await refused(tenant, standard(code, **terms), field, reason)


async def test_usage_charges_cannot_be_paid_in_advance_because_usage_is_known_at_the_end(tenant: Tenant):
    code = await metric(tenant)
    error = await refused(tenant, standard(code, pay_in_advance=True), "charges[0].pay_in_advance")
    assert "only a flat charge" in error["message"]


async def test_a_flat_charge_cannot_be_grouped(tenant: Tenant):
    code = await metric(tenant, "count")
    charge = {
        "billable_metric_code": code,
        "charge_model": "flat",
        "properties": {"amount": "5", "grouped_by": ["region"]},
    }
    await refused(tenant, charge, "charges[0].properties.grouped_by")


async def test_a_bad_second_charge_stores_nothing_of_the_first(tenant: Tenant):
    code = await metric(tenant)
    plan_code = unique("plan")
    good, bad = standard(code, region("us-east-1")), standard(code, region("nowhere"))
    response = await tenant.http.post(
        "/v1/plans", json={"code": plan_code, "interval": "monthly", "charges": [good, bad]}
    )
    assert (response.status_code, response.json()["error"]["field"]) == (400, "charges[1].filters[0].values.region")
    assert (await tenant.http.get("/v1/plans")).json()["plans"] == []


# --- /v1/price-plans ----------------------------------------------------------


async def test_abaxus_filters_use_the_abaxus_spelling_of_the_model(tenant: Tenant):
    code = await metric(tenant)
    charge = await price_plan(
        tenant,
        {
            "metric_key": code,
            "model": "per-unit",
            "properties": {"unit_amount": "1.00", "grouped_by": ["az"]},
            "filters": [
                {
                    "values": {"region": ["us-east-1"]},
                    "properties": {"unit_amount": "0.50"},
                    "invoice_display_name": "US",
                },
                {"values": {"tier": ["pro"]}, "properties": {"amount": "0.25"}},
            ],
            "min_amount_cents": 100,
            "invoice_display_name": "Calls",
        },
    )
    assert charge == {
        "id": charge["id"],
        "metric_key": code,
        "model": "per-unit",
        "invoice_display_name": "Calls",
        "pay_in_advance": False,
        "min_amount_cents": 100,
        "properties": {"unit_amount": "1", "grouped_by": ["az"]},
        "filters": [
            {"values": {"region": ["us-east-1"]}, "properties": {"unit_amount": "0.5"}, "invoice_display_name": "US"},
            {"values": {"tier": ["pro"]}, "properties": {"unit_amount": "0.25"}, "invoice_display_name": None},
        ],
    }
    bxb = (await tenant.http.get("/v1/plans")).json()["plans"][0]["charges"][0]
    assert [f["properties"] for f in bxb["filters"]] == [{"amount": "0.5"}, {"amount": "0.25"}]


async def test_abaxus_tiered_filters_take_tiers(tenant: Tenant):
    code = await metric(tenant)
    tiers = [{"up_to": 100, "unit_amount": "1"}, {"up_to": None, "unit_amount": "0.5"}]
    charge = await price_plan(
        tenant,
        {
            "metric_key": code,
            "model": "tiered",
            "properties": {"tiers": tiers},
            "filters": [{"values": {"tier": ["pro"]}, "properties": {"tiers": tiers[1:]}}],
        },
    )
    assert charge["filters"][0]["properties"] == {"tiers": [{"up_to": None, "unit_amount": "0.5", "flat_amount": "0"}]}


async def test_an_abaxus_flat_fee_may_be_paid_in_advance(tenant: Tenant):
    code = await metric(tenant, "count")
    charge = await price_plan(
        tenant, {"metric_key": code, "model": "flat fee", "properties": {"amount": "10"}, "pay_in_advance": True}
    )
    assert (charge["model"], charge["pay_in_advance"], charge["filters"]) == ("flat_fee", True, [])


@pytest.mark.parametrize(
    ("filter_properties", "field"),
    [
        (None, "charges[0].filters[1].properties.unit_amount"),
        ({"amount": "-1"}, "charges[0].filters[1].properties.amount"),
        ({"unit_amount": "1", "tiers": [{"up_to": None}]}, "charges[0].filters[1].properties.tiers"),
        ({"unit_amount": "1", "package_size": 2}, "charges[0].filters[1].properties.package_size"),
    ],
)
async def test_abaxus_filter_errors_name_the_abaxus_field(tenant: Tenant, filter_properties, field):
    code = await metric(tenant)
    second = {"values": {"tier": ["pro"]}}
    if filter_properties is not None:
        second["properties"] = filter_properties
    charge = {
        "metric_key": code,
        "model": "per-unit",
        "properties": {"amount": "1"},
        "filters": [{"values": {"region": ["us-east-1"]}, "properties": {"unit_amount": "1"}}, second],
    }
    error = await refused(tenant, charge, field, abaxus=True)
    assert error["message"].startswith(field)


async def test_abaxus_tier_errors_in_a_filter_name_up_to(tenant: Tenant):
    code = await metric(tenant)
    bad = [{"up_to": 100, "unit_amount": "1"}, {"up_to": 50}, {"up_to": None}]
    charge = {
        "metric_key": code,
        "model": "volume",
        "properties": {"tiers": [{"up_to": None, "unit_amount": "1"}]},
        "filters": [{"values": {"tier": ["pro"]}, "properties": {"tiers": bad}}],
    }
    await refused(tenant, charge, "charges[0].filters[0].properties.tiers[1].up_to", abaxus=True)


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ({"pay_in_advance": True}, "charges[0].pay_in_advance", "INVALID_ARGUMENT"),
        ({"filters": [{"values": {"country": ["fr"]}}]}, "charges[0].filters[0].values.country", "UNKNOWN_FILTER"),
        ({"min_amount_cents": -3}, "charges[0].min_amount_cents", "INVALID_ARGUMENT"),
    ],
)
async def test_abaxus_charge_terms_are_refused_as_in_bxb(tenant: Tenant, extra, field, reason):
    code = await metric(tenant)
    charge = {"metric_key": code, "model": "per-unit", "properties": {"unit_amount": "1"}, **extra}
    await refused(tenant, charge, field, reason, abaxus=True)
