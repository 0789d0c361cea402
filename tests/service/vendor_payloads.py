"""Announcements as the analytics tools' sinks receive them, made from the
resources' protos with realistic values and rendered as the public API shows
them (services/payments/public_json.render; the body as announcing.body)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bxb.catalog.v1 import customers_pb2, plans_pb2, subscriptions_pb2
from bxb.invoicing.v1 import credit_notes_pb2
from bxb.payments.v1 import payments_pb2
from services.common.ids import new_id
from services.common.timestamps import to_proto
from services.payments.announcing import Draft, body
from services.payments.public_json import render
from services.payments.sinks import Outgoing

Json = dict[str, Any]
T0 = datetime(2025, 3, 3, 9, 30, tzinfo=UTC)  # when the customer signed up
INTERVALS = {
    "weekly": plans_pb2.PLAN_INTERVAL_WEEKLY,
    "monthly": plans_pb2.PLAN_INTERVAL_MONTHLY,
    "quarterly": plans_pb2.PLAN_INTERVAL_QUARTERLY,
    "yearly": plans_pb2.PLAN_INTERVAL_YEARLY,
}


def unix(value: datetime) -> int:
    return int(value.timestamp())


def customer(customer_id: str = "", *, name: str = "Acme Corp", email: str = "billing@acme.test") -> Json:
    return render(
        customers_pb2.Customer(
            id=customer_id or f"acme-{new_id('c')[-8:]}",
            name=name,
            email=email,
            currency="USD",
            create_time=to_proto(T0),
        )
    )


def plan(
    code: str = "pro",
    *,
    version: int = 2,
    interval: str = "monthly",
    amount_cents: int = 4900,
    currency: str = "USD",
    trial_days: int = 0,
) -> Json:
    return render(
        plans_pb2.Plan(
            id=new_id("pln"),
            code=code,
            name=code.capitalize(),
            version=version,
            interval=INTERVALS[interval],
            amount_cents=amount_cents,
            currency=currency,
            trial_period_days=trial_days,
            create_time=to_proto(T0 - timedelta(days=30)),
        )
    )


def subscription(
    customer_id: str,
    on: Json,
    *,
    start: datetime = T0,
    trial_end: datetime | None = None,
    terminated: datetime | None = None,
    previous: str = "",
    following: str = "",
) -> Json:
    sub = subscriptions_pb2.Subscription(
        id=new_id("sub"),
        customer_id=customer_id,
        plan_id=on["id"],
        plan_code=on["code"],
        plan_version=on["version"],
        status=subscriptions_pb2.SUBSCRIPTION_STATUS_TERMINATED
        if terminated
        else subscriptions_pb2.SUBSCRIPTION_STATUS_ACTIVE,
        start_time=to_proto(start),
        create_time=to_proto(start),
        previous_subscription_id=previous,
        next_subscription_id=following,
    )
    if trial_end:
        sub.trial_end_time.CopyFrom(to_proto(trial_end))
    if terminated:
        sub.terminate_time.CopyFrom(to_proto(terminated))
    return render(sub)


def payment(
    customer_id: str,
    *,
    amount_cents: int = 4900,
    currency: str = "USD",
    status: int = payments_pb2.PAYMENT_STATUS_SUCCEEDED,
    attempts: int = 1,
    refunded_cents: int = 0,
    when: datetime = T0 + timedelta(days=31),
) -> Json:
    return render(
        payments_pb2.Payment(
            id=new_id("pay"),
            invoice_id=new_id("inv"),
            customer_id=customer_id,
            amount_cents=amount_cents,
            currency=currency,
            status=status,
            create_time=to_proto(when - timedelta(minutes=5)),
            update_time=to_proto(when),
            provider_payment_id=new_id("pi") if status == payments_pb2.PAYMENT_STATUS_SUCCEEDED else "",
            attempt_count=attempts,
            refunded_amount_cents=refunded_cents,
            version=attempts + 1,
        )
    )


def credit_note(
    paid: Json, *, amount_cents: int, kind: int = credit_notes_pb2.CREDIT_NOTE_KIND_REFUND, when: datetime | None = None
) -> Json:
    return render(
        credit_notes_pb2.CreditNote(
            id=new_id("cn"),
            number="CN-000001",
            invoice_id=paid["invoice_id"],
            customer_id=paid["customer_id"],
            currency=paid["currency"],
            reason=credit_notes_pb2.CREDIT_NOTE_REASON_ORDER_CHANGE,
            kind=kind,
            amount_cents=amount_cents,
            create_time=to_proto(when or T0 + timedelta(days=40)),
        )
    )


def announcement(kind: str, data: Json, customer_id: str, *, at: datetime = T0) -> Outgoing:
    draft = Draft("org_vendors", kind, customer_id, f"test:{new_id('k')}", at, data)
    return Outgoing(new_id("dlv"), new_id("evt"), draft.organization_id, kind, customer_id, at, body(draft))
