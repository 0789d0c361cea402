"""A plan's terms beyond its price and charges — billed in advance, a trial,
a minimum commitment — through /v1/plans and /v1/price-plans: stored, shown
in a stable shape, refused naming the JSON field, nothing stored on error."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant, unique

DEFAULTS = {"pay_in_advance": False, "trial_period_days": 0, "minimum_commitment": None}
SPELLINGS = [("/v1/plans", "code"), ("/v1/price-plans", "id")]


def terms(plan: dict) -> dict:
    return {name: plan[name] for name in DEFAULTS}


async def create(t: Tenant, base: str, id_name: str, **fields) -> dict:
    code = unique("plan")
    response = await t.http.post(base, json={id_name: code, "interval": "monthly", **fields})
    assert response.status_code == 201, response.text
    plan = response.json()
    assert (await t.http.get(f"{base}/{code}")).json() == plan
    return plan


async def refused(t: Tenant, base: str, id_name: str, field: str, reason: str, **fields) -> dict:
    code = unique("plan")
    response = await t.http.post(base, json={id_name: code, "interval": "monthly", **fields})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["field"], error["reason"]) == (field, reason)
    assert (await t.http.get(f"{base}/{code}")).status_code == 404
    return error


@pytest.mark.parametrize(("base", "id_name"), SPELLINGS)
async def test_every_term_round_trips(tenant: Tenant, base: str, id_name: str):
    given = {"pay_in_advance": True, "trial_period_days": 14, "minimum_commitment": {"amount_cents": 10000}}
    plan = await create(tenant, base, id_name, amount_cents=4900, **given)
    assert terms(plan) == given


@pytest.mark.parametrize(("base", "id_name"), SPELLINGS)
async def test_a_plan_without_terms_shows_the_defaults(tenant: Tenant, base: str, id_name: str):
    assert terms(await create(tenant, base, id_name)) == DEFAULTS


@pytest.mark.parametrize("commitment", [None, {"amount_cents": 0}])
async def test_no_or_a_zero_commitment_shows_as_null(tenant: Tenant, commitment):
    plan = await create(tenant, "/v1/plans", "code", minimum_commitment=commitment, pay_in_advance=False)
    assert terms(plan) == DEFAULTS


@pytest.mark.parametrize("days", [0, 1, 3650])
async def test_a_trial_takes_up_to_ten_years(tenant: Tenant, days: int):
    assert (await create(tenant, "/v1/plans", "code", trial_period_days=days))["trial_period_days"] == days


async def test_each_version_has_its_own_terms(tenant: Tenant):
    code = unique("plan")
    first = await tenant.http.post(
        "/v1/plans", json={"code": code, "interval": "monthly", "trial_period_days": 30, "pay_in_advance": True}
    )
    second = await tenant.http.post("/v1/plans", json={"code": code, "interval": "monthly"})
    assert (first.status_code, second.status_code) == (201, 201)
    assert (terms(first.json())["trial_period_days"], terms(second.json())) == (30, DEFAULTS)
    old = (await tenant.http.get(f"/v1/plans/{code}", params={"version": 1})).json()
    assert (old["pay_in_advance"], old["trial_period_days"]) == (True, 30)


@pytest.mark.parametrize(("base", "id_name"), SPELLINGS)
@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"trial_period_days": 3651}, "trial_period_days", "INVALID_ARGUMENT"),
        ({"trial_period_days": -1}, "trial_period_days", "INVALID_ARGUMENT"),
        ({"trial_period_days": 2**31}, "trial_period_days", "INVALID_VALUE"),
        ({"trial_period_days": "14"}, "trial_period_days", "INVALID_TYPE"),
        ({"pay_in_advance": "yes"}, "pay_in_advance", "INVALID_TYPE"),
        ({"minimum_commitment": {"amount_cents": -1}}, "minimum_commitment.amount_cents", "INVALID_ARGUMENT"),
        ({"minimum_commitment": {}}, "minimum_commitment.amount_cents", "MISSING_FIELD"),
        ({"minimum_commitment": 100}, "minimum_commitment", "INVALID_TYPE"),
        (
            {"minimum_commitment": {"amount_cents": 1, "currency": "EUR"}},
            "minimum_commitment.currency",
            "UNKNOWN_FIELD",
        ),
    ],
)
async def test_bad_terms_are_refused_naming_the_field(
    tenant: Tenant, base: str, id_name: str, fields: dict, field: str, reason: str
):
    await refused(tenant, base, id_name, field, reason, **fields)


@pytest.mark.parametrize(("base", "id_name"), SPELLINGS)
async def test_a_negative_commitment_message_names_the_json_field(tenant: Tenant, base: str, id_name: str):
    error = await refused(
        tenant,
        base,
        id_name,
        "minimum_commitment.amount_cents",
        "INVALID_ARGUMENT",
        minimum_commitment={"amount_cents": -5},
    )
    assert error["message"] == "minimum_commitment.amount_cents must not be negative"


async def test_other_catalog_errors_pass_through_unchanged(tenant: Tenant):
    error = await refused(tenant, "/v1/plans", "code", "amount_cents", "INVALID_ARGUMENT", amount_cents=-1)
    assert error["message"] == "amount_cents must not be negative"
