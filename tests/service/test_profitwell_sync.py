"""The ProfitWell sink against the ProfitWell fake: the exact requests each
public event makes (subscriptions and their lifecycle; ProfitWell has no
charges), idempotency across retries, which failures are retried and which
are final, connecting, and values in 0- and 3-decimal currencies."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import pytest

from services.common import peers
from services.common.errors import InvalidArgument, Unavailable
from services.payments.profitwell import ProfitWell
from services.payments.sinks import Account, Sent, Sink
from services.payments.vendors import VendorSettings, vendors
from tests.profitwell_fake import ProfitWellAccount, ProfitWellFake
from tests.service.vendor_payloads import T0, announcement, customer, plan, subscription, unix


@pytest.fixture
def account(profitwell_fake: ProfitWellFake) -> ProfitWellAccount:
    return profitwell_fake.add_account()


def tool(fake: ProfitWellFake, timeout: float = 5) -> ProfitWell:
    return ProfitWell(fake.url, timeout)


def sink(fake: ProfitWellFake, account: ProfitWellAccount, timeout: float = 5) -> Sink:
    return tool(fake, timeout).sink(Account("org_vendors", account.api_key, ""))


def calls(fake: ProfitWellFake, account: ProfitWellAccount) -> list[tuple[str, str, object]]:
    """What the account's token sent: (method, path with its query, body)."""
    mine = [r for r in fake.requests if r.authorization == account.api_key]
    return [(r.method, r.path + (f"?{urlencode(r.query)}" if r.query else ""), r.body) for r in mine]


def ok(sent: Sent) -> None:
    assert sent.succeeded, sent
    assert not sent.permanent


def started_event(cus: dict, sub: dict, on: dict, *, with_customer: bool = True, at=T0):  # type: ignore[no-untyped-def]
    data = {"subscription": sub, "plan": on} | ({"customer": cus} if with_customer else {})
    return announcement("subscription.started", data, cus["id"], at=at)


def test_registered_with_what_it_syncs() -> None:
    tools = vendors(VendorSettings(profitwell_api_base="http://127.0.0.1:9"), peers.Catalog("127.0.0.1:9"))
    profitwell = tools["profitwell"]
    assert profitwell.name == "profitwell"
    assert "subscription.trial_ended" in profitwell.accepts
    assert not {"payment.succeeded", "payment.refunded", "credit_note.created", "customer.created"} & profitwell.accepts


async def test_subscription_started(profitwell_fake: ProfitWellFake, account: ProfitWellAccount) -> None:
    cus = customer(email="billing@acme.test")
    on = plan("pro", version=2, amount_cents=4900)
    sub = subscription(cus["id"], on)
    sent = await sink(profitwell_fake, account).send(started_event(cus, sub, on))
    ok(sent)
    assert sent.status_code == 201
    assert calls(profitwell_fake, account) == [
        (
            "POST",
            "/v2/subscriptions/",
            {
                "user_alias": cus["id"],
                "subscription_alias": sub["id"],
                "email": "billing@acme.test",
                "plan_id": "pro_v2",
                "plan_interval": "month",
                "plan_currency": "usd",
                "value": 4900,
                "effective_date": unix(T0),
                "status": "active",
            },
        )
    ]
    (user,) = account.users.values()
    assert user.user_alias == cus["id"] and [s["subscription_alias"] for s in user.history] == [sub["id"]]


