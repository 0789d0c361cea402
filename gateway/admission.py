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

An organization's share follows its own latency (additive increase,
multiplicative decrease): requests slower than the lane's `target` narrow it,
down to one request at a time, and faster ones widen it back. When the
machine is busy (ingestion at full speed, a billing run), fewer of its
requests run at once and each finishes sooner, the rest being refused at
once; one organization's slow requests narrow only its own share.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.errors import ApiError

READ_POSTS = frozenset({"/v1/pricing/calculate", "/v1/usage/compute", "/v1/invoices/preview"})
INGEST_PATHS = frozenset({"/v1/events", "/v1/events/batch", "/v1/events/backfill"})


@dataclass(frozen=True)
class Lane:
    limit: int  # requests in flight at once
    share: int  # of which one organization may hold at most
    wait: float  # seconds a request may wait for a slot
    target: float  # seconds a started request should take: slower ones narrow the organization's share


LANES = {
    "read": Lane(16, 8, 0.25, target=0.5),
    "ingest": Lane(8, 4, 2.0, target=2.0),
    "write": Lane(16, 8, 2.0, target=2.0),
}
NARROWING = 0.75  # a slow answer multiplies the share by this (once per target at most)


class Share:
    """One organization's slots in a lane: at most `size` requests at once,
    `size` moving between 1 and the lane's share with the requests' time."""

    def __init__(self, lane: Lane):
        self.lane = lane
        self.size = float(lane.share)
        self.busy = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._narrowed_at = -lane.target

    async def acquire(self, timeout: float) -> None:
        """Takes a slot within `timeout` seconds (TimeoutError when none frees up)."""
        if self.busy < int(self.size) and not self._waiting:
            self.busy += 1
            return
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(slot)
        try:
            await asyncio.wait_for(asyncio.shield(slot), timeout)
        except BaseException:
            if slot.done():  # handed over just as the wait ended: pass it on
                self.release(None)
            else:
                slot.cancel()
            raise

    def release(self, took: float | None) -> None:
        """Gives a slot back, `took` seconds after it was taken (None: unused)."""
        self.busy -= 1
        if took is not None:
            self._learn(took)
        while self._waiting and self.busy < int(self.size):
            slot = self._waiting.popleft()
            if not slot.done():
                self.busy += 1
                slot.set_result(None)

    def _learn(self, took: float) -> None:
        now = asyncio.get_running_loop().time()
        if took > self.lane.target:
            if now - self._narrowed_at >= self.lane.target:  # one narrowing per slow spell, not per answer
                self.size = max(1.0, self.size * NARROWING)
                self._narrowed_at = now
        else:
            self.size = min(float(self.lane.share), self.size + 1 / self.size)


def kind_of(method: str, path: str) -> str:
    """The lane a request goes through."""
    if method == "GET" or path in READ_POSTS:
        return "read"
    return "ingest" if path in INGEST_PATHS else "write"


class Admission:
    def __init__(self, lanes: dict[str, Lane] = LANES):
        self.lanes = lanes
        self._slots = {kind: asyncio.Semaphore(lane.limit) for kind, lane in lanes.items()}
        self._shares: dict[tuple[str, str], Share] = {}

    def _share(self, kind: str, org: str) -> Share:
        """The organization's share of a lane (one per organization and lane,
        as many as there are organizations)."""
        key = (kind, org)
        if key not in self._shares:
            self._shares[key] = Share(self.lanes[kind])
        return self._shares[key]

    @contextlib.asynccontextmanager
    async def enter(self, kind: str, org: str) -> AsyncIterator[None]:
        """Holds a slot of `kind` for `org` while the request runs; 503 when
        none frees up within the lane's wait."""
        lane, share = self.lanes[kind], self._share(kind, org)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lane.wait
        try:
            await share.acquire(lane.wait)
        except TimeoutError:
            raise overloaded(kind) from None
        took = None
        try:
            try:
                await asyncio.wait_for(self._slots[kind].acquire(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise overloaded(kind) from None
            started = loop.time()
            try:
                yield
            finally:
                took = loop.time() - started
                self._slots[kind].release()
        finally:
            share.release(took)


def overloaded(kind: str) -> ApiError:
    return ApiError(503, "UNAVAILABLE", "OVERLOADED", f"too many {kind} requests at once; retry in a moment")
