"""The Stripe test double (tests/stripe_double.py) as the product meets it:
the real stripe SDK pointed at it, localstripe behind it. Accounts and their
isolation, idempotency keys, 3-D Secure redirects, Checkout Sessions,
webhooks signed with each account's secret."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import stripe

from tests.stripe import AUTHENTICATED_CARD, DECLINED_CARD, GOOD_CARD, LocalStripe
from tests.stripe_double import Account, Answer, Refused, StripeDouble, read_request, write_answer

# localstripe's card that asks for 3-D Secure, then is declined.
AUTHENTICATED_THEN_DECLINED_CARD = "4000008260003178"


def client(double: StripeDouble, account: Account | str) -> stripe.StripeClient:
    """The product's Stripe client, as it is built (without retries: a test sees every answer)."""
    key = account if isinstance(account, str) else account.api_key
    return stripe.StripeClient(
        key, base_addresses={"api": double.url}, http_client=stripe.HTTPXClient(), max_network_retries=0
    )


async def customer_with_card(stripe_client: stripe.StripeClient, number: str = GOOD_CARD) -> tuple[str, str]:
    customer = await stripe_client.v1.customers.create_async(params={"email": "billing@acme.test"})
    card = {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}
    method = await stripe_client.v1.payment_methods.create_async(params={"type": "card", "card": card})
    await stripe_client.v1.payment_methods.attach_async(method.id, params={"customer": customer.id})
    return customer.id, method.id


class Receiver:
    """A webhook endpoint on 127.0.0.1 keeping what it is sent."""

    def __init__(self):
        self.received: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        await self.received.put((request.headers, request.body))
        write_answer(writer, Answer(200))
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/webhooks/stripe"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def event(self, secret: str, type: str, timeout: float = 5) -> stripe.Event:
        """The next event of `type` received, its signature verified by the SDK."""
        while True:
            headers, body = await asyncio.wait_for(self.received.get(), timeout)
            verified = stripe.Webhook.construct_event(body, headers["stripe-signature"], secret)
            if verified.type == type:
                return verified


@pytest.fixture(scope="module")
def other_localstripe() -> AsyncIterator[LocalStripe]:
    with LocalStripe() as server:
        yield server


async def test_accounts_on_two_localstripes_do_not_see_each_others_objects(
    stripe_double: StripeDouble, other_localstripe: LocalStripe
):
    ours, theirs = stripe_double.add_account(), stripe_double.add_account(other_localstripe)
    customer = await client(stripe_double, ours).v1.customers.create_async(params={"email": "a@acme.test"})
    assert (await client(stripe_double, ours).v1.customers.retrieve_async(customer.id)).id == customer.id
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client(stripe_double, theirs).v1.customers.retrieve_async(customer.id)
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    # Accounts on one localstripe share its objects.
    neighbour = stripe_double.add_account()
    assert (await client(stripe_double, neighbour).v1.customers.retrieve_async(customer.id)).id == customer.id


async def test_a_key_the_double_does_not_know_is_refused_and_basic_auth_is_a_key(stripe_double: StripeDouble):
    with pytest.raises(stripe.AuthenticationError) as refused:
        await client(stripe_double, "sk_test_unknown_0123456789").v1.customers.list_async()
    assert refused.value.http_status == 401
    assert refused.value.user_message.startswith("Invalid API Key provided: sk_test_")
    assert "unknown_0123" not in refused.value.user_message  # redacted, as Stripe does
    account = stripe_double.add_account()
    async with httpx.AsyncClient(base_url=stripe_double.url) as http:
        basic = await http.get("/v1/account", auth=(account.api_key, ""))
        anonymous = await http.get("/v1/customers")
    assert (basic.status_code, basic.json()["id"]) == (200, account.account_id)
    assert (anonymous.status_code, anonymous.json()["error"]["type"]) == (401, "invalid_request_error")


async def test_the_account_endpoint_answers_the_keys_account(stripe_double: StripeDouble):
    account = stripe_double.add_account()
    answered = await client(stripe_double, account).v1.accounts.retrieve_current_async()
    assert (answered.id, answered.object, answered.charges_enabled) == (account.account_id, "account", True)
    assert account.api_key.startswith("sk_test_") and account.webhook_secret.startswith("whsec_")