async def test_a_trial_then_its_conversion(profitwell_fake: ProfitWellFake, account: ProfitWellAccount) -> None:
    cus = customer()
    on = plan("team", version=1, interval="yearly", amount_cents=99000, trial_days=14)
    trial_end = T0 + timedelta(days=14)
    sub = subscription(cus["id"], on, trial_end=trial_end)
    ok(await sink(profitwell_fake, account).send(started_event(cus, sub, on)))
    ended = {"subscription_id": sub["id"], "customer_id": cus["id"], "trial_end_time": "2025-03-17T09:30:00Z"}
    converted = announcement("subscription.trial_ended", ended, cus["id"], at=trial_end)
    ok(await sink(profitwell_fake, account).send(converted))
    again = await sink(profitwell_fake, account).send(converted)  # a retry: converted already
    ok(again)

    assert calls(profitwell_fake, account)[0][2]["status"] == "trialing"  # type: ignore[index]
    assert calls(profitwell_fake, account)[1:] == [
        ("GET", f"/v2/users/{cus['id']}/", None),
        (
            "PUT",
            f"/v2/subscriptions/{sub['id']}/",
            {
                "plan_id": "team_v1",
                "plan_interval": "year",
                "value": 99000,
                "effective_date": unix(trial_end),
                "status": "active",
            },
        ),
        ("GET", f"/v2/users/{cus['id']}/", None),
    ]
    assert again.status_code == 200 and again.response_snippet.startswith("[")
    (user,) = account.users.values()
    assert [h["status"] for h in user.history] == ["trialing", "active"]


async def test_a_trial_over_when_announced_starts_active(
    profitwell_fake: ProfitWellFake, account: ProfitWellAccount
) -> None:
    """A resync announces a subscription as it stands now: its trial is over."""
    cus = customer()
    on = plan(trial_days=14)
    sub = subscription(cus["id"], on, trial_end=T0 + timedelta(days=14))
    ok(await sink(profitwell_fake, account).send(started_event(cus, sub, on, at=T0 + timedelta(days=60))))
    assert calls(profitwell_fake, account)[0][2]["status"] == "active"  # type: ignore[index]


async def test_converting_what_is_not_there_is_final(
    profitwell_fake: ProfitWellFake, account: ProfitWellAccount
) -> None:
    ended = {"subscription_id": "sub_unknown", "customer_id": "nobody", "trial_end_time": "2025-03-17T09:30:00Z"}
    sent = await sink(profitwell_fake, account).send(announcement("subscription.trial_ended", ended, "nobody"))
    assert not sent.succeeded and sent.permanent and "sub_unknown is not at ProfitWell" in sent.error


async def test_a_customers_next_subscription_takes_its_known_email(
    profitwell_fake: ProfitWellFake, account: ProfitWellAccount
) -> None:
    cus = customer(email="ops@acme.test")
    first = subscription(cus["id"], plan())
    ok(await sink(profitwell_fake, account).send(started_event(cus, first, plan())))
    addon = plan("seats", version=1, amount_cents=1000)
    second = subscription(cus["id"], addon)
    ok(await sink(profitwell_fake, account).send(started_event(cus, second, addon, with_customer=False)))
    assert calls(profitwell_fake, account)[1][:2] == ("GET", f"/v2/users/{cus['id']}/")
    assert calls(profitwell_fake, account)[2][2]["email"] == "ops@acme.test"  # type: ignore[index]
    (user,) = account.users.values()
    assert len(user.history) == 2


async def test_no_email_anywhere_is_final(profitwell_fake: ProfitWellFake, account: ProfitWellAccount) -> None:
    cus = customer()
    sent = await sink(profitwell_fake, account).send(
        started_event(cus, subscription(cus["id"], plan()), plan(), with_customer=False)
    )
    assert not sent.succeeded and sent.permanent and "needs an email" in sent.error
    assert [c[0] for c in calls(profitwell_fake, account)] == ["GET"] and account.users == {}


@pytest.mark.parametrize("interval", ["weekly", "quarterly"])
async def test_plans_profitwell_cannot_hold_are_final(
    profitwell_fake: ProfitWellFake, account: ProfitWellAccount, interval: str
) -> None:
    cus = customer()
    on = plan(interval=interval)
    sent = await sink(profitwell_fake, account).send(started_event(cus, subscription(cus["id"], on), on))
    assert not sent.succeeded and sent.permanent and f"not {interval}" in sent.error
    assert calls(profitwell_fake, account) == []


