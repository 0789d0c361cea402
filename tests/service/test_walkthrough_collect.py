"""Walkthrough "Collect the money" (README) as written, through the gateway
and the real services, with Stripe as the test double in front of
localstripe: the organization's own Stripe account, a dunning campaign and a
test clock; a card saved through the setup link is charged at period end
with no API call; a declined card is retried on the campaign's days, emailed
each time, then given up on; a card needing 3-D Secure is paid through the
payment link once the signed webhook arrives; a refund credit note refunds at
Stripe once. What the end customer's browser does at Stripe's hosted pages,
the double does (complete_checkout), and the webhooks Stripe would send are
signed by the test."""

from __future__ import annotations

from email import message_from_bytes

from tests.conftest import Stack, Tenant, eventually
from tests.service.test_walkthrough_bill_by_subscription import METRIC, PLAN
from tests.smtp import Mailbox
from tests.stripe import AUTHENTICATED_CARD, DECLINED_CARD, GOOD_CARD, LocalStripe
from tests.stripe_double import StripeDouble
from tests.stripe_events import deliver, event

CAMPAIGN = {"code": "standard", "retry_days": [1, 3, 7], "max_attempts": 4, "send_emails": True, "is_default": True}


class Walkthrough:
    def __init__(self, tenant: Tenant, double: StripeDouble, clock: str):
        self.tenant, self.h, self.double, self.clock = tenant, tenant.http, double, clock

    async def webhook(self, kind: str, obj: dict) -> None:
        """What Stripe sends to the organization's webhook URL, signed with its secret."""
        assert self.tenant.stripe is not None
        path = f"/v1/webhooks/stripe/{self.tenant.organization_id}"
        received = await deliver(self.h, path, event(kind, obj), self.tenant.stripe.webhook_secret)
        assert received.status_code == 200, received.text

    async def customer_with_card(self, customer_id: str, card: str, setup_link: bool = True) -> None:
        """Step 2: a customer on the clock, created at Stripe by bxb, who saves
        a card through the setup link, or whose card made at Stripe is given."""
        body = {
            "id": customer_id,
            "email": f"ap@{customer_id}.test",
            "test_clock_id": self.clock,
            "billing": {"provider": "stripe"},
        }
        assert (await self.h.post("/v1/customers", json=body)).status_code == 201

        async def linked():
            found = (await self.h.get(f"/v1/customers/{customer_id}/provider_customer")).json()
            assert found.get("status") == "linked", found
            return found

        stripe_customer = (await eventually(linked, timeout=20))["provider_customer_id"]
        assert stripe_customer.startswith("cus_")
        if setup_link:
            await self.setup_link(customer_id, card)
        else:
            details = {"number": card, "exp_month": 12, "exp_year": 2040, "cvc": "123"}
            made = await self.tenant.stripe_client().v1.payment_methods.create_async(
                params={"type": "card", "card": details}
            )
            given = {"provider_customer_id": stripe_customer, "provider_payment_method": made.id}
            saved = await self.h.post(f"/v1/customers/{customer_id}/payment_methods", json=given)
            assert saved.status_code == 201, saved.text
        [method] = (await self.h.get(f"/v1/customers/{customer_id}/payment_methods")).json()["payment_methods"]
        assert (method["is_default"], method["card_last4"]) == (True, card[-4:])
        subscribed = await self.h.post("/v1/subscriptions", json={"customer_id": customer_id, "plan_code": "pro"})
        assert subscribed.status_code == 201

    async def setup_link(self, customer_id: str, card: str) -> None:
        link = await self.h.post(
            f"/v1/customers/{customer_id}/payment_methods/setup_link", json={"success_url": "https://acme.test/saved"}
        )
        assert link.status_code == 201, link.text
        assert link.json()["client_secret"].startswith("seti_")
        session_id = link.json()["url"].rsplit("/", 1)[-1]
        done = await self.double.complete_checkout(session_id, card)  # the customer, on Stripe's page
        setup = await self.tenant.stripe_client().v1.setup_intents.retrieve_async(done["setup_intent"])
        await self.webhook("setup_intent.succeeded", setup.to_dict())

    async def advance(self, to: str) -> None:
        moved = await self.h.post(f"/v1/test_clocks/{self.clock}/advance", json={"frozen_time": to})
        assert moved.status_code == 200, moved.text

    async def january(self, customer_id: str, **expected: object) -> dict:
        """The customer's January invoice once it shows `expected`."""

        async def shown():
            listed = (await self.h.get(f"/v1/customers/{customer_id}/invoices")).json()["invoices"]
            [invoice] = [i for i in listed if i["id"] and i["period_start"].startswith("2025-01")]
            assert {k: invoice[k] for k in expected} == expected, invoice
            return invoice

        return await eventually(shown, timeout=30)

    async def attempts(self, invoice: dict) -> list[tuple[str, str]]:
        listed = (await self.h.get(f"/v1/invoices/{invoice['id']}/payments")).json()["attempts"]
        return [(a["status"], a["trigger"]) for a in reversed(listed)]


async def emails_to(mailbox: Mailbox, address: str) -> list:
    return [message_from_bytes(m.as_bytes()) for m in mailbox.messages if address in m["To"]]


