"""Rate limits: token buckets per API key and per organization, kept by each
gateway process (N replicas let N times the rate through).

Ingestion routes spend events (a batch of 500 costs 500), other routes
requests. A request must find enough tokens in both its key's and its
organization's bucket; a cost above a bucket's burst passes when the bucket
is full and leaves it in debt. Refused: 429 RATE_LIMITED with Retry-After,
the whole seconds until the tokens are there.

Limits come from the environment (generous defaults, BXB_RATE_LIMIT_*),
overridden per organization by what the catalog stores on it
(OrganizationService.SetOrganizationRateLimits, for operators); a key's own
limits default to its organization's. At most MAX_BUCKETS buckets are kept,
the least recently used dropped first: an idle bucket has refilled, so
dropping it changes nothing.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bxb.catalog.v1 import organizations_pb2
from gateway.errors import ApiError
from services.common import config

MAX_BUCKETS = 100_000
REQUESTS, EVENTS = "requests", "events"


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: float


@dataclass(frozen=True)
class Limits:
    requests: Rate
    events: Rate

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            Rate(
                positive("BXB_RATE_LIMIT_REQUESTS_PER_SECOND", 5000), positive("BXB_RATE_LIMIT_REQUEST_BURST", 10_000)
            ),
            Rate(
                positive("BXB_RATE_LIMIT_EVENTS_PER_SECOND", 100_000),
                positive("BXB_RATE_LIMIT_EVENT_BURST", 200_000),
            ),
        )

    def over(self, given: organizations_pb2.RateLimits) -> Limits:
        """These limits with what `given` sets (its zero fields keep these)."""
        return Limits(
            Rate(given.requests_per_second or self.requests.per_second, given.request_burst or self.requests.burst),
            Rate(given.events_per_second or self.events.per_second, given.event_burst or self.events.burst),
        )

    def of(self, kind: str) -> Rate:
        return self.requests if kind == REQUESTS else self.events


def positive(name: str, default: float) -> float:
    value = config.env_float(name, default)
    if value <= 0:
        raise SystemExit(f"{name} must be above 0, got {value}")
    return value


@dataclass(frozen=True)
class Scope:
    """Who spends: an organization or a key, and its limits."""

    name: str  # "org:<id>" or "key:<id>"
    limits: Limits


class Bucket:
    def __init__(self, rate: Rate, now: float):
        self.tokens = rate.burst
        self.stamp = now

    def refill(self, rate: Rate, now: float) -> None:
        self.tokens = min(rate.burst, self.tokens + (now - self.stamp) * rate.per_second)
        self.stamp = now

    def wait(self, rate: Rate, cost: float) -> float:
        """Seconds until `cost` may be spent (0: now)."""
        needed = min(cost, rate.burst)
        return 0.0 if self.tokens >= needed else (needed - self.tokens) / rate.per_second


class RateLimiter:
    def __init__(self, max_buckets: int = MAX_BUCKETS, clock: Callable[[], float] = time.monotonic):
        self.max_buckets = max_buckets
        self.clock = clock
        self._buckets: OrderedDict[tuple[str, str], Bucket] = OrderedDict()

    def _bucket(self, scope: Scope, kind: str, now: float) -> Bucket:
        key = (scope.name, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(scope.limits.of(kind), now)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.refill(scope.limits.of(kind), now)
        return bucket

    def spend(self, scopes: Sequence[Scope], kind: str, cost: int) -> None:
        """Takes `cost` from every scope's bucket of `kind`, or none of them
        and 429 when one lacks the tokens."""
        now = self.clock()
        buckets = [(self._bucket(scope, kind, now), scope.limits.of(kind)) for scope in scopes]
        wait = max(bucket.wait(rate, cost) for bucket, rate in buckets)
        if wait > 0:
            raise limited(kind, wait)
        for bucket, _ in buckets:
            bucket.tokens -= cost


def limited(kind: str, wait: float) -> ApiError:
    error = ApiError(429, "RESOURCE_EXHAUSTED", "RATE_LIMITED", f"rate limit of {kind} exceeded; retry later")
    error.retry_after = max(1, math.ceil(wait))
    return error