async def test_terminated_churns_once(profitwell_fake: ProfitWellFake, account: ProfitWellAccount) -> None:
    cus = customer()
    sub = subscription(cus["id"], plan())
    ok(await sink(profitwell_fake, account).send(started_event(cus, sub, plan())))
    ended = dict(sub, status="terminated", terminated_at="2025-06-03T00:00:00Z")
    churn = announcement("subscription.terminated", {"subscription": ended}, cus["id"])
    ok(await sink(profitwell_fake, account).send(churn))
    ok(await sink(profitwell_fake, account).send(churn))
    delete = ("DELETE", f"/v2/subscriptions/{sub['id']}/?effective_date=1748908800&churn_type=voluntary", None)
    assert calls(profitwell_fake, account)[1:] == [delete, delete, ("GET", f"/v2/users/{cus['id']}/", None)]
    (user,) = account.users.values()
    assert [h["status"] for h in user.history] == ["active", "churned_voluntary"]


async def test_churning_what_is_not_there_is_final(profitwell_fake: ProfitWellFake, account: ProfitWellAccount) -> None:
    cus = customer()
    sub = subscription(cus["id"], plan(), terminated=T0)
    sent = await sink(profitwell_fake, account).send(
        announcement("subscription.terminated", {"subscription": sub}, cus["id"])
    )
    assert not sent.succeeded and sent.permanent and sent.status_code == 404
    assert "detail: Not found." in sent.error


async def test_a_plan_change_churns_the_subscription_that_ends(
    profitwell_fake: ProfitWellFake, account: ProfitWellAccount
) -> None:
    cus = customer()
    old = subscription(cus["id"], plan())
    ok(await sink(profitwell_fake, account).send(started_event(cus, old, plan())))
    change = T0 + timedelta(days=45)
    bigger = plan("scale", version=1, amount_cents=19900)
    successor = subscription(cus["id"], bigger, start=change, previous=old["id"])
    ended = dict(old, status="terminated", terminated_at="2025-04-17T09:30:00Z", next_subscription_id=successor["id"])
    sinks = sink(profitwell_fake, account)
    ok(await sinks.send(started_event(cus, successor, bigger)))
    ok(await sinks.send(announcement("subscription.plan_changed", {"subscription": successor}, cus["id"])))
    ok(await sinks.send(announcement("subscription.plan_changed", {"subscription": ended}, cus["id"])))

    subs = {s["subscription_alias"]: s for s in account.subscriptions.values()}
    assert subs[old["id"]]["status"] == "churned_voluntary" and subs[old["id"]]["effective_date"] == unix(change)
    assert subs[successor["id"]]["status"] == "active" and subs[successor["id"]]["value"] == 19900


async def test_customer_updated_sets_the_users_email(
    profitwell_fake: ProfitWellFake, account: ProfitWellAccount
) -> None:
    cus = customer(email="old@acme.test")
    before = await sink(profitwell_fake, account).send(announcement("customer.updated", {"customer": cus}, cus["id"]))
    ok(before)  # no user yet: nothing to change
    assert before.status_code == 404
    ok(await sink(profitwell_fake, account).send(started_event(cus, subscription(cus["id"], plan()), plan())))
    cus["email"] = "new@acme.test"
    ok(await sink(profitwell_fake, account).send(announcement("customer.updated", {"customer": cus}, cus["id"])))
    cus["email"] = ""
    nothing = await sink(profitwell_fake, account).send(announcement("customer.updated", {"customer": cus}, cus["id"]))
    assert nothing == Sent(True, 0, nothing.latency_ms, "no email to set")
    assert calls(profitwell_fake, account)[-1] == ("PUT", f"/v2/users/{cus['id']}/", {"email": "new@acme.test"})
    (user,) = account.users.values()
    assert user.email == "new@acme.test"


