"""The one HTTP client every Stripe request goes through, measured: each
request's latency by API resource (payment_intents, refunds, ...) and
outcome, and its failures (metrics.py). Labels are bounded: the resource is
the first segment after /v1/, never an id."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import stripe

from services.common import metrics

# The outcome of an answer by its status: what counts as a failure of Stripe's, and why.
FAILED = {429: "rate_limited"}


def resource_of(url: str) -> str:
    """The API resource a request addresses: "payment_intents" of /v1/payment_intents/pi_123."""
    parts = urlsplit(url).path.strip("/").split("/")
    return parts[1] if len(parts) > 1 and parts[1] else "other"


def outcome_of(status: int) -> tuple[str, str]:
    """(outcome, failure reason or "") of an answer's HTTP status."""
    if status >= 500 or status in FAILED:
        return "failed", FAILED.get(status, "server_error")
    return ("ok" if status < 400 else "refused"), ""


class MeasuredHTTPXClient(stripe.HTTPXClient):
    """stripe.HTTPXClient, each asynchronous request timed and its failures counted."""

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        resource = resource_of(url)
        started = time.perf_counter()
        outcome, reason = "unreachable", "unreachable"
        try:
            answer: tuple[bytes, int, Mapping[str, str]] = await super().request_async(method, url, headers, post_data)
            outcome, reason = outcome_of(answer[1])
            return answer
        except asyncio.CancelledError:  # bxb's deadline for the attempt (StripeCharges.answering) passed
            outcome, reason = "cancelled", "deadline"
            raise
        finally:
            metrics.STRIPE_SECONDS.labels(resource, outcome).observe(time.perf_counter() - started)
            if reason:
                metrics.STRIPE_FAILURES.labels(resource, reason).inc()
