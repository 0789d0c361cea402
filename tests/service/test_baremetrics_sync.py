"""The Baremetrics sink against the Baremetrics fake: the exact requests each
public event makes, idempotency across retries and resyncs, which failures
are retried and which are final, connecting, and amounts in 0- and
3-decimal currencies."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bxb.invoicing.v1 import credit_notes_pb2
from bxb.payments.v1 import payments_pb2
from services.common import peers
from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.payments.baremetrics import Baremetrics
from services.payments.sinks import Account, Sent, Sink
from services.payments.vendors import VendorSettings, vendors
from tests.baremetrics_fake import BaremetricsAccount, BaremetricsFake
from tests.service.vendor_payloads import (
    T0,
    announcement,
    credit_note,
    customer,
    payment,
    plan,
    subscription,
    unix,
)
from tests.vendor_fake import Recorded


@pytest.fixture
def account(baremetrics_fake: BaremetricsFake) -> BaremetricsAccount:
    return baremetrics_fake.add_account()


def tool(fake: BaremetricsFake, timeout: float = 5) -> Baremetrics:
    return Baremetrics(fake.url, timeout)


def sink(fake: BaremetricsFake, account: BaremetricsAccount, timeout: float = 5) -> Sink:
    return tool(fake, timeout).sink(Account("org_vendors", account.api_key, account.source_id))


def calls(fake: BaremetricsFake, account: BaremetricsAccount) -> list[tuple[str, str, object]]:
    """What the account's key sent: (method, path relative to its source, body)."""
    mine: list[Recorded] = [r for r in fake.requests if r.authorization == f"Bearer {account.api_key}"]
    prefix = f"/v1/{account.source_id}"
    return [(r.method, r.path.removeprefix(prefix), r.body) for r in mine]


def ok(sent: Sent) -> None:
    assert sent.succeeded, sent
    assert not sent.permanent


async def started(fake: BaremetricsFake, account: BaremetricsAccount, **plan_fields: object) -> tuple[dict, dict, dict]:
    """A customer and its subscription to a plan, synced."""
    cus = customer()
    on = plan(**plan_fields)  # type: ignore[arg-type]
    sub = subscription(cus["id"], on)
    ok(await sink(fake, account).send(announcement("customer.created", {"customer": cus}, cus["id"])))
    ok(
        await sink(fake, account).send(
            announcement("subscription.started", {"subscription": sub, "plan": on}, cus["id"])
        )
    )
    return cus, on, sub


def test_registered_with_what_it_syncs() -> None:
    tools = vendors(VendorSettings(baremetrics_api_base="http://127.0.0.1:9"), peers.Catalog("127.0.0.1:9"))
    assert tools["baremetrics"].name == "baremetrics"
    assert "payment.succeeded" in tools["baremetrics"].accepts
    assert "payment.refunded" not in tools["baremetrics"].accepts  # the refund credit note says it
    assert "subscription.trial_ended" not in tools["baremetrics"].accepts  # the plan's trial_duration says it


async def test_customer_created_then_updated(baremetrics_fake: BaremetricsFake, account: BaremetricsAccount) -> None:
    cus = customer(name="Acme Corp", email="billing@acme.test")
    sent = await sink(baremetrics_fake, account).send(announcement("customer.created", {"customer": cus}, cus["id"]))
    ok(sent)
    assert sent.status_code == 200 and '"oid"' in sent.response_snippet
    cus["email"], cus["name"] = "ap@acme.test", "Acme Corporation"
    ok(await sink(baremetrics_fake, account).send(announcement("customer.updated", {"customer": cus}, cus["id"])))

    assert calls(baremetrics_fake, account) == [
        (
            "POST",
            "/customers",
            {"oid": cus["id"], "name": "Acme Corp", "email": "billing@acme.test", "created": unix(T0)},
        ),
        ("PUT", f"/customers/{cus['id']}", {"name": "Acme Corporation", "email": "ap@acme.test"}),
    ]
    assert account.customers[cus["id"]]["email"] == "ap@acme.test"


