"""The recovery sweep: attempts left in flight by a process that died
mid-call, or whose outcome stayed unknown, are looked up at the provider at
start and every `interval`, without waiting for someone to charge again.

Each is taken over as the charge route would (charging.Charging.resume): the
intent Stripe made for it is recorded; when Stripe has none, the attempt is
made, with its own idempotency key and request, as it was asked to be.
"""

from __future__ import annotations

import logging

from services.common.errors import DomainError
from services.common.worker import Worker
from services.payments import attempts
from services.payments.charging import Charging

log = logging.getLogger("bxb.payments.recovery")


class Recovery(Worker):
    def __init__(self, charging: Charging, interval: float):
        super().__init__(
            "payments-recovery", interval, self._more, log, "recovery sweep failed; retrying on the next tick"
        )
        self.charging = charging

    async def _more(self) -> bool:
        """One sweep of every abandoned attempt: nothing more waits after it."""
        await self.sweep()
        return False

    async def sweep(self) -> None:
        for payment_id in await attempts.abandoned(self.charging.sessions, self.charging.stale_after):
            try:
                await self.charging.resume(payment_id)
            except DomainError as error:  # still unknown, or refused: the next sweep tries again
                log.warning("payment %s: its abandoned attempt stays open: %s", payment_id, error.message)