@pytest.mark.parametrize(("currency", "amount"), [("JPY", 5000), ("KWD", 12345), ("BHD", 7500)])
async def test_values_are_minor_units_unchanged(
    profitwell_fake: ProfitWellFake, account: ProfitWellAccount, currency: str, amount: int
) -> None:
    cus = customer()
    on = plan(amount_cents=amount, currency=currency)
    ok(await sink(profitwell_fake, account).send(started_event(cus, subscription(cus["id"], on), on)))
    (sub,) = account.subscriptions.values()
    assert (sub["value"], sub["plan_currency"]) == (amount, currency.lower())


async def test_a_lost_answer_is_retried_without_a_duplicate(
    profitwell_fake: ProfitWellFake, account: ProfitWellAccount
) -> None:
    cus = customer()
    sub = subscription(cus["id"], plan())
    outgoing = started_event(cus, sub, plan())
    profitwell_fake.lose_answer(method="POST", path="/v2/subscriptions/")
    lost = await sink(profitwell_fake, account, timeout=0.5).send(outgoing)
    assert not lost.succeeded and not lost.permanent and "no answer" in lost.error
    ok(await sink(profitwell_fake, account).send(outgoing))
    assert [s["subscription_alias"] for s in account.subscriptions.values()] == [sub["id"]]
    assert [c[:2] for c in calls(profitwell_fake, account)] == [
        ("POST", "/v2/subscriptions/"),
        ("POST", "/v2/subscriptions/"),  # refused: the alias is taken
        ("GET", f"/v2/users/{cus['id']}/"),
    ]


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_the_tools_own_failures_are_retried(
    profitwell_fake: ProfitWellFake, account: ProfitWellAccount, status: int
) -> None:
    cus = customer()
    outgoing = started_event(cus, subscription(cus["id"], plan()), plan())
    profitwell_fake.fail(status, method="POST", body={"detail": "Request was throttled."})
    sent = await sink(profitwell_fake, account).send(outgoing)
    assert not sent.succeeded and not sent.permanent and sent.status_code == status
    assert "Request was throttled." in sent.error
    ok(await sink(profitwell_fake, account).send(outgoing))
    assert len(account.subscriptions) == 1


async def test_validation_errors_are_final(profitwell_fake: ProfitWellFake, account: ProfitWellAccount) -> None:
    cus = customer(email="not an email")
    sent = await sink(profitwell_fake, account).send(started_event(cus, subscription(cus["id"], plan()), plan()))
    assert not sent.succeeded and sent.permanent and sent.status_code == 400
    assert sent.error.endswith("400 email: Enter a valid email address.")
    assert account.subscriptions == {}


async def test_unreadable_announcements_are_final(profitwell_fake: ProfitWellFake, account: ProfitWellAccount) -> None:
    cus = customer()
    missing = await sink(profitwell_fake, account).send(
        announcement("subscription.started", {"plan": plan()}, cus["id"])
    )
    unknown = await sink(profitwell_fake, account).send(announcement("payment.succeeded", {"payment": {}}, cus["id"]))
    for sent in (missing, unknown):
        assert not sent.succeeded and sent.permanent
    assert "'subscription'" in missing.error and "payment.succeeded is not synced to ProfitWell" in unknown.error


async def test_connect(profitwell_fake: ProfitWellFake, account: ProfitWellAccount) -> None:
    assert await tool(profitwell_fake).connect(account.api_key, "") == ""
    assert profitwell_fake.requests[-1].path == "/v2/api-status/"
    assert profitwell_fake.requests[-1].authorization == account.api_key  # the bare token, no scheme
    with pytest.raises(InvalidArgument) as refused:
        await tool(profitwell_fake).connect("NOT-A-TOKEN", "")
    assert refused.value.field == "api_key"
    profitwell_fake.fail(502, path="/v2/api-status/")
    with pytest.raises(Unavailable):
        await tool(profitwell_fake).connect(account.api_key, "")
