"""The ChartMogul vendor against the fake (tests/chartmogul_fake.py), with
payloads made from real resources as GET shows them: the exact requests
sent for each event type, idempotency across a lost answer, which failures
are retried and which are for good, connecting, and minor units."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from services.common import peers
from services.common.errors import InvalidArgument, Unavailable
from services.payments.announcing import Draft, body
from services.payments.chartmogul import ACCEPTS, ChartMogulVendor, cents, quantity, shares
from services.payments.sinks import Account, Outgoing
from services.payments.vendors import VendorSettings, vendors
from tests.chartmogul_fake import ChartMogulFake
from tests.conftest import Stack, Tenant, eventually, organization, unique
from tests.service.invoicing_helpers import create_plan, subscribe

NOW = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture
async def catalog(stack: Stack) -> AsyncIterator[peers.Catalog]:
    peer = peers.Catalog(stack.catalog, timeout=5)
    yield peer
    await peer.close()


def vendor_of(fake: ChartMogulFake, catalog: peers.Catalog, **options) -> ChartMogulVendor:
    return ChartMogulVendor(VendorSettings(chartmogul_api_base=fake.url, **options), catalog)


def outgoing(org: str, kind: str, customer_id: str, **data) -> Outgoing:
    draft = Draft(org, kind, customer_id, f"test:{kind}", NOW, data)
    return Outgoing("dlv_1", "evt_1", org, kind, customer_id, NOW, body(draft))


async def history(t: Tenant, customer: str = "c1") -> dict:
    """A customer billed once: its resources as GET shows them."""
    assert (
        await t.http.post("/v1/customers", json={"external_id": customer, "name": "Ada", "email": "a@x.test"})
    ).status_code == 201
    plan = await create_plan(t, "pro", [], amount_cents=10000, name="Pro")
    subscription = await subscribe(t, customer, "pro", "2026-10-01T00:00:00Z")
    invoiced = await t.http.post("/v1/invoices", json={"customer_id": customer, "cutoff_date": "2026-10-31T23:59:59Z"})
    assert invoiced.status_code == 201, invoiced.text
    invoice = invoiced.json()
    note = await t.http.post(
        "/v1/credit_notes", json={"invoice_id": invoice["id"], "amount_cents": 2500, "reason": "order_change"}
    )
    assert note.status_code == 201, note.text

    async def payment() -> dict:
        listed = (await t.http.get("/v1/payments", params={"invoice_id": invoice["id"]})).json()["payments"]
        assert listed
        return listed[0]

    customer_json = (await t.http.get(f"/v1/customers/{customer}")).json()
    return {
        "customer": customer_json,
        "plan": plan,
        "subscription": subscription,
        "invoice": invoice,
        "credit_note": note.json(),
        "payment": await eventually(payment),
    }


async def test_each_event_is_sent_as_chartmogul_documents_it(tenant: Tenant, stack: Stack, catalog):
    fake = stack.chartmogul
    key = fake.add_account()
    vendor = vendor_of(fake, catalog)
    source = await vendor.connect(key, "")
    sink = vendor.sink(Account(tenant.organization_id, key, source))
    org = tenant.organization_id
    h = await history(tenant)
    invoice, payment, note = h["invoice"], h["payment"], h["credit_note"]
    assert [(f["type"], f["amount_cents"]) for f in invoice["fees"]] == [("subscription", 10000)]

    sent = [
        await sink.send(outgoing(org, "customer.created", "c1", customer=h["customer"])),
        await sink.send(outgoing(org, "subscription.started", "c1", subscription=h["subscription"], plan=h["plan"])),
        await sink.send(outgoing(org, "invoice.finalized", "c1", invoice=invoice)),
        await sink.send(outgoing(org, "payment.succeeded", "c1", payment=payment)),
        await sink.send(outgoing(org, "credit_note.created", "c1", credit_note=note)),
    ]
    assert [s.succeeded for s in sent] == [True] * 5, sent
    store = fake.store(key)
    [customer] = store.customers.values()
    [plan] = store.plans.values()
    [chartmogul_invoice] = store.invoices.values()
    writes = fake.sent(key, "POST")[1:]  # after the data source
    assert writes == [
        (
            "POST",
            "/v1/customers",
            {"data_source_uuid": source, "external_id": "c1", "name": "Ada", "email": "a@x.test"},
        ),
        (
            "POST",
            "/v1/plans",
            {
                "data_source_uuid": source,
                "name": "Pro (v1)",
                "interval_count": 1,
                "interval_unit": "month",
                "external_id": "pro:v1",
            },
        ),
        (
            "POST",
            f"/v1/import/customers/{customer['uuid']}/invoices",
            {
                "invoices": [
                    {
                        "external_id": invoice["id"],
                        "date": invoice["issued_at"].replace("Z", "+00:00"),
                        "currency": "USD",
                        "customer_external_id": "c1",
                        "data_source_uuid": source,
                        "line_items": [
                            {
                                "amount_in_cents": 10000,
                                "discount_amount_in_cents": 0,
                                "tax_amount_in_cents": 0,
                                "quantity": 1,
                                "description": invoice["fees"][0]["description"],
                                "type": "subscription",
                                "subscription_external_id": h["subscription"]["id"],
                                "plan_uuid": plan["uuid"],
                                "service_period_start": "2026-10-01T00:00:00+00:00",
                                "service_period_end": invoice["fees"][0]["period_end"].replace("Z", "+00:00"),
                            }
                        ],
                    }
                ]
            },
        ),
        (
            "POST",
            f"/v1/import/invoices/{chartmogul_invoice['uuid']}/transactions",
            {
                "type": "payment",
                "date": payment["update_time"].replace("Z", "+00:00"),
                "result": "successful",
                "external_id": f"{payment['id']}:{payment['attempt_count']}",
                "amount_in_cents": payment["amount_cents"],
            },
        ),
        (
            "POST",
            f"/v1/import/invoices/{chartmogul_invoice['uuid']}/transactions",
            {
                "type": "refund",
                "date": note["created_at"].replace("Z", "+00:00"),
                "result": "successful",
                "external_id": note["id"],
                "amount_in_cents": 2500,
            },
        ),
    ]
    # The plan is looked up before it is made: the invoice found the one subscription.started made.
    assert len(store.plans) == 1 and len(store.subscriptions) == 1

    # A change of name is an update of the same customer.
    renamed = {**h["customer"], "name": "Ada L."}
    assert (await sink.send(outgoing(org, "customer.updated", "c1", customer=renamed))).succeeded
    assert fake.sent(key, "PATCH")[-1] == (
        "PATCH",
        f"/v1/customers/{customer['uuid']}",
        {"name": "Ada L.", "email": "a@x.test"},
    )

    # Termination: the subscription ChartMogul made from the invoice gets its cancellation date.
    terminated = await tenant.http.delete(f"/v1/subscriptions/{h['subscription']['id']}")
    assert terminated.status_code == 200, terminated.text
    ended = terminated.json()
    done = await sink.send(outgoing(org, "subscription.terminated", "c1", subscription=ended))
    assert done.succeeded and "cancelled" in done.response_snippet
    [subscription] = store.subscriptions.values()
    assert fake.sent(key, "PATCH")[-1] == (
        "PATCH",
        f"/v1/import/subscriptions/{subscription['uuid']}",
        {"cancellation_dates": [ended["terminated_at"].replace("Z", "+00:00")]},
    )
    assert subscription["cancellation_dates"] == [ended["terminated_at"].replace("Z", "+00:00")]
    # A plan change ends the old subscription the same way.
    assert (await sink.send(outgoing(org, "subscription.plan_changed", "c1", subscription=ended))).succeeded


async def test_a_retry_after_a_lost_answer_duplicates_nothing(tenant: Tenant, stack: Stack, catalog):
    fake = stack.chartmogul
    key = fake.add_account()
    vendor = vendor_of(fake, catalog)
    sink = vendor.sink(Account(tenant.organization_id, key, await vendor.connect(key, "")))
    org = tenant.organization_id
    h = await history(tenant)

    fake.lose_next_answer()  # ChartMogul made the customer; the answer never came
    lost = await sink.send(outgoing(org, "customer.created", "c1", customer=h["customer"]))
    assert (lost.succeeded, lost.status_code, lost.permanent) == (False, 502, False)
    again = await sink.send(outgoing(org, "customer.created", "c1", customer=h["customer"]))
    assert again.succeeded and "updated" in again.response_snippet
    assert len(fake.store(key).customers) == 1

    fake.lose_next_answer()  # skips the plan's POST: the plan is made, its answer lost... on the invoice
    await sink.send(outgoing(org, "subscription.started", "c1", subscription=h["subscription"], plan=h["plan"]))
    assert (
        await sink.send(outgoing(org, "subscription.started", "c1", subscription=h["subscription"], plan=h["plan"]))
    ).succeeded
    assert len(fake.store(key).plans) == 1

    # Another customer's delivery, running alongside, made the plan between this one's lookup and its POST.
    fake.hide_next_find()
    alongside = await sink.send(
        outgoing(org, "subscription.started", "c1", subscription=h["subscription"], plan=h["plan"])
    )
    assert alongside.succeeded, alongside
    assert len(fake.store(key).plans) == 1

    fake.lose_next_answer()
    first = await sink.send(outgoing(org, "invoice.finalized", "c1", invoice=h["invoice"]))
    assert (first.succeeded, first.permanent) == (False, False)
    retried = await sink.send(outgoing(org, "invoice.finalized", "c1", invoice=h["invoice"]))
    assert retried.succeeded and "imported before" in retried.response_snippet
    assert len(fake.store(key).invoices) == 1

    fake.lose_next_answer()
    assert not (await sink.send(outgoing(org, "payment.failed", "c1", payment=h["payment"]))).succeeded
    twice = await sink.send(outgoing(org, "payment.failed", "c1", payment=h["payment"]))
    assert twice.succeeded and "recorded before" in twice.response_snippet
    [invoice] = fake.store(key).invoices.values()
    assert [(t["type"], t["result"]) for t in invoice["transactions"]] == [("payment", "failed")]


async def test_refusals_are_for_good_and_outages_are_retried(tenant: Tenant, stack: Stack, catalog):
    fake = stack.chartmogul
    key = fake.add_account()
    vendor = vendor_of(fake, catalog)
    sink = vendor.sink(Account(tenant.organization_id, key, await vendor.connect(key, "")))
    org = tenant.organization_id
    h = await history(tenant)

    fake.fail_next(503)
    outage = await sink.send(outgoing(org, "customer.created", "c1", customer=h["customer"]))
    assert (outage.succeeded, outage.status_code, outage.permanent) == (False, 503, False)
    fake.fail_next(422)
    refused = await sink.send(outgoing(org, "customer.created", "c1", customer=h["customer"]))
    assert (refused.succeeded, refused.status_code, refused.permanent) == (False, 422, True)
    fake.fail_next(422)
    invoice_refused = await sink.send(outgoing(org, "invoice.finalized", "c1", invoice=h["invoice"]))
    assert (invoice_refused.status_code, invoice_refused.permanent) == (422, True)
    fake.fail_next(422)
    transaction_refused = await sink.send(outgoing(org, "credit_note.created", "c1", credit_note=h["credit_note"]))
    assert transaction_refused.permanent  # the invoice is not there yet: found missing first
    assert "is not at ChartMogul" in transaction_refused.error
    fake.faults.clear()  # that one never reached a write

    assert (await sink.send(outgoing(org, "invoice.finalized", "c1", invoice=h["invoice"]))).succeeded
    fake.fail_next(422)
    refused_transaction = await sink.send(outgoing(org, "credit_note.created", "c1", credit_note=h["credit_note"]))
    assert (refused_transaction.status_code, refused_transaction.permanent) == (422, True)

    # The catalog not knowing the subscription (another organization's): retried, it may come.
    stranger = outgoing(
        await organization(stack, unique("org_elsewhere")), "invoice.finalized", "c1", invoice=h["invoice"]
    )
    unknown = await sink.send(stranger)
    assert (unknown.succeeded, unknown.permanent) == (False, False) and "NOT_FOUND" in unknown.error

    # Nobody answering, or too slowly.
    gone = ChartMogulVendor(VendorSettings(chartmogul_api_base="http://127.0.0.1:9"), catalog)
    down = await gone.sink(Account(org, key, "ds_x")).send(
        outgoing(org, "customer.created", "c1", customer=h["customer"])
    )
    assert (down.succeeded, down.status_code, down.permanent) == (False, 0, False)
    assert "did not answer" in down.error
    hurried = vendor_of(fake, catalog, timeout=1e-9).sink(Account(org, key, "ds_x"))
    late = await hurried.send(outgoing(org, "customer.created", "c1", customer=h["customer"]))
    assert (late.succeeded, late.permanent) == (False, False) and "longer than" in late.error


async def test_what_is_not_at_chartmogul_yet(tenant: Tenant, stack: Stack, catalog):
    fake = stack.chartmogul
    key = fake.add_account()
    vendor = vendor_of(fake, catalog)
    source = await vendor.connect(key, "")
    sink = vendor.sink(Account(tenant.organization_id, key, source))
    org = tenant.organization_id
    h = await history(tenant)
    subscription = h["subscription"]

    running = await sink.send(outgoing(org, "subscription.terminated", "c1", subscription=subscription))
    assert running.response_snippet == "not terminated"
    ended = {**subscription, "terminated_at": "2026-10-20T00:00:00Z"}
    nobody = await sink.send(outgoing(org, "subscription.terminated", "c1", subscription=ended))
    assert nobody.succeeded and "customer not at ChartMogul" in nobody.response_snippet
    # subscription.started for a customer ChartMogul has not heard of makes it, named by its id.
    assert (
        await sink.send(outgoing(org, "subscription.started", "c1", subscription=subscription, plan=h["plan"]))
    ).succeeded
    [customer] = fake.store(key).customers.values()
    assert (customer["external_id"], customer["name"]) == ("c1", "c1")
    before_invoice = await sink.send(outgoing(org, "subscription.terminated", "c1", subscription=ended))
    assert before_invoice.succeeded and "subscription not at ChartMogul" in before_invoice.response_snippet

    # An invoice with no base fee and a nameless customer: one-time lines only.
    usage = {**h["invoice"], "id": "inv_usage", "fees": [{**h["invoice"]["fees"][0], "type": "charge", "units": "2.5"}]}
    assert (await sink.send(outgoing(org, "invoice.finalized", "c1", invoice=usage))).succeeded
    line = fake.store(key).invoices
    [imported] = [i for i in line.values() if i["external_id"] == "inv_usage"]
    assert [(li["type"], li["quantity"]) for li in imported["line_items"]] == [("one_time", 1)]
    nameless = {**h["customer"], "id": "c2", "name": "", "email": ""}
    assert (await sink.send(outgoing(org, "customer.created", "c2", customer=nameless))).succeeded
    assert fake.sent(key, "POST")[-1][2]["name"] == "c2"


async def test_connecting_checks_the_key_and_the_data_source(stack: Stack, catalog):
    fake = stack.chartmogul
    key = fake.add_account()
    vendor = vendor_of(fake, catalog)
    with pytest.raises(InvalidArgument) as refused:
        await vendor.connect("not-a-key-0000", "")
    assert refused.value.field == "api_key" and "not-a-key-0000" not in refused.value.message
    made = await vendor.connect(key, "")
    assert made in fake.store(key).data_sources and fake.store(key).data_sources[made]["name"] == "bxb"
    assert await vendor.connect(key, "") == made  # found by name, not made twice
    other = fake.add_data_source(key)
    assert await vendor.connect(key, other) == other
    with pytest.raises(InvalidArgument) as unknown:
        await vendor.connect(key, "ds_nope")
    assert unknown.value.field == "data_source_id"
    fake.faults.clear()
    fake.fail_next(500)  # on the data source's creation
    with pytest.raises(Unavailable):
        await vendor.connect(fake.add_account(), "")
    with pytest.raises(Unavailable):
        await ChartMogulVendor(VendorSettings(chartmogul_api_base="http://127.0.0.1:9"), catalog).connect(key, "")
    assert set(vendors(VendorSettings(), catalog)) == {"chartmogul", "baremetrics", "profitwell"}
    assert "payment.refunded" not in ACCEPTS


def test_minor_units_become_chartmogul_cents():
    assert cents(1234, "USD") == 1234
    assert cents(1000, "JPY") == 100000  # zero-decimal: hundredths of a yen
    assert (cents(1235, "KWD"), cents(1234, "KWD"), cents(-1235, "KWD")) == (124, 123, -124)
    assert shares(100, [1, 1, 1]) == [33, 33, 34]
    assert shares(100, [0, 0]) == [0, 0] and shares(5, []) == []
    assert (quantity("3"), quantity("2.5"), quantity("0"), quantity("x")) == (3, 1, 1, 1)


def test_payload_is_the_public_json():
    sent = outgoing("o", "customer.created", "c1", customer={"id": "c1"})
    assert json.loads(sent.payload) == {
        "type": "customer.created",
        "timestamp": "2026-11-02T00:00:00Z",
        "data": {"customer": {"id": "c1"}},
    }