async def test_a_customer_updated_before_it_is_there_is_created(
    baremetrics_fake: BaremetricsFake, account: BaremetricsAccount
) -> None:
    cus = customer(name="", email="")  # nothing but its id
    ok(await sink(baremetrics_fake, account).send(announcement("customer.updated", {"customer": cus}, cus["id"])))
    assert calls(baremetrics_fake, account) == [
        ("PUT", f"/customers/{cus['id']}", {}),
        ("POST", "/customers", {"oid": cus["id"], "created": unix(T0)}),
    ]
    assert list(account.customers) == [cus["id"]]


async def test_a_customer_created_again_is_brought_up_to_date(
    baremetrics_fake: BaremetricsFake, account: BaremetricsAccount
) -> None:
    cus = customer()
    ok(await sink(baremetrics_fake, account).send(announcement("customer.created", {"customer": cus}, cus["id"])))
    cus["name"] = "Acme Holdings"  # a resync sends its creation again, as it now stands
    ok(await sink(baremetrics_fake, account).send(announcement("customer.created", {"customer": cus}, cus["id"])))
    assert [c[:2] for c in calls(baremetrics_fake, account)] == [
        ("POST", "/customers"),
        ("POST", "/customers"),  # refused: the oid is taken
        ("PUT", f"/customers/{cus['id']}"),
    ]
    assert len(account.customers) == 1 and account.customers[cus["id"]]["name"] == "Acme Holdings"


async def test_subscription_started_makes_its_plan_once(
    baremetrics_fake: BaremetricsFake, account: BaremetricsAccount
) -> None:
    cus, on, sub = await started(baremetrics_fake, account, trial_days=14)
    other = subscription(cus["id"], on, start=T0 + timedelta(days=3))
    ok(
        await sink(baremetrics_fake, account).send(
            announcement("subscription.started", {"subscription": other, "plan": on}, cus["id"])
        )
    )

    plan_body = {
        "oid": "pro_v2",
        "name": "Pro",
        "currency": "usd",
        "amount": 4900,
        "interval": "month",
        "interval_count": 1,
        "trial_duration": 14,
        "trial_duration_unit": "day",
    }
    assert calls(baremetrics_fake, account)[1:] == [
        ("POST", "/plans", plan_body),
        (
            "POST",
            "/subscriptions",
            {"oid": sub["id"], "customer_oid": cus["id"], "plan_oid": "pro_v2", "started_at": unix(T0), "quantity": 1},
        ),
        ("POST", "/plans", plan_body),  # refused: made already
        ("GET", "/plans/pro_v2", None),
        (
            "POST",
            "/subscriptions",
            {
                "oid": other["id"],
                "customer_oid": cus["id"],
                "plan_oid": "pro_v2",
                "started_at": unix(T0 + timedelta(days=3)),
                "quantity": 1,
            },
        ),
    ]
    assert set(account.subscriptions) == {sub["id"], other["id"]}


@pytest.mark.parametrize(
    ("interval", "theirs"),
    [("weekly", ("day", 7)), ("monthly", ("month", 1)), ("quarterly", ("month", 3)), ("yearly", ("year", 1))],
)
async def test_plan_intervals(
    baremetrics_fake: BaremetricsFake, account: BaremetricsAccount, interval: str, theirs: tuple[str, int]
) -> None:
    await started(baremetrics_fake, account, code=f"team-{interval}", interval=interval)
    plans = list(account.plans.values())
    assert [(p["oid"], p["interval"], p["interval_count"]) for p in plans] == [(f"team-{interval}_v2", *theirs)]


async def test_terminated_cancels_once(baremetrics_fake: BaremetricsFake, account: BaremetricsAccount) -> None:
    cus, _, sub = await started(baremetrics_fake, account)
    ended = dict(sub, status="terminated", terminated_at="2025-06-03T00:00:00Z")
    first = await sink(baremetrics_fake, account).send(
        announcement("subscription.terminated", {"subscription": ended}, cus["id"])
    )
    again = await sink(baremetrics_fake, account).send(
        announcement("subscription.terminated", {"subscription": ended}, cus["id"])
    )
    ok(first)
    ok(again)
    cancel = ("PUT", f"/subscriptions/{sub['id']}/cancel", {"canceled_at": 1748908800})
    assert calls(baremetrics_fake, account)[-3:] == [cancel, cancel, ("GET", f"/subscriptions/{sub['id']}", None)]
    assert account.subscriptions[sub["id"]]["canceled_at"] == 1748908800


