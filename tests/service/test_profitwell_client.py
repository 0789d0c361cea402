"""The typed ProfitWell client over real HTTP (the fake): requests and
answers, the bare-token auth, and Django REST Framework's error shapes read
into the typed errors' messages."""

from __future__ import annotations

import pytest

from services.payments import profitwell_client as pw
from services.payments.vendor_http import Missing, Refused, Retryable, Unauthorized
from tests.profitwell_fake import ProfitWellAccount, ProfitWellFake


@pytest.fixture
def account(profitwell_fake: ProfitWellFake) -> ProfitWellAccount:
    return profitwell_fake.add_account()


async def test_requests_and_answers(profitwell_fake: ProfitWellFake, account: ProfitWellAccount) -> None:
    new = pw.NewSubscription("cus 7", "sub_7", "a@b.test", "pro_v1", "month", "eur", 2500, 1740000000, pw.TRIALING)
    async with pw.profitwell(profitwell_fake.url, account.api_key, 5) as client:
        await client.check()
        created = await client.create_subscription(new)
        changed = await client.update_subscription("sub_7", pw.SubscriptionChange("pro_v1", "month", 2500, 1741000000))
        await client.churn_subscription("sub_7", 1750000000)
        history = await client.history("cus 7")
        await client.update_user("cus 7", "c@d.test")
    assert (created.user_alias, created.subscription_alias, created.status) == ("cus 7", "sub_7", "trialing")
    assert created.user_id.startswith("pwu_") and created.subscription_id.startswith("pws_")
    assert changed.status == "active"
    assert [(h.status, h.effective_date) for h in history] == [
        ("trialing", 1740000000),
        ("active", 1741000000),
        ("churned_voluntary", 1750000000),
    ]
    assert [(r.method, r.path, r.query) for r in profitwell_fake.requests[-6:]] == [
        ("GET", "/v2/api-status/", {}),
        ("POST", "/v2/subscriptions/", {}),
        ("PUT", "/v2/subscriptions/sub_7/", {}),
        ("DELETE", "/v2/subscriptions/sub_7/", {"effective_date": "1750000000", "churn_type": "voluntary"}),
        ("GET", "/v2/users/cus%207/", {}),
        ("PUT", "/v2/users/cus%207/", {}),
    ]
    assert {r.authorization for r in profitwell_fake.requests[-6:]} == {account.api_key}


async def test_error_shapes(profitwell_fake: ProfitWellFake, account: ProfitWellAccount) -> None:
    bad = pw.NewSubscription("u", "x" * 37, "nope", "p", "week", "usd", -1, 1740000000)
    async with pw.profitwell(profitwell_fake.url, account.api_key, 5) as client:
        with pytest.raises(Refused) as fields:
            await client.create_subscription(bad)
        with pytest.raises(Missing) as missing:
            await client.history("nobody")
        profitwell_fake.fail(400, path="/v2/users/", body=["not", "an", "object"])
        with pytest.raises(Refused) as listed:
            await client.update_user("u", "a@b.test")
    assert fields.value.message == (
        "POST /v2/subscriptions/: 400 email: Enter a valid email address.; "
        "plan_interval: Must be one of: month, year.; value: A valid integer is required.; "
        "subscription_alias: Ensure this field has no more than 36 characters."
    )
    assert missing.value.message == "GET /v2/users/nobody/: 404 detail: Not found."
    assert listed.value.message == 'PUT /v2/users/u/: 400 ["not","an","object"]'
    async with pw.profitwell(profitwell_fake.url, "", 5) as client:
        with pytest.raises(Unauthorized) as anonymous:
            await client.check()
    assert anonymous.value.message.endswith("401 detail: Authentication credentials were not provided.")


async def test_throttling_is_retryable(profitwell_fake: ProfitWellFake, account: ProfitWellAccount) -> None:
    profitwell_fake.fail(429, path="/v2/api-status/", body={"detail": "Request was throttled."})
    async with pw.profitwell(profitwell_fake.url, account.api_key, 5) as client:
        with pytest.raises(Retryable) as throttled:
            await client.check()
    assert throttled.value.retryable and throttled.value.status_code == 429
