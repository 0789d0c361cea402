"""The catalog routes of /v1: billable metrics, plans, customers and
subscriptions, through the gateway app and the real services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import Tenant, unique


def instant(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def recent(text: str) -> bool:
    return abs(datetime.now(UTC) - instant(text)) < timedelta(minutes=1)


async def create_metric(t: Tenant, **fields) -> dict:
    body = {"code": unique("metric"), "aggregation_type": "count", **fields}
    response = await t.http.post("/v1/billable_metrics", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def create_plan(t: Tenant, **fields) -> dict:
    response = await t.http.post("/v1/plans", json={"code": unique("plan"), "interval": "monthly", **fields})
    assert response.status_code == 201, response.text
    return response.json()


# Billable metrics


async def test_a_billable_metric_is_created_read_and_listed(tenant: Tenant):
    code = unique("tokens")
    body = {
        "name": "Tokens",
        "code": code,
        "description": "LLM tokens",
        "aggregation_type": "sum",
        "field_name": "tokens",
    }
    created = await tenant.http.post("/v1/billable_metrics", json=body)
    assert created.status_code == 201, created.text
    metric = created.json()
    assert metric["id"].startswith("bm")
    assert recent(metric.pop("created_at"))
    assert {k: v for k, v in metric.items() if k != "id"} == {**body, "key": code, "value_type": None, "filters": []}

    fetched = await tenant.http.get(f"/v1/billable_metrics/{code}")
    assert fetched.status_code == 200
    assert fetched.json() == created.json()
    listed = (await tenant.http.get("/v1/billable_metrics")).json()
    assert listed == {"billable_metrics": [created.json()], "next_page_token": ""}


async def test_every_aggregation_type_round_trips(tenant: Tenant):
    for aggregation in ("count", "sum", "max", "unique_count", "latest", "weighted_sum"):
        field = None if aggregation == "count" else "value"
        metric = await create_metric(tenant, aggregation_type=aggregation, field_name=field)
        assert (metric["aggregation_type"], metric["field_name"]) == (aggregation, field)


async def test_a_metric_without_a_name_is_named_by_its_code_and_has_a_null_field(tenant: Tenant):
    metric = await create_metric(tenant)
    assert (metric["name"], metric["description"], metric["field_name"]) == (metric["code"], "", None)


async def test_an_unknown_aggregation_type_is_refused(tenant: Tenant):
    response = await tenant.http.post("/v1/billable_metrics", json={"code": "m", "aggregation_type": "median"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["reason"], error["field"]) == ("INVALID_VALUE", "aggregation_type")
    assert "count, sum, max, unique_count, latest" in error["message"]


async def test_a_sum_metric_needs_a_field_name_as_the_service_says(tenant: Tenant):
    response = await tenant.http.post("/v1/billable_metrics", json={"code": unique("m"), "aggregation_type": "sum"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_ARGUMENT", "field_name")


# Plans


async def test_a_standard_plan_round_trips_with_its_charge(tenant: Tenant):
    metric = await create_metric(tenant)
    code = unique("starter")
    body = {
        "name": "Starter",
        "code": code,
        "description": "For small teams",
        "interval": "yearly",
        "amount_cents": 12000,
        "amount_currency": "EUR",
        "charges": [
            {"billable_metric_code": metric["code"], "charge_model": "standard", "properties": {"amount": "0.0005"}}
        ],
    }
    created = await tenant.http.post("/v1/plans", json=body)
    assert created.status_code == 201, created.text
    plan = created.json()
    assert plan["id"].startswith("plan")
    assert recent(plan["created_at"])
    assert (plan["code"], plan["name"], plan["description"]) == (code, "Starter", "For small teams")
    assert (plan["version"], plan["interval"], plan["amount_cents"], plan["currency"]) == (1, "yearly", 12000, "EUR")
    [charge] = plan["charges"]
    assert charge["id"].startswith("ch")
    assert charge == {
        "id": charge["id"],
        "billable_metric_code": metric["code"],
        "charge_model": "standard",
        "invoice_display_name": None,
        "pay_in_advance": False,
        "min_amount_cents": 0,
        "properties": {"amount": "0.0005"},
        "filters": [],
    }
    assert (await tenant.http.get(f"/v1/plans/{code}")).json() == plan


async def test_a_graduated_plan_renders_whole_tier_bounds_as_integers_and_the_open_end_as_null(tenant: Tenant):
    metric = await create_metric(tenant)
    ranges = [
        {"from": 0, "to": 100, "per_unit": "0", "flat_amount": "5"},
        {"from": "101", "to": "1000", "per_unit": 0.02},
        {"from": 1001, "to": None, "per_unit": "0.010", "flat_amount": "0"},
    ]
    plan = await create_plan(
        tenant,
        charges=[
            {
                "billable_metric_code": metric["code"],
                "charge_model": "graduated",
                "properties": {"graduated_ranges": ranges},
            }
        ],
    )
    [charge] = plan["charges"]
    assert charge["charge_model"] == "graduated"
    assert charge["properties"] == {
        "graduated_ranges": [
            {"from": 0, "to": 100, "per_unit": "0", "flat_amount": "5"},
            {"from": 101, "to": 1000, "per_unit": "0.02", "flat_amount": "0"},
            {"from": 1001, "to": None, "per_unit": "0.01", "flat_amount": "0"},
        ]
    }


async def test_a_plan_defaults_to_usd_without_a_fee_or_charges(tenant: Tenant):
    plan = await create_plan(tenant)
    assert (plan["currency"], plan["amount_cents"], plan["charges"], plan["name"]) == ("USD", 0, [], plan["code"])


async def test_currency_and_amount_currency_may_agree_but_not_disagree(tenant: Tenant):
    agreed = await create_plan(tenant, currency="GBP", amount_currency="GBP", amount_cents=100)
    assert agreed["currency"] == "GBP"
    assert (await create_plan(tenant, currency="JPY"))["currency"] == "JPY"

    code = unique("plan")
    response = await tenant.http.post(
        "/v1/plans", json={"code": code, "interval": "monthly", "currency": "EUR", "amount_currency": "USD"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["reason"], error["field"]) == ("INVALID_ARGUMENT", "amount_currency")
    assert error["message"] == "currency and amount_currency name the same thing and disagree"
    assert (await tenant.http.get(f"/v1/plans/{code}")).status_code == 404


async def test_creating_a_plan_again_makes_a_new_version_readable_by_number(tenant: Tenant):
    first = await create_plan(tenant, amount_cents=1000)
    second = await create_plan(tenant, code=first["code"], amount_cents=2000)
    assert (first["version"], second["version"]) == (1, 2)
    assert second["id"] != first["id"]

    current = await tenant.http.get(f"/v1/plans/{first['code']}")
    assert (current.json()["version"], current.json()["amount_cents"]) == (2, 2000)
    old = await tenant.http.get(f"/v1/plans/{first['code']}", params={"version": 1})
    assert old.json() == first
    missing = await tenant.http.get(f"/v1/plans/{first['code']}", params={"version": 3})
    assert missing.status_code == 404
    assert missing.json()["error"]["field"] == "code"


async def test_plans_are_listed_by_code_at_their_latest_version(tenant: Tenant):
    first = await create_plan(tenant, code="b_plan")
    second = await create_plan(tenant, code="a_plan")
    latest = await create_plan(tenant, code="b_plan", amount_cents=500)
    listed = (await tenant.http.get("/v1/plans")).json()
    assert listed["plans"] == [second, latest]
    assert first not in listed["plans"]
    assert listed["next_page_token"] == ""


async def test_a_charge_on_an_unknown_metric_is_refused_naming_the_charge(tenant: Tenant):
    response = await tenant.http.post(
        "/v1/plans",
        json={
            "code": unique("plan"),
            "interval": "monthly",
            "charges": [{"billable_metric_code": "nope", "charge_model": "standard", "properties": {"amount": "1"}}],
        },
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["reason"], error["field"]) == ("UNKNOWN_METRIC", "charges[0].billable_metric_code")


# Customers


async def test_a_customer_is_created_by_external_id_and_read_back(tenant: Tenant):
    customer_id = unique("cus")
    body = {"external_id": customer_id, "name": "Acme", "email": "billing@acme.test", "currency": "EUR"}
    created = await tenant.http.post("/v1/customers", json=body)
    assert created.status_code == 201, created.text
    customer = created.json()
    assert recent(customer.pop("created_at"))
    assert customer == {
        "id": customer_id,
        **body,
        "billing": {"provider": None, "provider_customer_id": None, "auto_collect": None},
        "tax_codes": [],
        "test_clock_id": None,
        "invoice_grace_period": 0,
    }

    fetched = await tenant.http.get(f"/v1/customers/{customer_id}")
    assert fetched.status_code == 200
    assert fetched.json() == created.json()


async def test_id_is_an_alias_of_external_id(tenant: Tenant):
    by_id = await tenant.http.post("/v1/customers", json={"id": unique("cus")})
    assert by_id.status_code == 201
    assert by_id.json()["external_id"] == by_id.json()["id"]
    assert by_id.json()["currency"] is None
    same = unique("cus")
    both = await tenant.http.post("/v1/customers", json={"id": same, "external_id": same})
    assert both.status_code == 201
    assert both.json()["id"] == same


async def test_id_and_external_id_that_disagree_are_refused(tenant: Tenant):
    first, second = unique("cus"), unique("cus")
    response = await tenant.http.post("/v1/customers", json={"id": first, "external_id": second})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["field"], error["message"]) == ("external_id", "id and external_id name the same thing and disagree")
    for customer_id in (first, second):
        assert (await tenant.http.get(f"/v1/customers/{customer_id}")).status_code == 404


async def test_a_customer_needs_an_id(tenant: Tenant):
    response = await tenant.http.post("/v1/customers", json={"name": "Nobody"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "id"


async def test_customers_are_listed_in_creation_order(tenant: Tenant):
    ids = [unique("cus") for _ in range(3)]
    for customer_id in ids:
        assert (await tenant.http.post("/v1/customers", json={"external_id": customer_id})).status_code == 201
    listed = (await tenant.http.get("/v1/customers")).json()
    assert [c["id"] for c in listed["customers"]] == ids
    assert listed["next_page_token"] == ""


# Subscriptions


async def test_a_subscription_by_plan_code_starts_now_on_the_anniversary(tenant: Tenant):
    plan = await create_plan(tenant)
    customer_id = unique("cus")
    created = await tenant.http.post("/v1/subscriptions", json={"customer_id": customer_id, "plan_code": plan["code"]})
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["id"].startswith("sub")
    assert recent(sub["start_date"]) and recent(sub["created_at"])
    assert sub == {
        "id": sub["id"],
        "external_id": None,
        "customer_id": customer_id,
        "plan_id": plan["id"],
        "plan_code": plan["code"],
        "plan_version": 1,
        "status": "active",
        "billing_time": "anniversary",
        "start_date": sub["start_date"],
        "created_at": sub["created_at"],
        "terminated_at": None,
        "previous_subscription_id": None,
        "next_subscription_id": None,
        "trial_end_date": None,
        "test_clock_id": None,
    }
    assert (await tenant.http.get(f"/v1/subscriptions/{sub['id']}")).json() == sub
    # The customer a subscription names exists from then on.
    assert (await tenant.http.get(f"/v1/customers/{customer_id}")).status_code == 200


async def test_a_subscription_by_plan_id_pins_that_plans_latest_version(tenant: Tenant):
    first = await create_plan(tenant)
    second = await create_plan(tenant, code=first["code"])
    sub = await tenant.http.post("/v1/subscriptions", json={"customer_id": unique("cus"), "plan_id": first["id"]})
    assert sub.status_code == 201, sub.text
    assert (sub.json()["plan_id"], sub.json()["plan_version"]) == (second["id"], 2)


async def test_a_subscription_with_a_start_date_and_calendar_billing(tenant: Tenant):
    plan = await create_plan(tenant)
    start = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    body = {
        "customer_id": unique("cus"),
        "plan_code": plan["code"],
        "start_date": start.isoformat().replace("+00:00", "Z"),
        "billing_time": "calendar",
    }
    sub = (await tenant.http.post("/v1/subscriptions", json=body)).json()
    assert (sub["status"], sub["billing_time"]) == ("pending", "calendar")
    assert instant(sub["start_date"]) == start


async def test_a_start_date_may_be_unix_seconds(tenant: Tenant):
    plan = await create_plan(tenant)
    body = {"customer_id": unique("cus"), "plan_code": plan["code"], "start_date": 1767225600}
    sub = (await tenant.http.post("/v1/subscriptions", json=body)).json()
    assert sub["start_date"] == "2026-01-01T00:00:00Z"


async def test_retrying_a_create_with_the_same_external_id_returns_the_same_subscription(tenant: Tenant):
    plan = await create_plan(tenant)
    customer_id = unique("cus")
    body = {"customer_id": customer_id, "plan_code": plan["code"], "external_id": unique("ext")}
    first = await tenant.http.post("/v1/subscriptions", json=body)
    retry = await tenant.http.post("/v1/subscriptions", json=body)
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert first.json()["external_id"] == body["external_id"]
    listed = (await tenant.http.get("/v1/subscriptions", params={"customer_id": customer_id})).json()
    assert [s["id"] for s in listed["subscriptions"]] == [first.json()["id"]]


async def test_subscriptions_are_listed_by_customer(tenant: Tenant):
    plan = await create_plan(tenant)
    mine, other = unique("cus"), unique("cus")
    ids = []
    for customer_id in (mine, other, mine):
        response = await tenant.http.post(
            "/v1/subscriptions", json={"customer_id": customer_id, "plan_code": plan["code"]}
        )
        ids.append(response.json()["id"])
    by_customer = (await tenant.http.get("/v1/subscriptions", params={"customer_id": mine})).json()
    assert [s["id"] for s in by_customer["subscriptions"]] == [ids[0], ids[2]]
    everything = (await tenant.http.get("/v1/subscriptions")).json()
    assert [s["id"] for s in everything["subscriptions"]] == ids
    assert everything["next_page_token"] == ""


async def test_a_subscription_needs_a_known_plan(tenant: Tenant):
    customer_id = unique("cus")
    unknown = await tenant.http.post("/v1/subscriptions", json={"customer_id": customer_id, "plan_code": "nope"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "plan_code"
    unknown_id = await tenant.http.post("/v1/subscriptions", json={"customer_id": customer_id, "plan_id": "plan_nope"})
    assert unknown_id.status_code == 404
    assert unknown_id.json()["error"]["field"] == "plan_id"
    neither = await tenant.http.post("/v1/subscriptions", json={"customer_id": customer_id})
    assert neither.status_code == 400
    assert neither.json()["error"]["field"] == "plan_code"
    assert (await tenant.http.get("/v1/subscriptions")).json()["subscriptions"] == []
    assert (await tenant.http.get(f"/v1/customers/{customer_id}")).status_code == 404


async def test_an_unknown_billing_time_is_refused(tenant: Tenant):
    plan = await create_plan(tenant)
    body = {"customer_id": unique("cus"), "plan_code": plan["code"], "billing_time": "weekly"}
    response = await tenant.http.post("/v1/subscriptions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "billing_time"