async def test_walkthrough_collects_with_no_api_call_duns_to_uncollectible_settles_3ds_and_refunds_once(
    stack: Stack, tenant: Tenant, localstripe: LocalStripe, stripe_double: StripeDouble, mailbox: Mailbox
):
    h = tenant.http
    # 0. The organization's own Stripe account (make run's default organization may use BXB_STRIPE_API_KEY instead).
    await tenant.connect_stripe()
    # 1. A dunning campaign, the walkthrough 02 plan, and a test clock.
    assert (await h.post("/v1/dunning_campaigns", json=CAMPAIGN)).status_code == 201
    assert (await h.post("/v1/billable_metrics", json=METRIC)).status_code == 201
    assert (await h.post("/v1/plans", json=PLAN)).status_code == 201
    clock = (await h.post("/v1/test_clocks", json={"frozen_time": "2025-01-01T00:00:00Z"})).json()["id"]
    walk = Walkthrough(tenant, stripe_double, clock)
    # 2. Three customers on the clock, each saving a card: a good one, one always declined, one needing 3-D Secure.
    await walk.customer_with_card("cus_good", GOOD_CARD)
    await walk.customer_with_card("cus_declined", DECLINED_CARD)
    stripe_double.off_session_3ds = "decline"  # as real Stripe answers an off-session charge needing 3-D Secure
    try:
        await walk.customer_with_card("cus_3ds", AUTHENTICATED_CARD, setup_link=False)

        # 3. The clock reaches the end of January: every invoice is finalized and charged, with no API call.
        await walk.advance("2025-02-01T00:00:00Z")
        paid = await walk.january("cus_good", status="paid", payment_status="succeeded")
        assert paid["total_amount_cents"] == 4900
        assert await walk.attempts(paid) == [("succeeded", "automatic")]

        # 4. The declined card: failed, with a payment link, emailed; retried on days 1, 3 and 7; then given up on.
        declined = await walk.january("cus_declined", status="finalized", payment_status="failed")

        failed = f"Payment failed for invoice {declined['number']}"
        gave_up = f"Payment could not be collected for invoice {declined['number']}"

        async def emailed(subjects: list[str]) -> None:
            async def received():
                assert [m["Subject"] for m in await emails_to(mailbox, "ap@cus_declined.test")] == subjects

            await eventually(received, timeout=30)

        await emailed([failed])

        async def linked():  # invoicing hears of the link through payment_updated, maybe after the email went
            shown = await walk.january("cus_declined")
            assert shown["payment_url"], shown
            return shown

        shown = await eventually(linked, timeout=30)
        assert shown["payment_url"].startswith(f"{stripe_double.url}/pay/")
        # Each retry day, as the days pass (each decline emailed before the next day comes).
        await walk.advance("2025-02-02T00:00:00Z")
        await emailed([failed] * 2)
        await walk.advance("2025-02-04T00:00:00Z")
        await emailed([failed] * 3)
        await walk.advance("2025-02-08T00:00:00Z")
        await emailed([failed] * 3 + [gave_up])
        gone = await walk.january("cus_declined", status="finalized", payment_status="uncollectible")
        assert await walk.attempts(gone) == [("failed", "automatic")] + [("failed", "dunning")] * 3

        # 5. The 3-D Secure card: Stripe wants the customer there; the payment link takes them through it.
        waiting = await walk.january("cus_3ds", status="finalized", payment_status="requires_action")

        async def with_link():
            shown = await walk.january("cus_3ds")
            assert shown["payment_url"]
            return shown

        waiting = await eventually(with_link, timeout=30)
        session_id = waiting["payment_url"].rsplit("/", 1)[-1]
        await stripe_double.complete_checkout(session_id, AUTHENTICATED_CARD, three_d_secure="succeed")
        completed = await tenant.stripe_client().v1.checkout.sessions.retrieve_async(session_id)
        await walk.webhook("checkout.session.completed", completed.to_dict())
        settled = await walk.january("cus_3ds", status="paid", payment_status="succeeded")
        assert await walk.attempts(settled) == [("failed", "automatic"), ("succeeded", "payment_link")]
    finally:
        stripe_double.off_session_3ds = "requires_action"

    # 6. A refund credit note on the paid invoice refunds at Stripe, once.
    note = {"invoice_id": paid["id"], "type": "refund", "amount_cents": 2000, "reason": "order_change"}
    assert (await h.post("/v1/credit_notes", json=note)).status_code == 201

    async def refunded():
        listed = (await h.get(f"/v1/invoices/{paid['id']}/payments")).json()
        assert listed["payment"]["status"] == "partially_refunded"
        [refund] = listed["refunds"]
        assert (refund["status"], refund["amount_cents"]) == ("succeeded", 2000)
        return refund

    refund = await eventually(refunded, timeout=30)
    [intent_id] = [
        a["provider_payment_id"] for a in (await h.get(f"/v1/invoices/{paid['id']}/payments")).json()["attempts"]
    ]
    at_stripe = await tenant.stripe_client().v1.refunds.list_async(params={"payment_intent": intent_id})
    assert [(r.id, r.amount) for r in at_stripe.data] == [(refund["provider_refund_id"], 2000)]

    async def shown_on_the_invoice():  # invoicing hears of it through payment_updated
        assert (await h.get(f"/v1/invoices/{paid['id']}")).json()["payment_status"] == "partially_refunded"

    await eventually(shown_on_the_invoice)
