"""Subscription start dates: past, present and future, within sane bounds."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant

PLAN = {"code": "dated", "interval": "monthly", "amount_cents": 100}


@pytest.fixture
async def plan(tenant: Tenant) -> None:
    assert (await tenant.http.post("/v1/plans", json=PLAN)).status_code == 201


@pytest.mark.parametrize("start", ["1999-12-31T23:59:59Z", "0206-01-01T00:00:00Z", "2100-01-01T00:00:00Z"])
async def test_start_dates_out_of_range_are_refused_and_nothing_is_stored(tenant: Tenant, plan, start: str):
    response = await tenant.http.post(
        "/v1/subscriptions", json={"customer_id": "dates", "plan_code": "dated", "start_date": start}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["field"], error["reason"]) == ("start_date", "START_DATE_OUT_OF_RANGE")
    assert (await tenant.http.get("/v1/subscriptions", params={"customer_id": "dates"})).json()["subscriptions"] == []


@pytest.mark.parametrize(("start", "status"), [("2000-01-01T00:00:00Z", "active"), ("2099-12-31T23:59:59Z", "pending")])
async def test_bounds_themselves_are_accepted(tenant: Tenant, plan, start: str, status: str):
    response = await tenant.http.post(
        "/v1/subscriptions", json={"customer_id": "dates", "plan_code": "dated", "start_date": start}
    )
    assert response.status_code == 201, response.text
    assert (response.json()["start_date"], response.json()["status"]) == (start, status)
