"""Admission control: how many requests of each kind one gateway process
lets through to the services at once, so that overload is shed at once
instead of queueing into 30-second hangs.

Requests are of three kinds, each with its own lane, so that none starves
another: reads (GETs, price calculations, usage computations, previews),
ingestion (events), and other writes. A lane lets `limit` requests in
flight; one organization holds at most `share` of them, so a flood from one
tenant never fills a lane for the others. A request that cannot start within
the lane's `wait` is refused with 503 OVERLOADED and Retry-After: the client
learns at once to come back, and what is let through stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.errors import ApiError

READ_POSTS = frozenset({"/v1/pricing/calculate", "/v1/usage/compute", "/v1/invoices/preview"})
INGEST_PATHS = frozenset({"/v1/events", "/v1/events/batch", "/v1/events/backfill"})


@dataclass(frozen=True)
class Lane:
    limit: int  # requests in flight at once
    share: int  # of which one organization may hold
    wait: float  # seconds a request may wait for a slot


LANES = {"read": Lane(16, 8, 0.25), "ingest": Lane(8, 4, 2.0), "write": Lane(16, 8, 2.0)}


def kind_of(method: str, path: str) -> str:
    """The lane a request goes through."""
    if method == "GET" or path in READ_POSTS:
        return "read"
    return "ingest" if path in INGEST_PATHS else "write"


class Admission:
    def __init__(self, lanes: dict[str, Lane] = LANES):
        self.lanes = lanes
        self._slots = {kind: asyncio.Semaphore(lane.limit) for kind, lane in lanes.items()}
        self._shares: dict[tuple[str, str], asyncio.Semaphore] = {}

    def _share(self, kind: str, org: str) -> asyncio.Semaphore:
        """The organization's share of a lane (one semaphore per organization
        and lane, as many as there are organizations)."""
        key = (kind, org)
        if key not in self._shares:
            self._shares[key] = asyncio.Semaphore(self.lanes[kind].share)
        return self._shares[key]

    @contextlib.asynccontextmanager
    async def enter(self, kind: str, org: str) -> AsyncIterator[None]:
        """Holds a slot of `kind` for `org` while the request runs; 503 when
        none frees up within the lane's wait."""
        lane, share = self.lanes[kind], self._share(kind, org)
        deadline = asyncio.get_running_loop().time() + lane.wait
        try:
            await asyncio.wait_for(share.acquire(), lane.wait)
        except TimeoutError:
            raise overloaded(kind) from None
        try:
            try:
                await asyncio.wait_for(
                    self._slots[kind].acquire(), max(0.0, deadline - asyncio.get_running_loop().time())
                )
            except TimeoutError:
                raise overloaded(kind) from None
            try:
                yield
            finally:
                self._slots[kind].release()
        finally:
            share.release()


def overloaded(kind: str) -> ApiError:
    return ApiError(503, "UNAVAILABLE", "OVERLOADED", f"too many {kind} requests at once; retry in a moment")