async def test_one_idempotency_key_makes_one_payment_intent(stripe_double: StripeDouble):
    account = stripe_double.add_account()
    stripe_client = client(stripe_double, account)
    customer, method = await customer_with_card(stripe_client)
    params = {"amount": 4750, "currency": "usd", "customer": customer, "payment_method": method, "confirm": True}
    before = stripe_double.created("/v1/payment_intents")
    first = await stripe_client.v1.payment_intents.create_async(params=params, options={"idempotency_key": "bxb-1"})
    again = await stripe_client.v1.payment_intents.create_async(params=params, options={"idempotency_key": "bxb-1"})
    assert (again.id, again.status, first.status) == (first.id, "succeeded", "succeeded")
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError):  # the same key with other parameters
        await stripe_client.v1.payment_intents.create_async(
            params={**params, "amount": 100}, options={"idempotency_key": "bxb-1"}
        )
    # Keys are the account's own: another account's same key is its own request.
    other = client(stripe_double, stripe_double.add_account())
    await other.v1.payment_intents.create_async(params=params, options={"idempotency_key": "bxb-1"})
    page = await stripe_client.v1.payment_intents.list_async(params={"limit": 100})
    mine = [intent async for intent in page.auto_paging_iter() if intent.customer == customer]
    assert len(mine) == 2 and stripe_double.created("/v1/payment_intents") == before + 2


async def test_a_key_is_answered_in_progress_while_its_first_request_runs(localstripe: LocalStripe):
    """Two doubles in a row: the inner one holds the creation the outer one is running."""
    async with StripeDouble(localstripe) as inner, StripeDouble() as outer:
        account = outer.add_account(SimpleNamespace(url=inner.url))
        inner.add_account(localstripe, api_key=account.api_key)
        stripe_client = client(outer, account)
        customer, method = await customer_with_card(stripe_client)
        params = {"amount": 500, "currency": "usd", "customer": customer, "payment_method": method, "confirm": True}
        inner.mode = "hold"
        first = asyncio.create_task(
            stripe_client.v1.payment_intents.create_async(params=params, options={"idempotency_key": "held"})
        )
        await asyncio.wait_for(inner.arrived.wait(), 5)
        with pytest.raises(stripe.APIError) as busy:
            await stripe_client.v1.payment_intents.create_async(params=params, options={"idempotency_key": "held"})
        assert (busy.value.http_status, busy.value.error.code) == (409, "idempotency_key_in_use")
        inner.release.set()
        made = await first
        again = await stripe_client.v1.payment_intents.create_async(params=params, options={"idempotency_key": "held"})
        assert again.id == made.id and inner.created("/v1/payment_intents") == 1


async def test_a_payment_needing_3d_secure_redirects_the_customer_and_returns(stripe_double: StripeDouble):
    account = stripe_double.add_account()
    stripe_client = client(stripe_double, account)
    customer, method = await customer_with_card(stripe_client, AUTHENTICATED_CARD)
    params = {
        "amount": 4750,
        "currency": "usd",
        "customer": customer,
        "payment_method": method,
        "confirm": True,
        "off_session": True,
        "return_url": "https://bxb.test/paid?invoice=inv_1",
    }
    intent = await stripe_client.v1.payment_intents.create_async(params=params)
    assert intent.status == "requires_action" and intent.next_action.type == "redirect_to_url"
    redirect = intent.next_action.redirect_to_url
    assert redirect.return_url == params["return_url"] and redirect.url.startswith(
        f"{stripe_double.url}/3ds/{intent.id}"
    )
    listed = await stripe_client.v1.payment_intents.retrieve_async(intent.id)
    assert listed.next_action.redirect_to_url.url == redirect.url
    async with httpx.AsyncClient() as browser:
        challenge = await browser.get(redirect.url)
        passed = await browser.get(redirect.url + "&outcome=succeed")
    assert challenge.status_code == 200 and "outcome=succeed" in challenge.text
    assert passed.status_code == 302
    back = urlsplit(passed.headers["location"])
    assert (back.netloc, back.path) == ("bxb.test", "/paid")
    assert parse_qs(back.query) == {
        "invoice": ["inv_1"],
        "payment_intent": [intent.id],
        "payment_intent_client_secret": [intent.client_secret],
        "redirect_status": ["succeeded"],
    }
    paid = await stripe_client.v1.payment_intents.retrieve_async(intent.id)
    assert (paid.status, paid.next_action) == ("succeeded", None)


