"""Usage views and event listings through the gateway: GET /v1/usage/summary
(daily rollups, eventual) against POST /v1/usage/compute (exact), GET
/v1/usage/histogram, GET /v1/events and the rejected events."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant, eventually

MARCH = {"period_start": "2026-03-01T00:00:00Z", "period_end": "2026-04-01T00:00:00Z"}


def item(key: str, value: str = "1", at: str = "2026-03-17T14:00:00Z", **fields) -> dict:
    return {
        "idempotency_key": key,
        "customer_id": "cust_acme",
        "metric_key": "api_calls",
        "value": value,
        "timestamp": at,
        **fields,
    }


async def setup(tenant: Tenant, aggregation: str = "sum", **metric) -> None:
    body = {"key": "api_calls", "aggregation_type": aggregation, "value_type": "decimal", **metric}
    assert (await tenant.http.post("/v1/metrics", json=body)).status_code == 201
    customer = {"id": "cust_acme", "name": "Acme"}
    assert (await tenant.http.post("/v1/customers", json=customer)).status_code == 201


async def send(tenant: Tenant, *events: dict, path: str = "/v1/events/batch") -> list[dict]:
    response = await tenant.http.post(path, json={"events": list(events)})
    assert response.status_code == 207, response.text
    return response.json()["results"]


async def summary(tenant: Tenant, **window) -> dict:
    params = {"customer_id": "cust_acme", "metric_key": "api_calls", **MARCH, **window}
    response = await tenant.http.get("/v1/usage/summary", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def compute(tenant: Tenant, **window) -> str:
    body = {"customer_id": "cust_acme", "metric_key": "api_calls", **MARCH, **window}
    response = await tenant.http.post("/v1/usage/compute", json=body)
    assert response.status_code == 200, response.text
    return response.json()["value"]


async def test_the_seed_summary_is_eventual_and_agrees_with_compute(tenant: Tenant):
    await setup(tenant)
    await send(tenant, item("e1", "40000"), item("e2", "45000", at="2026-03-02T00:00:00Z"))

    async def caught_up():
        assert await summary(tenant) == {
            "customer_id": "cust_acme",
            "metric_key": "api_calls",
            **MARCH,
            "value": "85000",
            "events_count": 2,
            "meta": {"consistency": "eventual"},
        }

    await eventually(caught_up)
    assert await compute(tenant) == "85000"


async def test_whole_days_come_from_rollups_and_ragged_edges_from_events(tenant: Tenant):
    await setup(tenant)
    times = ["2026-03-01T05:00:00Z", "2026-03-01T23:59:59Z", "2026-03-02T00:00:00Z", "2026-03-05T12:00:00Z"]
    await send(tenant, *(item(f"e{n}", str(10**n), at=at) for n, at in enumerate(times)))
    windows = [
        ("2026-03-01T06:00:00Z", "2026-03-05T12:00:00Z", "110"),  # edges on both sides, day 2 whole
        ("2026-03-01T00:00:00Z", "2026-03-01T12:00:00Z", "1"),  # inside one day
        ("2026-03-01T23:00:00Z", "2026-03-06T00:00:00Z", "1110"),
        ("2026-03-02T00:00:00Z", "2026-03-02T00:00:01Z", "100"),  # one second
        ("2026-03-06T00:00:00Z", "2026-03-09T00:00:00Z", "0"),  # days without events
    ]
    for start, end, expected in windows:
        window = {"period_start": start, "period_end": end}

        async def caught_up(window=window, expected=expected):
            assert (await summary(tenant, **window))["value"] == expected

        await eventually(caught_up)
        assert await compute(tenant, **window) == expected


@pytest.mark.parametrize(
    ("aggregation", "field", "expected", "consistency"),
    [
        ("count", None, "4", "eventual"),
        ("sum", "tokens", "12.5", "eventual"),  # "x" is refused, not counted as 0
        ("max", "tokens", "7.5", "eventual"),
        ("unique_count", "region", "2", "eventual"),
        ("latest", "tokens", "3", "exact"),
        ("unique_count", None, "3", "eventual"),  # distinct top-level values
    ],
)
async def test_each_aggregation_summarizes_like_compute(
    tenant: Tenant, aggregation: str, field: str | None, expected: str, consistency: str
):
    await setup_bxb(tenant, aggregation, field)
    events = [
        event("t1", "2026-03-01T10:00:00Z", value="1", tokens="2", region="eu"),
        event("t2", "2026-03-03T10:00:00Z", value="2", tokens="7.5", region="us"),
        event("t3", "2026-03-04T10:00:00Z", value="2", tokens="x"),
        event("t4", "2026-03-09T10:00:00Z", value="5", tokens="3", region="eu"),
    ]
    statuses = [r["status"] for r in await send(tenant, *events)]
    numeric = field == "tokens" and aggregation != "unique_count"  # a number is read from "x": refused
    assert statuses == [202, 202, 400 if numeric else 202, 202]

    async def caught_up():
        answer = await summary(tenant)
        assert (answer["value"], answer["meta"]["consistency"]) == (expected, consistency)

    await eventually(caught_up)
    assert await compute(tenant) == expected


async def setup_bxb(tenant: Tenant, aggregation: str, field: str | None) -> None:
    """A bxb metric of a property, or an ABAXUS one fed by the top-level value."""
    body = {"code": "api_calls", "name": "API", "aggregation_type": aggregation, "field_name": field}
    if field is None:
        body = {"key": "api_calls", "aggregation_type": aggregation, "value_type": "decimal"}
    response = await tenant.http.post("/v1/billable_metrics" if field else "/v1/metrics", json=body)
    assert response.status_code in (200, 201), response.text
    assert (await tenant.http.post("/v1/customers", json={"id": "cust_acme"})).status_code == 201


def event(key: str, at: str, value: str, **properties: str) -> dict:
    return {
        "transaction_id": key,
        "customer_id": "cust_acme",
        "code": "api_calls",
        "timestamp": at,
        "value": value,
        "properties": properties,
    }


async def test_a_weighted_sum_summary_is_exact(tenant: Tenant):
    await setup_bxb(tenant, "weighted_sum", "seats")
    await send(tenant, event("s1", "2026-03-01T00:00:00Z", value="0", seats="10"))
    answer = await summary(tenant)
    assert (answer["value"], answer["meta"]["consistency"]) == ("10", "exact")


async def test_backfill_changes_compute_and_summary_together(tenant: Tenant):
    await setup(tenant)
    await send(tenant, item("live", "5"))
    await eventually(lambda: _expect(summary(tenant), "5"))
    results = await send(tenant, item("old1", "100", at="2026-03-02T08:00:00Z"), path="/v1/events/backfill")
    assert results[0]["result"] == "created"
    # No waiting: the backfill answered after the write, rollups included.
    assert (await summary(tenant))["value"] == "105"
    assert await compute(tenant) == "105"
    results = await send(tenant, item("old1", "999", at="2026-03-02T08:00:00Z"), path="/v1/events/backfill")
    assert results[0]["result"] == "duplicate"
    assert ((await summary(tenant))["value"], await compute(tenant)) == ("105", "105")


async def _expect(answer, value: str) -> None:
    assert (await answer)["value"] == value


async def test_summary_errors_name_the_parameter(tenant: Tenant):
    await setup(tenant)
    missing = await tenant.http.get("/v1/usage/summary", params={"customer_id": "cust_acme", **MARCH})
    assert (missing.status_code, missing.json()["error"]["field"]) == (400, "metric_key")
    unknown = await tenant.http.get("/v1/usage/summary", params={"customer_id": "cust_acme", "code": "nope", **MARCH})
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (404, "code")
    backwards = {"period_start": "2026-04-01T00:00:00Z", "period_end": "2026-03-01T00:00:00Z"}
    reversed_ = await tenant.http.get(
        "/v1/usage/summary", params={"customer_id": "cust_acme", "metric_key": "api_calls", **backwards}
    )
    assert (reversed_.status_code, reversed_.json()["error"]["field"]) == (400, "period_end")
    bad_time = await tenant.http.get(
        "/v1/usage/summary",
        params={"customer_id": "cust_acme", "metric_key": "api_calls", **MARCH, "period_start": "yesterday"},
    )
    assert (bad_time.status_code, bad_time.json()["error"]["field"]) == (400, "period_start")


async def test_histogram_buckets_by_hour_and_by_property(tenant: Tenant):
    await setup(tenant)
    await send(
        tenant,
        item("h1", "1", at="2026-03-17T14:05:00Z", properties={"region": "eu"}),
        item("h2", "2", at="2026-03-17T14:55:00Z", properties={"region": "us"}),
        item("h3", "4", at="2026-03-17T16:00:00Z", properties={"region": "eu"}),
        item("h4", "8", at="2026-03-18T00:00:00Z"),
    )
    params = {"customer_id": "cust_acme", "metric_key": "api_calls", **MARCH, "interval": "hour"}
    response = await tenant.http.get("/v1/usage/histogram", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["interval"], body["group_by"]) == ("hour", None)
    assert body["buckets"] == [
        {"start": "2026-03-17T14:00:00Z", "end": "2026-03-17T15:00:00Z", "value": "3", "events_count": 2},
        {"start": "2026-03-17T16:00:00Z", "end": "2026-03-17T17:00:00Z", "value": "4", "events_count": 1},
        {"start": "2026-03-18T00:00:00Z", "end": "2026-03-18T01:00:00Z", "value": "8", "events_count": 1},
    ]
    grouped = await tenant.http.get("/v1/usage/histogram", params={**params, "interval": "day", "group_by": "region"})
    assert [(b["start"], b["group"], b["value"]) for b in grouped.json()["buckets"]] == [
        ("2026-03-17T00:00:00Z", "eu", "5"),
        ("2026-03-17T00:00:00Z", "us", "2"),
        ("2026-03-18T00:00:00Z", "", "8"),
    ]


@pytest.mark.parametrize(
    ("aggregation", "field", "expected"),
    [("count", None, ["2", "1"]), ("max", "tokens", ["7", "1"]), ("unique_count", "region", ["1", "1"])],
)
async def test_histogram_reduces_each_bucket_like_the_metric(
    tenant: Tenant, aggregation: str, field: str | None, expected: list[str]
):
    await setup_bxb(tenant, aggregation, field)
    await send(
        tenant,
        event("a", "2026-03-01T00:00:01Z", value="1", tokens="7", region="eu"),
        event("b", "2026-03-01T00:00:59Z", value="1", tokens="2", region="eu"),
        event("c", "2026-03-01T00:01:00Z", value="1", tokens="1", region="us"),
    )
    day = {"period_start": "2026-03-01T00:00:00Z", "period_end": "2026-03-02T00:00:00Z"}
    params = {"customer_id": "cust_acme", "metric_key": "api_calls", **day, "interval": "minute"}
    response = await tenant.http.get("/v1/usage/histogram", params=params)
    assert response.status_code == 200, response.text
    assert [b["value"] for b in response.json()["buckets"]] == expected


async def test_histogram_refusals_name_the_parameter(tenant: Tenant):
    await setup(tenant)
    base = {"customer_id": "cust_acme", "metric_key": "api_calls", **MARCH}
    cases = [
        ({**base}, "interval"),  # required
        ({**base, "interval": "week"}, "interval"),
        ({**base, "interval": "minute"}, "interval"),  # 44,640 buckets
        ({**base, "interval": "day", "colour": "red"}, "colour"),
    ]
    for params, field in cases:
        response = await tenant.http.get("/v1/usage/histogram", params=params)
        assert (response.status_code, response.json()["error"]["field"]) == (400, field), response.text
    assert "10080" in (await tenant.http.get("/v1/usage/histogram", params=cases[2][0])).json()["error"]["message"]


async def test_a_weighted_sum_has_no_histogram(tenant: Tenant):
    await setup_bxb(tenant, "weighted_sum", "seats")
    params = {"customer_id": "cust_acme", "metric_key": "api_calls", **MARCH, "interval": "day"}
    response = await tenant.http.get("/v1/usage/histogram", params=params)
    error = response.json()["error"]
    assert (response.status_code, error["reason"], error["field"]) == (400, "UNSUPPORTED_AGGREGATION", "aggregation")


async def test_events_are_listed_most_recent_first_page_by_page(tenant: Tenant):
    await setup(tenant)
    times = [f"2026-03-{day:02d}T00:00:00Z" for day in (3, 1, 2)]
    await send(tenant, *(item(f"e{n}", at=at) for n, at in enumerate(times)))
    await send(tenant, item("other", customer_id="cust_other"), item("calls", metric_key="storage"))
    first = await tenant.http.get("/v1/events", params={"customer_id": "cust_acme", "page_size": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [e["transaction_id"] for e in page["events"]] == ["calls", "e0"]
    assert page["events"][1]["status"] == "accepted" and page["events"][1]["timestamp"] == "2026-03-03T00:00:00Z"
    rest = await tenant.http.get(
        "/v1/events", params={"customer_id": "cust_acme", "page_size": 2, "page_token": page["next_page_token"]}
    )
    assert [e["transaction_id"] for e in rest.json()["events"]] == ["e2", "e1"]
    assert rest.json()["next_page_token"] == ""
    by_metric = await tenant.http.get("/v1/events", params={"metric_key": "storage"})
    assert [e["transaction_id"] for e in by_metric.json()["events"]] == ["calls"]
    by_key = await tenant.http.get("/v1/events", params={"idempotency_key": "other"})
    assert [e["customer_id"] for e in by_key.json()["events"]] == ["cust_other"]
    assert len((await tenant.http.get("/v1/events")).json()["events"]) == 5


async def test_listing_refusals_name_the_parameter(tenant: Tenant):
    cases = [
        ({"status": "lost"}, "status"),
        ({"page_size": "many"}, "page_size"),
        ({"page_token": "garbage"}, "page_token"),
        ({"metric_key": "a", "code": "b"}, "code"),
        ({"status": "rejected", "idempotency_key": "k"}, "status"),
    ]
    for params, field in cases:
        response = await tenant.http.get("/v1/events", params=params)
        assert (response.status_code, response.json()["error"]["field"]) == (400, field), response.text


async def test_rejected_events_are_listed_with_why(tenant: Tenant):
    await setup(tenant)
    results = await send(
        tenant,
        item("ok", "1"),
        item("bad_value", "abc"),
        item("future", at="2999-01-01T00:00:00Z"),
        item("typo", metric_key="api_callz"),
        item("stranger", customer_id="cust_nobody"),
        7,
    )
    assert [r["status"] for r in results] == [202, 400, 400, 202, 202, 400]
    response = await tenant.http.get("/v1/events", params={"status": "rejected"})
    assert response.status_code == 200, response.text
    listed = {(e["transaction_id"], e["reason"], e["field"], e["stored"]) for e in response.json()["events"]}
    assert listed == {
        ("bad_value", "INVALID_VALUE", "value", False),
        ("future", "TIMESTAMP_IN_FUTURE", "timestamp", False),
        ("typo", "UNKNOWN_METRIC", "code", True),
        ("stranger", "CUSTOMER_NOT_FOUND", "customer_id", True),
        ("", "INVALID_TYPE", None, False),
    }
    by_key = {e["transaction_id"]: e for e in response.json()["events"]}
    assert by_key["bad_value"]["body"].startswith('{"idempotency_key":"bad_value"')
    assert by_key["bad_value"]["message"] == "value must be a decimal number, got 'abc'"
    assert by_key[""]["message"].startswith("the event ")
    assert by_key["typo"]["body"] is None and by_key["typo"]["status"] == "rejected"
    assert "counts once it does" in by_key["stranger"]["message"]
    # The stranger's event is kept: it counts for its customer.
    stranger = {"customer_id": "cust_nobody", "metric_key": "api_calls", **MARCH}
    assert (await tenant.http.post("/v1/usage/compute", json=stranger)).json()["value"] == "1"
    typos = await tenant.http.get("/v1/events", params={"status": "rejected", "metric_key": "api_callz"})
    assert [e["transaction_id"] for e in typos.json()["events"]] == ["typo"]
    strangers = await tenant.http.get("/v1/events", params={"status": "rejected", "customer_id": "cust_nobody"})
    assert [e["transaction_id"] for e in strangers.json()["events"]] == ["stranger"]


async def test_a_batch_of_only_refused_items_is_still_listed(tenant: Tenant):
    results = await send(tenant, {"customer_id": "c"}, "x")
    assert [r["status"] for r in results] == [400, 400]
    listed = (await tenant.http.get("/v1/events", params={"status": "rejected", "page_size": 1})).json()
    assert len(listed["events"]) == 1 and listed["next_page_token"]


async def test_a_single_event_refused_by_metering_is_listed(tenant: Tenant):
    response = await tenant.http.post("/v1/events", json=item("soon", at="2999-01-01T00:00:00Z"))
    assert response.status_code == 400
    listed = (await tenant.http.get("/v1/events", params={"status": "rejected"})).json()["events"]
    assert [(e["transaction_id"], e["reason"]) for e in listed] == [("soon", "TIMESTAMP_IN_FUTURE")]


async def test_another_organization_sees_none_of_it(tenant: Tenant, make_tenant):
    await setup(tenant)
    await send(tenant, item("mine", "3"), item("bad", "abc"))
    await eventually(lambda: _expect(summary(tenant), "3"))
    other = await make_tenant()
    await setup(other)
    assert (await summary(other))["value"] == "0"
    assert (await other.http.get("/v1/events")).json()["events"] == []
    assert (await other.http.get("/v1/events", params={"status": "rejected"})).json()["events"] == []
    histogram = {"customer_id": "cust_acme", "metric_key": "api_calls", **MARCH, "interval": "day"}
    assert (await other.http.get("/v1/usage/histogram", params=histogram)).json()["buckets"] == []
    await other.http.aclose()


async def test_a_single_event_refused_by_the_gateway_is_listed_with_its_body(tenant: Tenant):
    bad_value = await tenant.http.post("/v1/events", json=item("shaky", "lots"))
    assert (bad_value.status_code, bad_value.json()["error"]["field"]) == (400, "value")
    not_an_object = await tenant.http.post("/v1/events", json=[1, 2])
    assert not_an_object.status_code == 400
    listed = (await tenant.http.get("/v1/events", params={"status": "rejected"})).json()["events"]
    assert [(e["transaction_id"], e["reason"], e["field"], e["body"]) for e in listed] == [
        ("", "INVALID_TYPE", None, "[1,2]"),
        ("shaky", "INVALID_VALUE", "value", listed[1]["body"]),
    ]
    assert '"value":"lots"' in listed[1]["body"] and listed[1]["stored"] is False
