"""Which Stripe account charges each organization's customers.

Each organization connects its own account (providers.py); its secret key
and webhook signing secret are kept sealed in provider_accounts.
`charges(org)` answers a client of that key, and `webhook_secret(org)` the
secret its webhooks are signed with. Clients are cached per organization,
and the cache is checked against the account's update_time on every call:
a key replaced or disconnected, by any replica, is never used again. The
cache is bounded (least recently used out); every client shares one
connection pool, which holds no key.

BXB_STRIPE_API_KEY and BXB_STRIPE_WEBHOOK_SECRET stay the default
organization's shortcut (`make run`): they serve `org_default`, the
organization catalog makes for BXB_API_KEY, while it has connected nothing,
and no other organization. BXB_STRIPE_API_BASE (a test double's address)
holds for every account. An organization without an account is refused
with PAYMENTS_NOT_CONFIGURED.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common import sealing
from services.common.errors import FailedPrecondition
from services.payments.models import ProviderAccount
from services.payments.stripe_charges import StripeCharges
from services.payments.stripe_http import MeasuredHTTPXClient

log = logging.getLogger("bxb.payments.accounts")

STRIPE = "stripe"
# The organization catalog makes for BXB_API_KEY (services/catalog/organizations.py).
DEFAULT_ORGANIZATION = "org_default"
# What each sealed secret is for: a sealed value opens only for its own purpose and organization.
SECRET_KEY_PURPOSE, WEBHOOK_SECRET_PURPOSE = "stripe_secret_key", "stripe_webhook_secret"


def not_configured() -> FailedPrecondition:
    return FailedPrecondition(
        "no payment provider is connected (POST /v1/payment_providers/stripe)", reason="PAYMENTS_NOT_CONFIGURED"
    )


@dataclass(frozen=True)
class Connected:
    """An organization's account as last read: its client and webhook secret."""

    update_time: datetime
    charges: StripeCharges
    webhook_secret: str


class StripeAccounts:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        api_base: str = "",
        timeout: float = 20.0,
        default_api_key: str = "",
        default_webhook_secret: str = "",
        cache_size: int = 256,
        return_url: str = "",
    ):
        self.sessions = sessions  # provider_accounts; None: the default organization's shortcut only
        self.api_base = api_base
        self.timeout = timeout
        self.http = MeasuredHTTPXClient(timeout=timeout)
        self.return_url = return_url  # where Stripe sends a customer back after 3-D Secure
        self.default = self.client(default_api_key) if default_api_key else None
        self.default_webhook_secret = default_webhook_secret
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Connected] = OrderedDict()

    def client(self, api_key: str) -> StripeCharges:
        """A client of the account `api_key` belongs to (a key being connected, before it is stored)."""
        return StripeCharges(api_key, self.api_base, self.timeout, http_client=self.http, return_url=self.return_url)

    async def _connected(self, org: str, session: AsyncSession | None = None) -> Connected | None:
        """The organization's connected account, None when it has none."""
        if self.sessions is None:
            return None
        query = select(ProviderAccount).where(
            ProviderAccount.organization_id == org, ProviderAccount.provider == STRIPE
        )
        if session is None:
            async with self.sessions() as own:
                row = (await own.execute(query)).scalar_one_or_none()
        else:
            row = (await session.execute(query)).scalar_one_or_none()
        if row is None:
            self._cache.pop(org, None)
            return None
        cached = self._cache.get(org)
        if cached is not None and cached.update_time == row.update_time:
            self._cache.move_to_end(org)
            return cached
        try:
            api_key = sealing.unseal(row.secret_key_sealed, org, SECRET_KEY_PURPOSE)
            webhook_secret = sealing.unseal(row.webhook_secret_sealed, org, WEBHOOK_SECRET_PURPOSE)
        except sealing.Unsealable:
            log.error("organization %s: its Stripe secrets do not open with this BXB_SECRET_KEY", org)
            raise FailedPrecondition(
                "the organization's Stripe secrets were sealed under another BXB_SECRET_KEY: connect the account again",
                reason="PAYMENTS_NOT_CONFIGURED",
            ) from None
        connected = self._cache[org] = Connected(row.update_time, self.client(api_key), webhook_secret)
        self._cache.move_to_end(org)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return connected

    async def charges(self, org: str, session: AsyncSession | None = None) -> StripeCharges:
        """The client of the organization's Stripe account; read through
        `session` when the caller holds a transaction open, so that it takes
        no second connection meanwhile (a full pool would wait on itself)."""
        connected = await self._connected(org, session)
        if connected is not None:
            return connected.charges
        if org == DEFAULT_ORGANIZATION and self.default is not None:
            return self.default
        raise not_configured()

    async def webhook_secret(self, org: str) -> str:
        """The secret the organization's Stripe webhooks are signed with."""
        connected = await self._connected(org)
        if connected is not None:
            return connected.webhook_secret
        if org == DEFAULT_ORGANIZATION and self.default_webhook_secret:
            return self.default_webhook_secret
        raise not_configured()