async def test_a_card_declined_after_its_challenge_sends_the_customer_back_failed(stripe_double: StripeDouble):
    stripe_client = client(stripe_double, stripe_double.add_account())
    customer, method = await customer_with_card(stripe_client, AUTHENTICATED_THEN_DECLINED_CARD)
    params = {"amount": 900, "currency": "eur", "customer": customer, "payment_method": method, "confirm": True}
    intent = await stripe_client.v1.payment_intents.create_async(params={**params, "return_url": "https://bxb.test/r"})
    async with httpx.AsyncClient() as browser:
        back = await browser.get(intent.next_action.redirect_to_url.url + "&outcome=succeed")
    assert parse_qs(urlsplit(back.headers["location"]).query)["redirect_status"] == ["failed"]
    declined = await stripe_client.v1.payment_intents.retrieve_async(intent.id)
    assert (declined.status, declined.last_payment_error.code) == ("requires_payment_method", "card_declined")
    # localstripe embeds the charge: the double answers its id, as Stripe does unless it is expanded.
    assert isinstance(declined.latest_charge, str)
    expanded = await stripe_client.v1.payment_intents.retrieve_async(intent.id, params={"expand": ["latest_charge"]})
    assert (expanded.latest_charge.id, expanded.latest_charge.status) == (declined.latest_charge, "failed")


async def test_a_failed_challenge_leaves_the_intent_without_a_payment_method(stripe_double: StripeDouble):
    account = stripe_double.add_account()
    stripe_client = client(stripe_double, account)
    customer, method = await customer_with_card(stripe_client, AUTHENTICATED_CARD)
    params = {"amount": 900, "currency": "eur", "customer": customer, "payment_method": method, "confirm": True}
    intent = await stripe_client.v1.payment_intents.create_async(params=params)
    assert intent.next_action.redirect_to_url.return_url is None
    failed = await stripe_double.authenticate(intent.id, succeed=False)
    assert (failed["status"], failed["last_payment_error"]["code"]) == (
        "requires_payment_method",
        "payment_intent_authentication_failure",
    )
    with pytest.raises(Refused):  # nothing waits for the customer any more
        await stripe_double.authenticate(intent.id)
    [emitted] = [d for d in stripe_double.emitted if d.account is account]
    assert (emitted.event["type"], emitted.url) == ("payment_intent.payment_failed", None)


async def test_off_session_3d_secure_can_decline_as_real_stripe_does(localstripe: LocalStripe):
    async with StripeDouble(localstripe, off_session_3ds="decline") as double:
        stripe_client = client(double, double.add_account())
        customer, method = await customer_with_card(stripe_client, AUTHENTICATED_CARD)
        params = {"amount": 4750, "currency": "usd", "customer": customer, "payment_method": method}
        with pytest.raises(stripe.CardError) as declined:
            await stripe_client.v1.payment_intents.create_async(params={**params, "confirm": True, "off_session": True})
        error = declined.value.error
        assert (declined.value.code, error.type, error.payment_intent.status) == (
            "authentication_required",
            "card_error",
            "requires_payment_method",
        )
        intent = await stripe_client.v1.payment_intents.retrieve_async(error.payment_intent.id)
        assert intent.last_payment_error.code == "authentication_required"
        # On session, the customer is asked instead.
        waiting = await stripe_client.v1.payment_intents.create_async(params={**params, "confirm": True})
        assert waiting.status == "requires_action"


async def test_stripes_error_shapes_for_a_decline(stripe_double: StripeDouble):
    stripe_client = client(stripe_double, stripe_double.add_account())
    customer, method = await customer_with_card(stripe_client, DECLINED_CARD)
    params = {"amount": 4750, "currency": "usd", "customer": customer, "payment_method": method, "confirm": True}
    with pytest.raises(stripe.CardError) as declined:
        await stripe_client.v1.payment_intents.create_async(params=params)
    error = declined.value.error
    assert (declined.value.code, error.type, error.payment_intent.status) == (
        "card_declined",
        "card_error",
        "requires_payment_method",
    )


async def checkout(stripe_client: stripe.StripeClient, **params) -> stripe.checkout.Session:
    return await stripe_client.v1.checkout.sessions.create_async(params=params)


