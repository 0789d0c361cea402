"""POST /v1/events/batch (207, queued) and POST /v1/events/backfill (207,
written before the answer) through the gateway: one result per item in order,
a bad item never blocks the others, every key counts once on every path."""

from __future__ import annotations

from tests.conftest import Tenant

MARCH = {"period_start": "2026-03-01T00:00:00Z", "period_end": "2026-04-01T00:00:00Z"}


def item(key: str, value: str = "1", **fields) -> dict:
    return {
        "idempotency_key": key,
        "customer_id": "cust_acme",
        "metric_key": "api_calls",
        "value": value,
        "timestamp": "2026-03-17T14:00:00Z",
        **fields,
    }


async def usage(tenant: Tenant) -> tuple[str, int]:
    metric = {"key": "api_calls", "aggregation_type": "sum", "value_type": "integer"}
    await tenant.http.post("/v1/metrics", json=metric)
    body = {"customer_id": "cust_acme", "metric_key": "api_calls", **MARCH}
    response = await tenant.http.post("/v1/usage/compute", json=body)
    assert response.status_code == 200, response.text
    return response.json()["value"], response.json()["events_count"]


async def test_a_batch_answers_each_item_and_stores_exactly_the_valid_ones(tenant: Tenant):
    events = [
        item("evt_001", "2"),
        item("evt_002", "abc"),  # not a decimal
        {"customer_id": "cust_acme", "metric_key": "api_calls"},  # no idempotency_key
        "not an object",
        item("evt_003", "3", properties={"region": "us-east-1"}),
        {"code": "api_calls", "customer_id": "cust_acme", "timestamp": "2999-01-01T00:00:00Z"},  # future
        item("evt_001", "5"),  # a retry within the batch
        None,
    ]
    response = await tenant.http.post("/v1/events/batch", json={"events": events})
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202, 400, 400, 400, 202, 400, 202, 400]
    assert results[0] == {"status": 202, "idempotency_key": "evt_001"}
    assert [results[i]["field"] for i in (1, 2, 3, 5, 7)] == [
        "events[1].value",
        "events[2].idempotency_key",
        "events[3]",
        "events[5].timestamp",
        "events[7]",
    ]
    assert results[7]["message"] == "events[7] must be an object"
    assert results[5]["reason"] == "TIMESTAMP_IN_FUTURE"
    assert await usage(tenant) == ("5", 2)


async def test_a_key_counts_once_across_single_batch_and_backfill(tenant: Tenant):
    assert (await tenant.http.post("/v1/events", json=item("k1", "10"))).status_code == 202
    batch = await tenant.http.post("/v1/events/batch", json={"events": [item("k1", "20"), item("k2", "1")]})
    assert [r["status"] for r in batch.json()["results"]] == [202, 202]
    backfill = await tenant.http.post("/v1/events/backfill", json={"events": [item("k2", "30"), item("k3", "100")]})
    assert backfill.status_code == 207
    assert backfill.json()["results"] == [
        {"status": 200, "idempotency_key": "k2", "result": "duplicate"},
        {"status": 200, "idempotency_key": "k3", "result": "created"},
    ]
    assert await usage(tenant) == ("111", 3)


async def test_backfilled_history_counts_at_once(tenant: Tenant):
    old = {"transaction_id": "hist_1", "customer_id": "cust_acme", "code": "api_calls", "value": "7"}
    response = await tenant.http.post(
        "/v1/events/backfill", json={"events": [{**old, "timestamp": "2026-03-02T00:00:00Z"}, {"code": "x"}]}
    )
    assert [r["status"] for r in response.json()["results"]] == [200, 400]
    assert response.json()["results"][0]["transaction_id"] == "hist_1"
    assert response.json()["results"][1]["field"] == "events[1].customer_id"
    assert await usage(tenant) == ("7", 1)


async def test_a_batch_of_only_bad_items_stores_nothing(tenant: Tenant):
    response = await tenant.http.post("/v1/events/batch", json={"events": [{"customer_id": "c"}, 1]})
    assert response.status_code == 207
    assert [(r["status"], r["field"]) for r in response.json()["results"]] == [
        (400, "events[0].code"),
        (400, "events[1]"),
    ]
    assert await usage(tenant) == ("0", 0)


async def test_a_batch_holds_1_to_500_events(tenant: Tenant):
    too_many = await tenant.http.post("/v1/events/batch", json={"events": [{}] * 501})
    assert too_many.status_code == 400
    assert too_many.json()["error"]["field"] == "events"
    assert "500" in too_many.json()["error"]["message"]
    for body in ({"events": []}, {"events": {}}, {}):
        response = await tenant.http.post("/v1/events/backfill", json=body)
        assert (response.status_code, response.json()["error"]["field"]) == (400, "events")


async def test_an_event_the_service_refuses_names_its_field(tenant: Tenant):
    response = await tenant.http.post(
        "/v1/events", json={"customer_id": "c", "code": "api", "timestamp": "2999-01-01T00:00:00Z"}
    )
    assert response.status_code == 400
    assert (response.json()["error"]["field"], response.json()["error"]["reason"]) == (
        "timestamp",
        "TIMESTAMP_IN_FUTURE",
    )
