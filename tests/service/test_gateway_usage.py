"""Events, invoices and current usage through the gateway app and the real
services (ClickHouse for events, the invoicing service for bills)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import Tenant, eventually, unique


def rfc3339(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def month_start(months_ago: int) -> datetime:
    """Midnight UTC on the first day of the month `months_ago` before this one."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - months_ago
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def recent(text: str) -> bool:
    return abs(datetime.now(UTC) - datetime.fromisoformat(text)) < timedelta(minutes=1)


# Events


async def test_an_event_is_accepted_once_then_reported_as_duplicate(tenant: Tenant):
    event = {
        "transaction_id": unique("txn"),
        "customer_id": "cus_1",
        "code": "api_requests",
        "timestamp": "2026-09-15T10:30:00Z",
        "properties": {
            "tokens": 2340,
            "price": 0.5,
            "region": "eu",
            "cached": True,
            "meta": {"a": [1, 2]},
            "gone": None,
        },
    }
    first = await tenant.http.post("/v1/events", json=event)
    assert first.status_code == 200, first.text
    assert first.json() == {"transaction_id": event["transaction_id"], "status": "accepted"}
    retry = await tenant.http.post("/v1/events", json={**event, "properties": {"tokens": 1}})
    assert retry.status_code == 200
    # Queued, not yet stored: the retry is skipped when stored, so the answer is the same.
    assert retry.json() == {"transaction_id": event["transaction_id"], "status": "accepted"}

    stored = await tenant.http.get(f"/v1/events/{event['transaction_id']}")
    assert stored.status_code == 200
    body = stored.json()
    assert recent(body.pop("ingested_at"))
    assert body == {
        "transaction_id": event["transaction_id"],
        "customer_id": "cus_1",
        "code": "api_requests",
        "subscription_id": None,
        "timestamp": "2026-09-15T10:30:00Z",
        "properties": {"tokens": "2340", "price": "0.5", "region": "eu", "cached": "true", "meta": '{"a":[1,2]}'},
        "value": None,
    }


async def test_an_event_without_transaction_id_or_timestamp_gets_both_from_the_server(tenant: Tenant):
    response = await tenant.http.post(
        "/v1/events", json={"customer_id": "cus_1", "code": "api_requests", "subscription_id": "sub_1"}
    )
    assert response.status_code == 200, response.text
    assigned = response.json()["transaction_id"]
    assert assigned.startswith("evt_")
    assert response.json()["status"] == "accepted"

    stored = (await tenant.http.get(f"/v1/events/{assigned}")).json()
    assert stored["transaction_id"] == assigned
    assert stored["subscription_id"] == "sub_1"
    assert stored["properties"] == {}
    assert recent(stored["timestamp"])

    again = await tenant.http.post("/v1/events", json={"customer_id": "cus_1", "code": "api_requests"})
    assert again.json()["transaction_id"] not in ("", assigned)


async def test_an_unknown_event_is_a_404_naming_the_transaction_id(tenant: Tenant):
    response = await tenant.http.get("/v1/events/txn_never_sent")
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["reason"], error["field"]) == ("NOT_FOUND", "NOT_FOUND", "transaction_id")
    assert "txn_never_sent" in error["message"]


async def test_an_event_from_the_future_is_refused_and_not_stored(tenant: Tenant):
    txn = unique("txn")
    later = rfc3339(datetime.now(UTC) + timedelta(hours=1))
    response = await tenant.http.post(
        "/v1/events", json={"transaction_id": txn, "customer_id": "cus_1", "code": "c", "timestamp": later}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["reason"], error["field"]) == ("TIMESTAMP_IN_FUTURE", "timestamp")
    assert (await tenant.http.get(f"/v1/events/{txn}")).status_code == 404