async def test_terminated_without_a_date_is_cancelled_when_announced(
    baremetrics_fake: BaremetricsFake, account: BaremetricsAccount
) -> None:
    cus, _, sub = await started(baremetrics_fake, account)
    at = T0 + timedelta(days=10)
    ok(
        await sink(baremetrics_fake, account).send(
            announcement("subscription.terminated", {"subscription": sub}, cus["id"], at=at)
        )
    )
    assert account.subscriptions[sub["id"]]["canceled_at"] == unix(at)


async def test_cancelling_what_is_not_there_is_final(
    baremetrics_fake: BaremetricsFake, account: BaremetricsAccount
) -> None:
    cus = customer()
    sub = subscription(cus["id"], plan(), terminated=T0 + timedelta(days=1))
    sent = await sink(baremetrics_fake, account).send(
        announcement("subscription.terminated", {"subscription": sub}, cus["id"])
    )
    assert not sent.succeeded and sent.permanent
    assert sent.status_code == 404 and "cancel: 404 Subscription not found" in sent.error


async def test_a_plan_change_cancels_the_subscription_that_ends(
    baremetrics_fake: BaremetricsFake, account: BaremetricsAccount
) -> None:
    cus, _, sub = await started(baremetrics_fake, account)
    change = T0 + timedelta(days=45)
    bigger = plan("scale", version=1, amount_cents=19900)
    successor = subscription(cus["id"], bigger, start=change, previous=sub["id"])
    ended = dict(sub, status="terminated", terminated_at="2025-04-17T09:30:00Z", next_subscription_id=successor["id"])
    sinks = sink(baremetrics_fake, account)
    ok(await sinks.send(announcement("subscription.started", {"subscription": successor, "plan": bigger}, cus["id"])))
    ok(await sinks.send(announcement("subscription.plan_changed", {"subscription": ended}, cus["id"])))
    ok(await sinks.send(announcement("subscription.plan_changed", {"subscription": successor}, cus["id"])))
    ok(await sinks.send(announcement("subscription.terminated", {"subscription": ended}, cus["id"])))

    assert account.subscriptions[sub["id"]]["canceled_at"] == unix(change)
    assert account.subscriptions[successor["id"]]["canceled_at"] is None
    assert account.subscriptions[successor["id"]]["plan"]["oid"] == "scale_v1"
    cancels = [c for c in calls(baremetrics_fake, account) if c[1].endswith("/cancel")]
    assert cancels == [("PUT", f"/subscriptions/{sub['id']}/cancel", {"canceled_at": unix(change)})] * 3


async def test_payments_are_charges(baremetrics_fake: BaremetricsFake, account: BaremetricsAccount) -> None:
    cus, _, _ = await started(baremetrics_fake, account)
    declined = payment(cus["id"], status=payments_pb2.PAYMENT_STATUS_FAILED, attempts=1)
    paid = dict(declined, status="succeeded", attempt_count=2, update_time="2025-04-05T10:00:00Z")
    ok(await sink(baremetrics_fake, account).send(announcement("payment.failed", {"payment": declined}, cus["id"])))
    ok(await sink(baremetrics_fake, account).send(announcement("payment.succeeded", {"payment": paid}, cus["id"])))

    invoice = declined["invoice_id"]
    base = {"amount": 4900, "currency": "usd", "customer_oid": cus["id"]}
    assert calls(baremetrics_fake, account)[-2:] == [
        (
            "POST",
            "/charges",
            {"oid": f"{invoice}-failed-1", **base, "created": unix(T0 + timedelta(days=31)), "status": "failed"},
        ),
        ("POST", "/charges", {"oid": invoice, **base, "created": 1743847200, "status": "paid"}),
    ]
    assert {oid: c["status"] for oid, c in account.charges.items()} == {
        f"{invoice}-failed-1": "failed",
        invoice: "paid",
    }


