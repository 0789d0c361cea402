"""/v1/events in both spellings: bxb (`code`, optional `transaction_id`, 200)
and ABAXUS (`metric_key`, mandatory `idempotency_key`, 202), one key space."""

from __future__ import annotations

from tests.conftest import Tenant

ABAXUS_EVENT = {
    "customer_id": "cust_acme",
    "subscription_id": "sub_a1b2c3",
    "metric_key": "api_calls",
    "value": "1",
    "timestamp": "2026-03-17T14:00:00Z",
    "idempotency_key": "evt_req_abc123",
    "properties": {"region": "us-east-1"},
}


async def test_the_abaxus_event_is_accepted_with_202_and_deduplicated(tenant: Tenant):
    first = await tenant.http.post("/v1/events", json=ABAXUS_EVENT)
    assert first.status_code == 202, first.text
    assert first.json() == {"idempotency_key": "evt_req_abc123", "status": "accepted"}
    retry = await tenant.http.post("/v1/events", json=ABAXUS_EVENT)
    assert retry.status_code == 202
    assert retry.json()["status"] == "accepted"  # skipped when stored
    stored = (await tenant.http.get("/v1/events/evt_req_abc123")).json()
    assert (stored["code"], stored["value"], stored["subscription_id"]) == ("api_calls", "1", "sub_a1b2c3")
    assert stored["properties"] == {"region": "us-east-1"}


async def test_both_spellings_share_one_key_space(tenant: Tenant):
    await tenant.http.post("/v1/events", json=ABAXUS_EVENT)
    bxb = {"transaction_id": "evt_req_abc123", "customer_id": "cust_acme", "code": "api_calls"}
    response = await tenant.http.post("/v1/events", json=bxb)
    assert response.status_code == 200
    assert response.json() == {"transaction_id": "evt_req_abc123", "status": "accepted"}
    stored = (await tenant.http.get("/v1/events/evt_req_abc123")).json()
    assert stored["code"] == "api_calls"  # the first spelling's event, counted once


async def test_an_abaxus_event_without_idempotency_key_is_refused(tenant: Tenant):
    body = {k: v for k, v in ABAXUS_EVENT.items() if k != "idempotency_key"}
    response = await tenant.http.post("/v1/events", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "idempotency_key"


async def test_a_bxb_event_without_transaction_id_or_timestamp_gets_both_from_the_server(tenant: Tenant):
    body = {"customer_id": "cus_9a4b2", "code": "api_requests", "properties": {"tokens": 250000}}
    response = await tenant.http.post("/v1/events", json=body)
    assert response.status_code == 200
    txn = response.json()["transaction_id"]
    assert txn and response.json()["status"] == "accepted"
    stored = (await tenant.http.get(f"/v1/events/{txn}")).json()
    assert stored["timestamp"] is not None and stored["timestamp"] <= stored["ingested_at"]
    again = await tenant.http.post("/v1/events", json=body)
    assert again.json()["transaction_id"] != txn  # a new event, not a duplicate


async def test_naming_the_metric_or_the_key_twice_is_refused(tenant: Tenant):
    both_codes = {"customer_id": "c", "code": "a", "metric_key": "a", "idempotency_key": "k"}
    response = await tenant.http.post("/v1/events", json=both_codes)
    assert (response.status_code, response.json()["error"]["field"]) == (400, "metric_key")
    both_keys = {"customer_id": "c", "code": "a", "transaction_id": "k", "idempotency_key": "k"}
    response = await tenant.http.post("/v1/events", json=both_keys)
    assert (response.status_code, response.json()["error"]["field"]) == (400, "idempotency_key")


async def test_an_event_without_a_metric_is_refused(tenant: Tenant):
    response = await tenant.http.post("/v1/events", json={"customer_id": "c", "transaction_id": "k"})
    assert (response.status_code, response.json()["error"]["field"]) == (400, "code")