async def test_a_payment_link_completes_into_a_paid_intent_and_its_event(stripe_double: StripeDouble):
    account = stripe_double.add_account()
    stripe_client = client(stripe_double, account)
    customer = await stripe_client.v1.customers.create_async(params={"email": "a@acme.test"})
    item = {"price_data": {"currency": "usd", "unit_amount": 2375, "product_data": {"name": "Invoice"}}, "quantity": 2}
    async with Receiver() as receiver:
        await stripe_double.register_webhook(account, receiver.url, events=["checkout.session.completed"])
        try:
            session = await checkout(
                stripe_client,
                mode="payment",
                customer=customer.id,
                line_items=[item],
                payment_intent_data={"metadata": {"bxb_invoice_id": "inv_1"}},
                metadata={"bxb_invoice_id": "inv_1"},
                success_url="https://bxb.test/done?session={CHECKOUT_SESSION_ID}",
                cancel_url="https://bxb.test/cancel",
            )
            assert (session.status, session.payment_status, session.amount_total, session.currency) == (
                "open",
                "unpaid",
                4750,
                "usd",
            )
            assert session.id.startswith("cs_test_") and session.url == f"{stripe_double.url}/pay/{session.id}"
            done = await stripe_double.complete_checkout(session.id)
            completed = await receiver.event(account.webhook_secret, "checkout.session.completed")
        finally:
            await stripe_double.unregister_webhook(account)
    assert (done["status"], done["payment_status"], done["url"]) == ("complete", "paid", None)
    assert done["success_url"] == f"https://bxb.test/done?session={session.id}"
    assert (completed.data.object.id, completed.data.object.payment_intent) == (session.id, done["payment_intent"])
    intent = await stripe_client.v1.payment_intents.retrieve_async(done["payment_intent"])
    assert (intent.status, intent.amount, intent.customer, intent.metadata["bxb_invoice_id"]) == (
        "succeeded",
        4750,
        customer.id,
        "inv_1",
    )
    read = await stripe_client.v1.checkout.sessions.retrieve_async(session.id, params={"expand": ["payment_intent"]})
    assert (read.status, read.metadata["bxb_invoice_id"], read.payment_intent.id) == ("complete", "inv_1", intent.id)
    with pytest.raises(stripe.InvalidRequestError, match="complete"):
        await stripe_client.v1.checkout.sessions.expire_async(session.id)
    with pytest.raises(Refused, match="complete"):
        await stripe_double.complete_checkout(session.id)


async def test_a_setup_link_saves_the_card_and_an_expired_link_cannot_be_completed(stripe_double: StripeDouble):
    account = stripe_double.add_account()
    stripe_client = client(stripe_double, account)
    customer = await stripe_client.v1.customers.create_async(params={"email": "a@acme.test"})
    setup = await checkout(
        stripe_client, mode="setup", customer=customer.id, setup_intent_data={"metadata": {"k": "v"}}
    )
    assert (setup.payment_status, setup.amount_total) == ("no_payment_required", None)
    done = await stripe_double.complete_checkout(setup.id)
    saved = await stripe_client.v1.setup_intents.retrieve_async(done["setup_intent"])
    assert (saved.status, saved.customer, saved.metadata["k"]) == ("succeeded", customer.id, "v")
    methods = await stripe_client.v1.payment_methods.list_async(params={"customer": customer.id, "type": "card"})
    assert [m.id for m in methods.data] == [saved.payment_method]
    other = await checkout(stripe_client, mode="setup", customer=customer.id)
    expired = await stripe_client.v1.checkout.sessions.expire_async(other.id)
    assert (expired.status, expired.url) == ("expired", None)
    with pytest.raises(Refused, match="expired"):
        await stripe_double.complete_checkout(other.id)
    kinds = [d.event["type"] for d in stripe_double.emitted if d.account is account]
    assert kinds == ["checkout.session.completed", "checkout.session.expired"]
    # Another account does not see the session.
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client(stripe_double, stripe_double.add_account()).v1.checkout.sessions.retrieve_async(other.id)
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")


