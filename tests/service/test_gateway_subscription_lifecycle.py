"""/v1/subscriptions lifecycle through the gateway: DELETE terminates, PUT
changes the plan, and POST with a known external_id on another plan changes
that subscription's plan (Lago's behaviour)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Tenant, unique


def instant(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def first_of_next_month(now: datetime) -> datetime:
    return datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)


async def plan(t: Tenant, amount_cents: int, currency: str = "USD", code: str = "") -> dict:
    body = {"code": code or unique("plan"), "interval": "monthly", "amount_cents": amount_cents, "currency": currency}
    response = await t.http.post("/v1/plans", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def subscribe(t: Tenant, plan_code: str, status: int = 201, **fields) -> dict:
    body = {"customer_id": "cus_gw", "plan_code": plan_code, "start_date": "2026-01-01T00:00:00Z", **fields}
    response = await t.http.post("/v1/subscriptions", json=body)
    assert response.status_code == status, response.text
    return response.json()


async def fetch(t: Tenant, subscription_id: str) -> dict:
    response = await t.http.get(f"/v1/subscriptions/{subscription_id}")
    assert response.status_code == 200, response.text
    return response.json()


def error(response, status: int, field: str, reason: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert (body["field"], body["reason"]) == (field, reason), body


async def test_delete_terminates_and_answers_the_terminated_subscription(tenant: Tenant):
    basic = await plan(tenant, 1000)
    sub = await subscribe(tenant, basic["code"])
    assert (sub["terminated_at"], sub["previous_subscription_id"], sub["next_subscription_id"]) == (None, None, None)
    before = datetime.now(UTC)
    response = await tenant.http.delete(f"/v1/subscriptions/{sub['id']}")
    assert response.status_code == 200, response.text
    ended = response.json()
    assert before - timedelta(seconds=1) <= instant(ended["terminated_at"]) <= datetime.now(UTC)
    assert ended == {**sub, "status": "terminated", "terminated_at": ended["terminated_at"]}
    assert await fetch(tenant, sub["id"]) == ended
    again = await tenant.http.delete(f"/v1/subscriptions/{sub['id']}")
    assert (again.status_code, again.json()) == (200, ended)


async def test_delete_of_a_pending_subscription_cancels_it(tenant: Tenant):
    basic = await plan(tenant, 1000)
    sub = await subscribe(tenant, basic["code"], start_date="2099-01-01T00:00:00Z")
    ended = (await tenant.http.delete(f"/v1/subscriptions/{sub['id']}")).json()
    assert (ended["status"], ended["terminated_at"]) == ("terminated", "2099-01-01T00:00:00Z")


async def test_delete_or_put_of_an_unknown_subscription_is_not_found(tenant: Tenant):
    error(await tenant.http.delete("/v1/subscriptions/sub_nope"), 404, "id", "NOT_FOUND")
    put = await tenant.http.put("/v1/subscriptions/sub_nope", json={"plan_code": "x"})
    error(put, 404, "id", "NOT_FOUND")


async def test_put_upgrades_now_and_answers_the_new_subscription(tenant: Tenant):
    basic = await plan(tenant, 1000)
    pro = await plan(tenant, 2000)
    old = await subscribe(tenant, basic["code"], external_id=(ext := unique("ext")), billing_time="calendar")
    response = await tenant.http.put(f"/v1/subscriptions/{old['id']}", json={"plan_code": pro["code"]})
    assert response.status_code == 200, response.text
    new = response.json()
    assert new == {
        "id": new["id"],
        "external_id": ext,
        "customer_id": "cus_gw",
        "plan_id": pro["id"],
        "plan_code": pro["code"],
        "plan_version": 1,
        "status": "active",
        "billing_time": "calendar",
        "start_date": new["start_date"],
        "created_at": new["created_at"],
        "terminated_at": None,
        "previous_subscription_id": old["id"],
        "next_subscription_id": None,
        "trial_end_date": None,
        "test_clock_id": None,
    }
    assert abs(instant(new["start_date"]) - datetime.now(UTC)) < timedelta(minutes=1)
    ended = await fetch(tenant, old["id"])
    assert ended == {
        **old,
        "external_id": None,
        "status": "terminated",
        "terminated_at": new["start_date"],
        "next_subscription_id": new["id"],
    }


async def test_put_by_plan_id_downgrades_at_the_end_of_the_period(tenant: Tenant):
    pro = await plan(tenant, 2000)
    lite = await plan(tenant, 500)
    old = await subscribe(tenant, pro["code"])  # monthly from 2026-01-01: periods end on the 1st
    response = await tenant.http.put(f"/v1/subscriptions/{old['id']}", json={"plan_id": lite["id"]})
    assert response.status_code == 200, response.text
    new = response.json()
    switch = first_of_next_month(datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    assert (new["status"], new["plan_code"], new["start_date"]) == ("pending", lite["code"], switch)
    scheduled = await fetch(tenant, old["id"])
    assert (scheduled["status"], scheduled["terminated_at"], scheduled["next_subscription_id"]) == (
        "active",
        switch,
        new["id"],
    )


async def test_put_refusals_name_the_field(tenant: Tenant):
    basic = await plan(tenant, 1000)
    euro = await plan(tenant, 1000, currency="EUR")
    sub = await subscribe(tenant, basic["code"])
    path = f"/v1/subscriptions/{sub['id']}"
    error(await tenant.http.put(path, json={"plan_code": basic["code"]}), 400, "plan_code", "SAME_PLAN")
    error(await tenant.http.put(path, json={"plan_code": euro["code"]}), 400, "plan_code", "CURRENCY_MISMATCH")
    error(await tenant.http.put(path, json={"plan_code": "ghost"}), 404, "plan_code", "NOT_FOUND")
    error(await tenant.http.put(path, json={}), 400, "plan_code", "INVALID_ARGUMENT")
    error(await tenant.http.put(path, json={"plan": "x"}), 400, "plan", "UNKNOWN_FIELD")
    error(await tenant.http.put(path, json={"plan_code": 7}), 400, "plan_code", "INVALID_TYPE")
    assert await fetch(tenant, sub["id"]) == sub
    await tenant.http.delete(path)
    other = await plan(tenant, 3000)
    error(await tenant.http.put(path, json={"plan_code": other["code"]}), 409, "status", "SUBSCRIPTION_TERMINATED")


async def test_posting_a_known_external_id_on_another_plan_changes_its_plan(tenant: Tenant):
    basic = await plan(tenant, 1000)
    pro = await plan(tenant, 2000)
    ext = unique("ext")
    first = await subscribe(tenant, basic["code"], external_id=ext)
    new = await subscribe(tenant, pro["code"], status=200, external_id=ext)
    assert (new["plan_code"], new["external_id"], new["previous_subscription_id"]) == (pro["code"], ext, first["id"])
    assert (await fetch(tenant, first["id"]))["next_subscription_id"] == new["id"]
    # Retrying the change finds the new subscription, already on that plan.
    assert await subscribe(tenant, pro["code"], external_id=ext) == new
    assert await subscribe(tenant, plan_code=None, plan_id=pro["id"], external_id=ext) == new
    listed = (await tenant.http.get("/v1/subscriptions", params={"customer_id": "cus_gw"})).json()
    assert [s["id"] for s in listed["subscriptions"]] == [first["id"], new["id"]]


async def test_posting_a_known_external_id_by_plan_id_changes_its_plan(tenant: Tenant):
    basic = await plan(tenant, 1000)
    lite = await plan(tenant, 100)
    ext = unique("ext")
    first = await subscribe(tenant, basic["code"], external_id=ext)
    new = await subscribe(tenant, plan_code=None, plan_id=lite["code"], status=200, external_id=ext)
    assert (new["plan_id"], new["status"], new["previous_subscription_id"]) == (lite["id"], "pending", first["id"])


async def test_posting_a_known_external_id_with_another_version_of_its_plan_returns_it(tenant: Tenant):
    code = unique("plan")
    v1 = await plan(tenant, 1000, code=code)
    v2 = await plan(tenant, 1200, code=code)
    ext = unique("ext")
    # A new subscription by an older version's id pins the current version ...
    first = await subscribe(tenant, plan_code=None, plan_id=v1["id"], external_id=ext)
    assert first["plan_id"] == v2["id"]
    # ... and so does its retry, which finds it on the same plan: nothing changes.
    assert await subscribe(tenant, plan_code=None, plan_id=v1["id"], external_id=ext) == first


async def test_posting_a_known_external_id_on_a_plan_it_cannot_move_to_is_refused(tenant: Tenant):
    basic = await plan(tenant, 1000)
    euro = await plan(tenant, 1000, currency="EUR")
    ext = unique("ext")
    first = await subscribe(tenant, basic["code"], external_id=ext)
    response = await tenant.http.post(
        "/v1/subscriptions", json={"customer_id": "cus_gw", "plan_code": euro["code"], "external_id": ext}
    )
    error(response, 400, "plan_code", "CURRENCY_MISMATCH")
    assert await fetch(tenant, first["id"]) == first


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/v1/subscriptions/sub_1", {"GET", "HEAD", "PUT", "DELETE"}),
        ("POST", "/v1/subscriptions/sub_1", {"GET", "HEAD", "PUT", "DELETE"}),
        ("DELETE", "/v1/subscriptions", {"GET", "HEAD", "POST"}),
        ("PUT", "/v1/subscriptions", {"GET", "HEAD", "POST"}),
    ],
)
async def test_wrong_methods_are_405_naming_every_allowed_one(tenant: Tenant, method: str, path: str, allowed):
    response = await tenant.http.request(method, path)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert set(response.headers["allow"].split(", ")) == allowed
