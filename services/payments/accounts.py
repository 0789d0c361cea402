"""Which Stripe account charges each organization's customers.

`StripeAccounts.charges(org)` answers the client for the organization's
account, and `webhook_secret(org)` the secret its webhooks are signed with;
an organization without one is refused with PAYMENTS_NOT_CONFIGURED.
"""

from __future__ import annotations

from services.common.errors import FailedPrecondition
from services.payments.stripe_charges import StripeCharges


def not_configured() -> FailedPrecondition:
    return FailedPrecondition(
        "no payment provider is connected (POST /v1/payment_providers/stripe)", reason="PAYMENTS_NOT_CONFIGURED"
    )


class StripeAccounts:
    def __init__(self, default: StripeCharges | None = None, default_webhook_secret: str = ""):
        self.default = default
        self.default_webhook_secret = default_webhook_secret

    async def charges(self, org: str) -> StripeCharges:
        """The client of the organization's Stripe account."""
        if self.default is None:
            raise not_configured()
        return self.default

    async def webhook_secret(self, org: str) -> str:
        """The secret the organization's Stripe webhooks are signed with."""
        if not self.default_webhook_secret:
            raise not_configured()
        return self.default_webhook_secret