async def test_checkout_parameters_are_checked_and_creation_is_idempotent(stripe_double: StripeDouble):
    stripe_client = client(stripe_double, stripe_double.add_account())
    item = {"price_data": {"currency": "eur", "unit_amount": 100, "product_data": {"name": "x"}}, "quantity": 1}
    before = stripe_double.created("/v1/checkout/sessions")
    options = {"idempotency_key": "link-1"}
    first = await stripe_client.v1.checkout.sessions.create_async({"mode": "payment", "line_items": [item]}, options)
    again = await stripe_client.v1.checkout.sessions.create_async({"mode": "payment", "line_items": [item]}, options)
    assert again.id == first.id and stripe_double.created("/v1/checkout/sessions") == before + 1
    for params, param in [
        ({"mode": "subscription"}, "mode"),
        ({"line_items": [item]}, "mode"),
        ({"mode": "payment"}, "line_items"),
        ({"mode": "payment", "line_items": [item], "customer": "cus_nobody"}, "customer"),
        ({"mode": "payment", "line_items": [item], "expires_at": 1}, "expires_at"),
        ({"mode": "setup", "automatic_tax": {"enabled": True}}, "automatic_tax"),
    ]:
        with pytest.raises(stripe.InvalidRequestError) as refused:
            await checkout(stripe_client, **params)
        assert refused.value.param == param


async def test_the_checkout_page_pays_as_a_browser_would(stripe_double: StripeDouble):
    stripe_client = client(stripe_double, stripe_double.add_account())
    item = {"price_data": {"currency": "usd", "unit_amount": 700, "product_data": {"name": "x"}}, "quantity": 1}
    session = await checkout(stripe_client, mode="payment", line_items=[item], success_url="https://bxb.test/thanks")
    async with httpx.AsyncClient() as browser:
        page = await browser.get(session.url)
        declined = await browser.post(session.url, data={"card": DECLINED_CARD})
        paid = await browser.post(session.url, data={"card": GOOD_CARD})
    assert (page.status_code, "Checkout: open" in page.text) == (200, True)
    assert declined.status_code == 402  # the session stays open: the customer tries another card
    assert (paid.status_code, paid.headers["location"]) == (303, "https://bxb.test/thanks")


async def test_a_registered_webhook_receives_localstripes_events_signed_with_the_accounts_secret(
    stripe_double: StripeDouble,
):
    account = stripe_double.add_account()
    stripe_client = client(stripe_double, account)
    customer, method = await customer_with_card(stripe_client)
    async with Receiver() as receiver:
        await stripe_double.register_webhook(account, receiver.url, events=["payment_intent.succeeded"])
        try:
            params = {
                "amount": 4750,
                "currency": "usd",
                "customer": customer,
                "payment_method": method,
                "confirm": True,
            }
            intent = await stripe_client.v1.payment_intents.create_async(params=params)
            while True:  # localstripe sends every event of its store (other accounts' too) to each webhook
                succeeded = await receiver.event(account.webhook_secret, "payment_intent.succeeded")
                if succeeded.data.object.id == intent.id:
                    break
        finally:
            await stripe_double.unregister_webhook(account)
    assert succeeded.data.object.status == "succeeded"


async def test_faults_go_on_the_route_chosen(localstripe: LocalStripe):
    async with StripeDouble(localstripe, faulted="POST /v1/refunds") as double:
        stripe_client = client(double, double.add_account())
        customer, method = await customer_with_card(stripe_client)
        params = {"amount": 4750, "currency": "usd", "customer": customer, "payment_method": method, "confirm": True}
        double.mode = "error"
        intent = await stripe_client.v1.payment_intents.create_async(params=params)  # not the faulted route
        with pytest.raises(stripe.APIError):
            await stripe_client.v1.refunds.create_async(params={"payment_intent": intent.id})
        assert double.forwarded == 0
        double.mode = "drop"
        with pytest.raises(stripe.APIConnectionError):
            await stripe_client.v1.refunds.create_async(params={"payment_intent": intent.id, "amount": 1000})
        assert double.forwarded == 1  # Stripe refunded; the answer was lost
        refunds = await stripe_client.v1.refunds.list_async(params={"payment_intent": intent.id})
        assert [r.amount for r in refunds.data] == [1000]
        assert json.loads((await stripe_client.raw_request_async("get", "/v1/account")).body)["object"] == "account"


@pytest.fixture(autouse=True)
def double_did_not_fail(stripe_double: StripeDouble):
    """The double's own errors (answered 500) fail the test that met them."""
    yield
    assert stripe_double.failures == []