async def test_refund_credit_notes_are_refunds(baremetrics_fake: BaremetricsFake, account: BaremetricsAccount) -> None:
    cus, _, _ = await started(baremetrics_fake, account)
    paid = payment(cus["id"])
    ok(await sink(baremetrics_fake, account).send(announcement("payment.succeeded", {"payment": paid}, cus["id"])))
    refund = credit_note(paid, amount_cents=1500)
    credit = credit_note(paid, amount_cents=700, kind=credit_notes_pb2.CREDIT_NOTE_KIND_CREDIT)
    ok(
        await sink(baremetrics_fake, account).send(
            announcement("credit_note.created", {"credit_note": refund}, cus["id"])
        )
    )
    skipped = await sink(baremetrics_fake, account).send(
        announcement("credit_note.created", {"credit_note": credit}, cus["id"])
    )

    assert calls(baremetrics_fake, account)[-1] == (
        "POST",
        "/refunds",
        {
            "oid": refund["id"],
            "amount": 1500,
            "currency": "usd",
            "customer_oid": cus["id"],
            "charge_oid": paid["invoice_id"],
            "created": unix(T0 + timedelta(days=40)),
        },
    )
    assert skipped == Sent(True, 0, skipped.latency_ms, "a credit (not a refund): nothing to sync")
    again = announcement("credit_note.created", {"credit_note": refund}, cus["id"])  # redelivered
    ok(await sink(baremetrics_fake, account).send(again))
    assert calls(baremetrics_fake, account)[-1] == ("GET", f"/refunds/{refund['id']}", None)
    assert [r["amount"] for r in account.refunds.values()] == [1500]


@pytest.mark.parametrize(
    ("currency", "plan_amount", "paid_amount", "refunded"),
    [("JPY", 5000, 5480, 480), ("KWD", 12345, 13579, 1001), ("EUR", 4900, 5390, 490)],
)
async def test_amounts_are_minor_units_unchanged(
    baremetrics_fake: BaremetricsFake,
    account: BaremetricsAccount,
    currency: str,
    plan_amount: int,
    paid_amount: int,
    refunded: int,
) -> None:
    """5,000 yen is 5000 (not 500000) and 12.345 dinars 12345 (not 1234): each
    currency's smallest unit, as bxb stores it."""
    cus, _, _ = await started(
        baremetrics_fake, account, code=f"pro-{currency.lower()}", amount_cents=plan_amount, currency=currency
    )
    paid = payment(cus["id"], amount_cents=paid_amount, currency=currency)
    ok(await sink(baremetrics_fake, account).send(announcement("payment.succeeded", {"payment": paid}, cus["id"])))
    refund = credit_note(paid, amount_cents=refunded)
    ok(
        await sink(baremetrics_fake, account).send(
            announcement("credit_note.created", {"credit_note": refund}, cus["id"])
        )
    )

    (on,) = account.plans.values()
    assert on["amounts"] == [{"currency": currency, "amount": plan_amount}]
    assert [(c["amount"], c["currency"]) for c in account.charges.values()] == [(paid_amount, currency)]
    assert [r["amount"] for r in account.refunds.values()] == [refunded]


async def test_a_lost_answer_is_retried_without_a_duplicate(
    baremetrics_fake: BaremetricsFake, account: BaremetricsAccount
) -> None:
    cus, _, _ = await started(baremetrics_fake, account)
    paid = payment(cus["id"])
    outgoing = announcement("payment.succeeded", {"payment": paid}, cus["id"])
    baremetrics_fake.lose_answer(method="POST", path=f"/{account.source_id}/charges")
    lost = await sink(baremetrics_fake, account, timeout=0.5).send(outgoing)
    assert not lost.succeeded and not lost.permanent
    assert lost.status_code == 0 and "no answer" in lost.error
    assert list(account.charges) == [paid["invoice_id"]]  # Baremetrics recorded it

    ok(await sink(baremetrics_fake, account).send(outgoing))  # the retry
    assert list(account.charges) == [paid["invoice_id"]]
    assert [c[:2] for c in calls(baremetrics_fake, account)[-3:]] == [
        ("POST", "/charges"),
        ("POST", "/charges"),
        ("GET", f"/charges/{paid['invoice_id']}"),
    ]