async def test_an_event_needs_a_customer_and_a_code(tenant: Tenant):
    response = await tenant.http.post("/v1/events", json={"code": "api_requests"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "customer_id"
    response = await tenant.http.post("/v1/events", json={"customer_id": "cus_1", "code": ""})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "code"


# Invoices and current usage

GRADUATED = [
    {"from": 0, "to": 10, "per_unit": "1"},
    {"from": 11, "to": None, "per_unit": "0.5", "flat_amount": "2"},
]


async def subscribe(t: Tenant, start: datetime) -> tuple[str, dict, dict]:
    """A customer on a 10.00 monthly plan charging 0.25 per call and tokens
    in two graduated tiers, from `start`. Returns (customer, plan, subscription)."""
    calls, tokens = unique("calls"), unique("tokens")
    for body in (
        {"code": calls, "name": "Calls", "aggregation_type": "count"},
        {"code": tokens, "name": "Tokens", "aggregation_type": "sum", "field_name": "n"},
    ):
        assert (await t.http.post("/v1/billable_metrics", json=body)).status_code == 201
    plan = await t.http.post(
        "/v1/plans",
        json={
            "code": unique("pro"),
            "name": "Pro",
            "interval": "monthly",
            "amount_cents": 1000,
            "charges": [
                {"billable_metric_code": calls, "charge_model": "standard", "properties": {"amount": "0.25"}},
                {
                    "billable_metric_code": tokens,
                    "charge_model": "graduated",
                    "properties": {"graduated_ranges": GRADUATED},
                },
            ],
        },
    )
    assert plan.status_code == 201, plan.text
    customer = unique("cus")
    sub = await t.http.post(
        "/v1/subscriptions",
        json={"customer_id": customer, "plan_code": plan.json()["code"], "start_date": rfc3339(start)},
    )
    assert sub.status_code == 201, sub.text
    return customer, plan.json(), sub.json()


async def send_usage(t: Tenant, customer: str, plan: dict, tokens: list[int], calls: int, at: datetime | None = None):
    calls_code, tokens_code = (c["billable_metric_code"] for c in plan["charges"])
    when = {"timestamp": rfc3339(at)} if at else {}
    for _ in range(calls):
        response = await t.http.post("/v1/events", json={"customer_id": customer, "code": calls_code, **when})
        assert response.json()["status"] == "accepted"
    for n in tokens:
        body = {"customer_id": customer, "code": tokens_code, "properties": {"n": n}, **when}
        assert (await t.http.post("/v1/events", json=body)).json()["status"] == "accepted"


async def test_closed_periods_are_invoiced_with_base_standard_and_graduated_fees(tenant: Tenant):
    start = month_start(2)
    customer, plan, sub = await subscribe(tenant, start)
    await send_usage(tenant, customer, plan, tokens=[5, 10], calls=3, at=start + timedelta(days=3))

    async def two_invoices():
        await tenant.bill(customer)
        response = await tenant.http.get(f"/v1/customers/{customer}/invoices")
        assert response.status_code == 200
        body = response.json()
        assert len(body["invoices"]) == 3, body
        return body

    listed = await eventually(two_invoices)
    assert listed["next_page_token"] == ""
    draft, latest, first = listed["invoices"]  # the open period's draft, then the newest period first
    assert (draft["status"], draft["id"], draft["number"]) == ("draft", None, None)
    assert (draft["period_start"], draft["total_amount_cents"]) == (rfc3339(month_start(0)), 1000)
    assert (first["period_start"], first["period_end"]) == (rfc3339(start), rfc3339(month_start(1)))
    assert (latest["period_start"], latest["period_end"]) == (rfc3339(month_start(1)), rfc3339(month_start(0)))
    assert first["id"] != latest["id"] and first["number"] and latest["number"]
    assert (first["customer_id"], first["subscription_id"], first["plan_code"]) == (customer, sub["id"], plan["code"])
    assert (first["status"], first["currency"], first["coupons"]) == ("finalized", "USD", [])
    assert (first["timing"], first["calculation_id"]) == ("in_arrears", None)
    assert recent(first["issued_at"]) and recent(first["created_at"])

    base, calls, tokens = first["fees"]
    assert base == {
        "type": "subscription",
        "amount_cents": 1000,
        "units": "1",
        "unit_amount": "10",
        "precise_amount": "10",
        "description": "Pro base fee",
        "period_start": rfc3339(start),
        "period_end": rfc3339(month_start(1)),
    }
    assert calls == {
        "type": "charge",
        "amount_cents": 75,
        "units": "3",
        "unit_amount": "0.25",
        "precise_amount": "0.75",
        "description": "Calls: 3 units",
        "billable_metric_code": plan["charges"][0]["billable_metric_code"],
        "charge_id": plan["charges"][0]["id"],
        "events_count": 3,
        "group": {},
        "filter": None,
        "period_start": rfc3339(start),
        "period_end": rfc3339(month_start(1)),
    }
    assert (tokens["amount_cents"], tokens["units"], tokens["precise_amount"], tokens["events_count"]) == (
        1450,
        "15",
        "14.5",
        2,
    )
    assert tokens["charge_id"] == plan["charges"][1]["id"]
    assert tokens["tiers"] == [
        {"from": 0, "to": 10, "units": "10", "per_unit": "1", "flat_amount": "0", "amount": "10"},
        {"from": 11, "to": None, "units": "5", "per_unit": "0.5", "flat_amount": "2", "amount": "4.5"},
    ]
    assert (first["subtotal_cents"], first["total_amount_cents"]) == (2525, 2525)
    assert [f["amount_cents"] for f in latest["fees"]] == [1000, 0, 0]
    assert latest["total_amount_cents"] == 1000

    fetched = await tenant.http.get(f"/v1/invoices/{first['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == first

    by_query = (await tenant.http.get("/v1/invoices", params={"customer_id": customer})).json()
    assert by_query == listed
    everything = (await tenant.http.get("/v1/invoices")).json()
    assert [i["id"] for i in everything["invoices"]] == [latest["id"], first["id"]]


async def test_an_unknown_invoice_is_a_404(tenant: Tenant):
    response = await tenant.http.get("/v1/invoices/inv_nope")
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "id"


async def test_a_customer_without_invoices_lists_none(tenant: Tenant):
    response = await tenant.http.get(f"/v1/customers/{unique('cus')}/invoices")
    assert response.json() == {"invoices": [], "next_page_token": ""}


async def test_current_usage_prices_the_open_period(tenant: Tenant):
    customer, plan, sub = await subscribe(tenant, month_start(1))
    await send_usage(tenant, customer, plan, tokens=[12], calls=2)

    async def usage():
        response = await tenant.http.get(f"/v1/customers/{customer}/current_usage")
        assert response.status_code == 200
        body = response.json()
        assert body["subscriptions"], body
        return body

    body = await eventually(usage)
    assert body["customer_id"] == customer
    [current] = body["subscriptions"]
    assert (current["subscription_id"], current["plan_code"], current["currency"]) == (sub["id"], plan["code"], "USD")
    assert (current["period_start"], current["period_end"]) == (rfc3339(month_start(0)), rfc3339(month_start(-1)))
    calls, tokens = current["fees"]
    assert (calls["type"], calls["units"], calls["amount_cents"]) == ("charge", "2", 50)
    assert (tokens["units"], tokens["amount_cents"]) == ("12", 1300)
    assert [t["units"] for t in tokens["tiers"]] == ["10", "2"]
    assert current["amount_cents"] == 1350

    only = await tenant.http.get(f"/v1/customers/{customer}/current_usage", params={"subscription_id": sub["id"]})
    assert only.json() == body


async def test_current_usage_for_an_unknown_subscription_is_a_404(tenant: Tenant):
    response = await tenant.http.get("/v1/customers/cus_1/current_usage", params={"subscription_id": "sub_nope"})
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "subscription_id"


async def test_current_usage_of_a_customer_without_subscriptions_is_empty(tenant: Tenant):
    response = await tenant.http.get(f"/v1/customers/{unique('cus')}/current_usage")
    assert response.status_code == 200
    assert response.json()["subscriptions"] == []
