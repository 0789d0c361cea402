"""An organization's own Stripe account (PaymentProviderService over HTTP):
its key checked at Stripe (the test double's `GET /v1/account`), sealed at
rest, never answered nor logged; StripeAccounts serving each organization
its own client, and the default organization its BXB_STRIPE_API_KEY."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import select

from bxb.payments.v1 import providers_pb2, providers_pb2_grpc
from deploy.embedded import free_port
from services.common import db, grpc_server, sealing
from services.common.errors import FailedPrecondition, error_info
from services.common.tenancy import metadata
from services.payments import server as payments_server
from services.payments.accounts import DEFAULT_ORGANIZATION, StripeAccounts
from services.payments.models import ProviderAccount
from services.payments.providers import hint
from tests.conftest import Infra, Stack, Tenant, organization, start, unique


class AccountsDb:
    """The payments database, read directly, and a StripeAccounts of its own on it."""

    def __init__(self, infra: Infra, stack: Stack):
        self.engine = db.create_engine(infra.postgres.url("payments"), pool_size=2)
        self.sessions = db.sessions(self.engine)
        assert stack.stripe is not None
        self.api_base = stack.stripe.url

    async def row(self, org: str) -> ProviderAccount | None:
        async with self.sessions() as session:
            return await session.get(ProviderAccount, (org, "stripe"))

    def accounts(self, **options) -> StripeAccounts:
        return StripeAccounts(self.sessions, self.api_base, **options)


@pytest.fixture
async def accounts_db(infra: Infra, stack: Stack) -> AsyncIterator[AccountsDb]:
    handle = AccountsDb(infra, stack)
    yield handle
    await handle.engine.dispose()


async def test_connecting_checks_the_key_at_stripe_and_answers_no_secret(
    tenant: Tenant, stack: Stack, accounts_db: AccountsDb, caplog
):
    caplog.set_level(logging.DEBUG)
    account = stack.stripe.add_account()
    body = {"secret_key": account.api_key, "webhook_secret": account.webhook_secret}
    connected = await tenant.http.post("/v1/payment_providers/stripe", json=body)
    assert connected.status_code == 201, connected.text
    shown = connected.json()
    assert shown == {
        "provider": "stripe",
        "account_id": account.account_id,
        "livemode": False,
        "secret_key_hint": f"sk_test_...{account.api_key[-4:]}",
        "webhook_path": f"/v1/webhooks/stripe/{tenant.organization_id}",
        "created_at": shown["created_at"],
        "updated_at": shown["updated_at"],
    }
    got = await tenant.http.get("/v1/payment_providers/stripe")
    assert (got.status_code, got.json()) == (200, shown)
    for secret in (account.api_key, account.webhook_secret):
        assert secret not in connected.text + got.text
        assert secret not in caplog.text
    assert f"connected Stripe account {account.account_id}" in caplog.text
    # At rest, sealed for this organization: neither plaintext nor openable as another's.
    row = await accounts_db.row(tenant.organization_id)
    assert row.secret_key_sealed.startswith("v1.") and account.api_key not in row.secret_key_sealed
    assert account.webhook_secret not in row.webhook_secret_sealed
    org = tenant.organization_id
    assert sealing.unseal(row.secret_key_sealed, org, "stripe_secret_key") == account.api_key
    assert sealing.unseal(row.webhook_secret_sealed, org, "stripe_webhook_secret") == account.webhook_secret
    with pytest.raises(sealing.Unsealable):
        sealing.unseal(row.secret_key_sealed, "org_other", "stripe_secret_key")
    # Each organization is served its own account.
    accounts = accounts_db.accounts()
    assert (await accounts.charges(org)).client._requestor.api_key == account.api_key
    assert await accounts.webhook_secret(org) == account.webhook_secret


async def test_a_key_stripe_refuses_is_a_400_naming_secret_key_and_stores_nothing(
    tenant: Tenant, accounts_db: AccountsDb, caplog
):
    caplog.set_level(logging.DEBUG)
    unknown = f"sk_test_{unique('unknown')}_0123456789abcdef"
    body = {"secret_key": unknown, "webhook_secret": "whsec_abc"}
    refused = await tenant.http.post("/v1/payment_providers/stripe", json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["field"], error["reason"]) == ("secret_key", "INVALID_VALUE")
    assert error["message"].startswith(f"Stripe refused the secret key sk_test_...{unknown[-4:]}")
    assert unknown not in refused.text and unknown not in caplog.text
    assert await accounts_db.row(tenant.organization_id) is None
    missing = await tenant.http.get("/v1/payment_providers/stripe")
    assert (missing.status_code, missing.json()["error"]["field"]) == (404, "provider")


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"secret_key": "pk_test_publishable", "webhook_secret": "whsec_1"}, "secret_key", "secret (sk_...)"),
        ({"secret_key": "sk_test_1", "webhook_secret": "sk_test_swapped"}, "webhook_secret", "signing secret"),
    ],
)
async def test_what_is_not_a_secret_key_or_a_signing_secret_is_refused_before_stripe(
    tenant: Tenant, stack: Stack, body, field, message
):
    before = stack.stripe._served["GET /v1/account"]
    refused = await tenant.http.post("/v1/payment_providers/stripe", json=body)
    assert (refused.status_code, refused.json()["error"]["field"]) == (400, field)
    assert message in refused.json()["error"]["message"]
    assert stack.stripe._served["GET /v1/account"] == before


async def test_the_provider_must_be_stripe_and_both_secrets_given(tenant: Tenant):
    other = await tenant.http.post("/v1/payment_providers/paypal", json={"secret_key": "sk_1", "webhook_secret": "w"})
    assert (other.status_code, other.json()["error"]["field"]) == (400, "provider")
    blank = await tenant.http.post("/v1/payment_providers/stripe", json={"webhook_secret": "whsec_1"})
    assert (blank.status_code, blank.json()["error"]["field"]) == (400, "secret_key")


async def test_without_bxb_secret_key_nothing_is_sealed(tenant: Tenant, stack: Stack, monkeypatch):
    # Keys are stored keyed by BXB_SECRET_KEY: the gateway authenticates this one (and keeps it) before it goes.
    assert (await tenant.http.get("/v1/billable_metrics")).status_code == 200
    monkeypatch.delenv("BXB_SECRET_KEY")
    account = stack.stripe.add_account()
    body = {"secret_key": account.api_key, "webhook_secret": account.webhook_secret}
    refused = await tenant.http.post("/v1/payment_providers/stripe", json=body)
    assert (refused.status_code, refused.json()["error"]["reason"]) == (409, "SECRET_KEY_NOT_CONFIGURED")


async def test_stripe_unreachable_is_a_503_and_stores_nothing(
    tenant: Tenant, stack: Stack, infra: Infra, accounts_db: AccountsDb
):
    settings = payments_server.Settings(
        "",
        infra.postgres.url("payments"),
        infra.nats.url,
        stack.invoicing,
        stripe_api_base=f"http://127.0.0.1:{free_port()}",
    )
    service = payments_server.build(settings)
    server, address = await start(service)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = providers_pb2_grpc.PaymentProviderServiceStub(channel)
            account = stack.stripe.add_account()
            request = providers_pb2.ConnectPaymentProviderRequest(
                provider="stripe", secret_key=account.api_key, webhook_secret=account.webhook_secret
            )
            with pytest.raises(grpc.aio.AioRpcError) as unreachable:
                await stub.ConnectPaymentProvider(request, metadata=metadata(tenant.organization_id))
    finally:
        await grpc_server.stop(service, server, grace=1)
    assert unreachable.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "could not be checked" in unreachable.value.details()
    assert await accounts_db.row(tenant.organization_id) is None


async def test_connecting_again_replaces_the_key_and_every_client_follows(
    tenant: Tenant, stack: Stack, accounts_db: AccountsDb
):
    first = await tenant.connect_stripe()
    accounts = accounts_db.accounts()
    org = tenant.organization_id
    before = await accounts.charges(org)
    assert await accounts.charges(org) is before  # cached while the account is unchanged
    # The same account, a rolled key: Stripe answers the same account for it.
    rolled = f"sk_test_rolled{unique('key')}0123456789"
    stack.stripe.accounts[rolled] = first
    replaced = await tenant.http.post(
        "/v1/payment_providers/stripe", json={"secret_key": rolled, "webhook_secret": "whsec_rolled"}
    )
    assert replaced.status_code == 201, replaced.text
    shown = replaced.json()
    assert (shown["account_id"], shown["secret_key_hint"]) == (first.account_id, f"sk_test_...{rolled[-4:]}")
    assert shown["updated_at"] > shown["created_at"]
    after = await accounts.charges(org)
    assert after is not before and after.client._requestor.api_key == rolled
    assert await accounts.webhook_secret(org) == "whsec_rolled"


async def test_disconnecting_forgets_the_account_and_nothing_is_charged_any_more(
    stripe_tenant: Tenant, accounts_db: AccountsDb
):
    accounts = accounts_db.accounts()
    org = stripe_tenant.organization_id
    await accounts.charges(org)
    gone = await stripe_tenant.http.delete("/v1/payment_providers/stripe")
    assert (gone.status_code, gone.content) == (204, b"")
    assert await accounts_db.row(org) is None
    for read in (accounts.charges, accounts.webhook_secret):
        with pytest.raises(FailedPrecondition) as refused:
            await read(org)
        assert refused.value.reason == "PAYMENTS_NOT_CONFIGURED"
    assert (await stripe_tenant.http.get("/v1/payment_providers/stripe")).status_code == 404
    again = await stripe_tenant.http.delete("/v1/payment_providers/stripe")
    assert (again.status_code, again.json()["error"]["field"]) == (404, "provider")


async def test_the_environment_s_key_serves_only_the_default_organization_until_it_connects_its_own(
    stack: Stack, accounts_db: AccountsDb
):
    shortcut = stack.stripe.add_account()
    accounts = accounts_db.accounts(default_api_key=shortcut.api_key, default_webhook_secret=shortcut.webhook_secret)
    default = await accounts.charges(DEFAULT_ORGANIZATION)
    assert default.client._requestor.api_key == shortcut.api_key
    assert await accounts.webhook_secret(DEFAULT_ORGANIZATION) == shortcut.webhook_secret
    with pytest.raises(FailedPrecondition):
        await accounts.charges(await organization(stack, unique("org")))  # not another organization's
    alone = StripeAccounts(default_api_key=shortcut.api_key)  # no database: the shortcut only
    assert await alone.charges(DEFAULT_ORGANIZATION) is alone.default
    with pytest.raises(FailedPrecondition):
        await alone.webhook_secret(DEFAULT_ORGANIZATION)  # no webhook secret given


async def test_the_cache_is_bounded_and_a_secret_sealed_under_another_key_is_refused(
    stack: Stack, make_tenant, accounts_db: AccountsDb, monkeypatch, caplog
):
    tenants = [await make_tenant() for _ in range(2)]
    for tenant in tenants:
        await tenant.connect_stripe()
    accounts = accounts_db.accounts(cache_size=1)
    for tenant in tenants:
        await accounts.charges(tenant.organization_id)
    assert list(accounts._cache) == [tenants[1].organization_id]
    monkeypatch.setenv("BXB_SECRET_KEY", "another key")
    with (
        caplog.at_level(logging.ERROR, logger="bxb.payments.accounts"),
        pytest.raises(FailedPrecondition, match="sealed under another BXB_SECRET_KEY"),
    ):
        await accounts.charges(tenants[0].organization_id)
    assert "do not open" in caplog.text
    for tenant in tenants:
        await tenant.http.aclose()


def test_a_hint_shows_the_key_s_kind_and_last_four_characters_only():
    assert hint("sk_live_51Habcdefghijklmnop1234") == "sk_live_...1234"
    assert hint("rk_test_0123456789abcdefXYZW") == "rk_test_...XYZW"
    assert hint("sk_short") == "sk_..."  # too short to show any of it
    assert hint("sk_test_12") == "sk_test_..."


async def test_a_live_key_is_shown_as_live(tenant: Tenant, stack: Stack):
    live = stack.stripe.add_account(api_key=f"sk_live_{unique('acct')}0123456789abcdef")
    connected = await tenant.connect_stripe(live)
    shown = (await tenant.http.get("/v1/payment_providers/stripe")).json()
    assert (connected.account_id, shown["livemode"]) == (shown["account_id"], True)
    assert datetime.fromisoformat(shown["created_at"]) <= datetime.now(UTC)


async def test_grpc_without_an_account_is_not_found(stack: Stack):
    async with stack.channel("payments") as channel:
        stub = providers_pb2_grpc.PaymentProviderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetPaymentProvider(
                providers_pb2.GetPaymentProviderRequest(provider="stripe"),
                metadata=metadata(await organization(stack, unique("org"))),
            )
    assert (missing.value.code(), error_info(missing.value).metadata["field"]) == (
        grpc.StatusCode.NOT_FOUND,
        "provider",
    )


async def test_the_rows_are_per_organization(make_tenant, accounts_db: AccountsDb):
    a, b = await make_tenant(), await make_tenant()
    await a.connect_stripe()
    assert (await b.http.get("/v1/payment_providers/stripe")).status_code == 404
    assert (await b.http.delete("/v1/payment_providers/stripe")).status_code == 404
    assert (await a.http.get("/v1/payment_providers/stripe")).status_code == 200
    async with accounts_db.sessions() as session:
        rows = (await session.execute(select(ProviderAccount.organization_id))).scalars().all()
    assert a.organization_id in rows and b.organization_id not in rows
    for tenant in (a, b):
        await tenant.http.aclose()