async def test_a_subscription_whose_answer_was_lost_is_made_once(
    baremetrics_fake: BaremetricsFake, account: BaremetricsAccount
) -> None:
    cus = customer()
    on = plan("starter", version=1)
    sub = subscription(cus["id"], on)
    ok(await sink(baremetrics_fake, account).send(announcement("customer.created", {"customer": cus}, cus["id"])))
    outgoing = announcement("subscription.started", {"subscription": sub, "plan": on}, cus["id"])
    baremetrics_fake.lose_answer(method="POST", path=f"/{account.source_id}/subscriptions")
    lost = await sink(baremetrics_fake, account, timeout=0.5).send(outgoing)
    assert not lost.succeeded and not lost.permanent
    ok(await sink(baremetrics_fake, account).send(outgoing))
    assert list(account.subscriptions) == [sub["id"]] and list(account.plans) == ["starter_v1"]


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_the_tools_own_failures_are_retried(
    baremetrics_fake: BaremetricsFake, account: BaremetricsAccount, status: int
) -> None:
    cus = customer()
    outgoing = announcement("customer.created", {"customer": cus}, cus["id"])
    baremetrics_fake.fail(status, method="POST", path=f"/{account.source_id}/customers", body={"error": "Try again"})
    sent = await sink(baremetrics_fake, account).send(outgoing)
    assert sent.status_code == status and not sent.succeeded and not sent.permanent
    assert "Try again" in sent.error and sent.response_snippet == '{"error":"Try again"}'
    assert account.customers == {}
    ok(await sink(baremetrics_fake, account).send(outgoing))
    assert list(account.customers) == [cus["id"]]


async def test_refusals_are_final(baremetrics_fake: BaremetricsFake, account: BaremetricsAccount) -> None:
    stranger = customer()  # never synced: Baremetrics refuses a charge of an unknown customer
    sent = await sink(baremetrics_fake, account).send(
        announcement("payment.succeeded", {"payment": payment(stranger["id"])}, stranger["id"])
    )
    assert not sent.succeeded and sent.permanent
    assert sent.status_code == 400 and sent.error.endswith("400 Customer not found")


async def test_a_refused_key_is_final(baremetrics_fake: BaremetricsFake, account: BaremetricsAccount) -> None:
    cus = customer()
    revoked = Baremetrics(baremetrics_fake.url, 5).sink(Account("org_vendors", "bm_revoked", account.source_id))
    sent = await revoked.send(announcement("customer.created", {"customer": cus}, cus["id"]))
    assert not sent.succeeded and sent.permanent and sent.status_code == 401
    assert "Unauthorized. Token not found" in sent.error


async def test_unreadable_announcements_are_final(
    baremetrics_fake: BaremetricsFake, account: BaremetricsAccount
) -> None:
    cus = customer()
    missing = await sink(baremetrics_fake, account).send(announcement("customer.created", {"client": cus}, cus["id"]))
    unknown = await sink(baremetrics_fake, account).send(announcement("invoice.paid", {"invoice": {}}, cus["id"]))
    for sent in (missing, unknown):
        assert not sent.succeeded and sent.permanent and sent.status_code == 0
    assert "'customer'" in missing.error and "invoice.paid is not synced" in unknown.error
    assert calls(baremetrics_fake, account) == []


async def test_connect_finds_or_checks_the_api_source(
    baremetrics_fake: BaremetricsFake, account: BaremetricsAccount
) -> None:
    baremetrics = tool(baremetrics_fake)
    assert await baremetrics.connect(account.api_key, "") == account.source_id
    assert await baremetrics.connect(account.api_key, account.source_id) == account.source_id
    with pytest.raises(InvalidArgument) as read_only:
        await baremetrics.connect(account.api_key, account.stripe_source_id)
    assert read_only.value.field == "data_source_id"
    with pytest.raises(FailedPrecondition):
        await baremetrics.connect(baremetrics_fake.add_account(api_source=False).api_key, "")
    assert [r.path for r in baremetrics_fake.requests[-4:]] == ["/v1/sources"] * 4


async def test_connect_with_a_refused_key(baremetrics_fake: BaremetricsFake) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await tool(baremetrics_fake).connect("bm_not_a_key", "")
    assert refused.value.field == "api_key"
    assert baremetrics_fake.requests[-1].authorization == "Bearer bm_not_a_key"


async def test_connect_while_baremetrics_fails(baremetrics_fake: BaremetricsFake, account: BaremetricsAccount) -> None:
    baremetrics_fake.fail(503, path="/v1/sources")
    with pytest.raises(Unavailable):
        await tool(baremetrics_fake).connect(account.api_key, "")
