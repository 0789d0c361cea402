"""An organization's own Stripe account (PaymentProviderService).

Connecting checks the key at Stripe (`GET /v1/account`, which names the
account), then stores the key and the webhook signing secret sealed
(services/common/sealing.py, under BXB_SECRET_KEY; refused while it is
unset, as the development default is public). No answer and no log line
holds a secret: only the key's hint ("sk_test_...4242"). Connecting again
replaces the secrets; when the key is another account's, the
organization's customers are checked again against it (linking.py).
Disconnecting forgets the account: nothing is charged any more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from google.protobuf import empty_pb2
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.payments.v1 import providers_pb2 as pb
from bxb.payments.v1 import providers_pb2_grpc
from services.common import sealing, tenancy
from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.common.grpc_server import Context
from services.common.timestamps import to_proto
from services.payments import stripe_customers
from services.payments.accounts import SECRET_KEY_PURPOSE, STRIPE, WEBHOOK_SECRET_PURPOSE, StripeAccounts
from services.payments.models import LINK_LINKED, LINK_PENDING, ProviderAccount, ProviderCustomer
from services.payments.stripe_charges import Unreachable

log = logging.getLogger("bxb.payments.providers")


def hint(secret_key: str) -> str:
    """The key's prefix and last four characters, "sk_test_...4242": enough to tell keys apart."""
    head = secret_key[: secret_key.find("_", 3) + 1] or secret_key[:3]
    tail = secret_key[-4:] if len(secret_key) >= len(head) + 12 else ""
    return f"{head}...{tail}"


def webhook_path(org: str) -> str:
    return f"/v1/webhooks/stripe/{org}"


def provider_proto(account: ProviderAccount) -> pb.PaymentProvider:
    return pb.PaymentProvider(
        provider=account.provider,
        account_id=account.account_id,
        livemode=account.livemode,
        secret_key_hint=account.secret_key_hint,
        webhook_path=webhook_path(account.organization_id),
        create_time=to_proto(account.create_time),
        update_time=to_proto(account.update_time),
    )


def _refused_key(message: str) -> InvalidArgument:
    return InvalidArgument(message, field="secret_key", reason="INVALID_VALUE")


class PaymentProviderServicer(providers_pb2_grpc.PaymentProviderServiceServicer):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        accounts: StripeAccounts,
        connected: Callable[[], None] = lambda: None,
    ):
        self.sessions = sessions
        self.accounts = accounts  # builds the client that checks a key
        self.connected = connected  # told when an account is connected: customers wait for one

    async def _check(self, secret_key: str) -> str:
        """The id of the account the key belongs to, as Stripe says."""
        if not secret_key.startswith(("sk_", "rk_")):
            raise _refused_key("secret_key must be a secret (sk_...) or restricted (rk_...) key")
        try:
            account = await stripe_customers.account(self.accounts.client(secret_key))
        except Unreachable as error:
            raise Unavailable(f"the key could not be checked: {error}") from None
        except (stripe_customers.Refused, stripe_customers.Missing):
            # Stripe's own message is left out: it may quote the key.
            raise _refused_key(
                f"Stripe refused the secret key {hint(secret_key)}: it must be a valid secret or restricted key "
                "that may read its account (GET /v1/account)"
            ) from None
        return account.id

    async def ConnectPaymentProvider(
        self, request: pb.ConnectPaymentProviderRequest, context: Context
    ) -> pb.PaymentProvider:
        org = tenancy.organization_id()
        if not request.webhook_secret.startswith("whsec_"):
            raise InvalidArgument(
                "webhook_secret must be the endpoint's signing secret (whsec_...)",
                field="webhook_secret",
                reason="INVALID_VALUE",
            )
        sealing.require_secret_key()
        account_id = await self._check(request.secret_key)
        shown = hint(request.secret_key)
        values = {
            "account_id": account_id,
            "livemode": shown.startswith(("sk_live_", "rk_live_")),  # Stripe's Account carries no livemode
            "secret_key_sealed": sealing.seal(request.secret_key, org, SECRET_KEY_PURPOSE),
            "webhook_secret_sealed": sealing.seal(request.webhook_secret, org, WEBHOOK_SECRET_PURPOSE),
            "secret_key_hint": shown,
            "update_time": func.clock_timestamp(),
        }
        async with self.sessions() as session, session.begin():
            key = (ProviderAccount.organization_id == org, ProviderAccount.provider == STRIPE)
            before = (await session.execute(select(ProviderAccount.account_id).where(*key).with_for_update())).first()
            upsert = insert(ProviderAccount).values(organization_id=org, provider=STRIPE, **values)
            await session.execute(
                upsert.on_conflict_do_update(index_elements=["organization_id", "provider"], set_=values)
            )
            account = (await session.execute(select(ProviderAccount).where(*key))).scalar_one()
            customers = update(ProviderCustomer).where(ProviderCustomer.organization_id == org)
            if before is not None and before.account_id != account_id:
                # Linked to another account: each customer is checked again against this one.
                await session.execute(
                    customers.where(ProviderCustomer.status == LINK_LINKED).values(status=LINK_PENDING)
                )
            # Customers waiting for an account are due now.
            await session.execute(
                customers.where(ProviderCustomer.status == LINK_PENDING).values(next_attempt_time=None, attempt_count=0)
            )
        log.info("organization %s connected Stripe account %s with key %s", org, account_id, shown)
        self.connected()
        return provider_proto(account)

    async def GetPaymentProvider(self, request: pb.GetPaymentProviderRequest, context: Context) -> pb.PaymentProvider:
        org = tenancy.organization_id()
        async with self.sessions() as session:
            account = await session.get(ProviderAccount, (org, request.provider))
        if account is None:
            raise NotFound(f"no {request.provider} account is connected", field="provider")
        return provider_proto(account)

    async def DisconnectPaymentProvider(
        self, request: pb.DisconnectPaymentProviderRequest, context: Context
    ) -> empty_pb2.Empty:
        org = tenancy.organization_id()
        async with self.sessions() as session, session.begin():
            deleted = await session.execute(
                delete(ProviderAccount)
                .where(ProviderAccount.organization_id == org, ProviderAccount.provider == request.provider)
                .returning(ProviderAccount.account_id)
            )
            account_id = deleted.scalar_one_or_none()
        if account_id is None:
            raise NotFound(f"no {request.provider} account is connected", field="provider")
        log.info("organization %s disconnected Stripe account %s", org, account_id)
        return empty_pb2.Empty()
