"""The typed Baremetrics client over real HTTP (the fake): requests and
answers, and how every failure maps to a typed error that says whether
retrying can help (services/payments/vendor_http)."""

from __future__ import annotations

import pytest

from deploy.embedded import free_port
from services.payments import baremetrics_client as bm
from services.payments.vendor_http import Missing, Refused, Retryable, Unauthorized, VendorError
from tests.baremetrics_fake import BaremetricsAccount, BaremetricsFake


@pytest.fixture
def account(baremetrics_fake: BaremetricsFake) -> BaremetricsAccount:
    return baremetrics_fake.add_account()


async def test_requests_and_answers(baremetrics_fake: BaremetricsFake, account: BaremetricsAccount) -> None:
    src = account.source_id
    async with bm.baremetrics(baremetrics_fake.url, account.api_key, 5) as client:
        sources = await client.sources()
        plan = await client.create_plan(src, bm.PlanRequest("basic_v1", "Basic", "usd", 1000, "month", 1))
        customer = await client.create_customer(src, bm.CustomerRequest("cus/1", "Ann", "ann@x.test", 1740000000))
        event = await client.create_subscription(src, bm.SubscriptionRequest("sub 1", "cus/1", "basic_v1", 1740000000))
        cancel = await client.cancel_subscription(src, "sub 1", 1750000000)
        subscription = await client.subscription(src, "sub 1")
        charge = await client.create_charge(src, bm.ChargeRequest("inv_1", 1000, "usd", "cus/1", 1740000000))
        refund = await client.create_refund(src, bm.RefundRequest("cn_1", 400, "usd", "cus/1", "inv_1", 1741000000))
    assert bm.Source(src, "baremetrics", None) in sources
    assert plan == bm.Plan("basic_v1", "Basic", "month", 1)
    assert customer == bm.Customer("cus/1", "Ann", "ann@x.test")
    assert (event.type, cancel.type) == ("subscription.created", "subscription.canceled")
    assert subscription == bm.Subscription("sub 1", "cus/1", "basic_v1", 1740000000, 1750000000)
    assert charge == bm.Charge("inv_1", "paid", 1000, "USD")
    assert refund == bm.Refund("cn_1", 400)
    # Our ids are path segments, quoted: a space or a slash stays in the id.
    assert [r.path for r in baremetrics_fake.requests[-4:-1]] == [
        f"/v1/{src}/subscriptions/sub%201/cancel",
        f"/v1/{src}/subscriptions/sub%201",
        f"/v1/{src}/charges",
    ]
    async with bm.baremetrics(baremetrics_fake.url, account.api_key, 5) as client:
        assert await client.customer(src, "cus/1") == customer
    assert baremetrics_fake.requests[-1].path == f"/v1/{src}/customers/cus%2F1"
    assert baremetrics_fake.requests[-1].authorization == f"Bearer {account.api_key}"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, Refused),
        (401, Unauthorized),
        (403, Unauthorized),
        (404, Missing),
        (409, Refused),
        (422, Refused),
        (429, Retryable),
        (500, Retryable),
        (502, Retryable),
        (503, Retryable),
    ],
)
async def test_statuses_map_to_typed_errors(
    baremetrics_fake: BaremetricsFake, account: BaremetricsAccount, status: int, error: type[VendorError]
) -> None:
    baremetrics_fake.fail(status, path="/v1/sources", body={"error": "Error message here"})
    async with bm.baremetrics(baremetrics_fake.url, account.api_key, 5) as client:
        with pytest.raises(VendorError) as raised:
            await client.sources()
    assert type(raised.value) is error
    assert raised.value.retryable is (error is Retryable)
    assert raised.value.status_code == status
    assert raised.value.message == f"GET /v1/sources: {status} Error message here"
    assert raised.value.snippet == '{"error":"Error message here"}'


async def test_answers_that_are_not_json(baremetrics_fake: BaremetricsFake, account: BaremetricsAccount) -> None:
    baremetrics_fake.fail(502, path="/v1/sources", body="<h1>Bad Gateway</h1>")
    baremetrics_fake.fail(400, path="/v1/sources", body="")
    async with bm.baremetrics(baremetrics_fake.url, account.api_key, 5) as client:
        with pytest.raises(Retryable) as page:
            await client.sources()
        with pytest.raises(Refused) as empty:
            await client.sources()
    assert page.value.message == "GET /v1/sources: 502 <h1>Bad Gateway</h1>"
    assert empty.value.message == "GET /v1/sources: 400 Bad Request"


async def test_no_answer_in_time_is_retryable(baremetrics_fake: BaremetricsFake, account: BaremetricsAccount) -> None:
    baremetrics_fake.lose_answer(path="/v1/sources")
    async with bm.baremetrics(baremetrics_fake.url, account.api_key, 0.3) as client:
        with pytest.raises(Retryable) as late:
            await client.sources()
    assert late.value.status_code == 0 and "ReadTimeout" in late.value.message


async def test_no_connection_is_retryable() -> None:
    async with bm.baremetrics(f"http://127.0.0.1:{free_port()}", "bm_key", 2) as client:
        with pytest.raises(Retryable) as refused:
            await client.sources()
    assert "ConnectError" in refused.value.message
