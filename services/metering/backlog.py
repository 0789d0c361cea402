"""Waiting for one organization's queued events to be stored.

The intake's stream is a work queue: a message leaves it once its events are
stored. So an organization's events queued before a moment are all stored
when the stream holds no message of its subject up to the stream's last
sequence at that moment. A wait reads that sequence, then the first message
left on the subject: none, or a later one, and the wait is over (one or two
NATS requests, the common case).

Otherwise the waiter joins its subject's watch: one task per subject asks
NATS for the first message left, first after POLL_FIRST seconds, then twice
as long each time up to POLL_MAX, and releases every waiter whose sequence it
has passed. However many requests wait on one organization, that costs at
most one NATS request per POLL_MAX (about 20 a second) once the backlog
lasts. Each waiter gives up after its timeout (INGESTION_BEHIND, a 503),
and each question to NATS after NATS_DEADLINE (NATS away: a 503 too).

`lag` tells how long an organization's oldest queued message has waited:
the intake refuses more events of an organization whose lag passes its bound
(INGESTION_BACKLOG, a 503 with Retry-After), so the queue, and what a usage
query waits for, stays short however fast a client sends. While JetStream
does not answer (a cluster electing the stream's leader after a node died),
`lag` says what it last knew: the events go on to their publish, which waits
for the new leader.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime

import grpc
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.common import bus, metrics
from services.common.errors import DomainError

log = logging.getLogger("bxb.backlog")

POLL_FIRST = 0.002  # seconds before the watch first looks again
POLL_MAX = 0.05  # the longest a watch waits between two looks
AGE_KEPT = 0.2  # seconds a subject's lag is taken as read
AGES_KEPT = 10_000  # subjects whose lag is remembered at most
NATS_DEADLINE = 2.0  # seconds one question to JetStream may take (milliseconds, unless NATS is away)


class IngestionBehind(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "INGESTION_BEHIND"


class IngestionBacklogged(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "INGESTION_BACKLOG"


class Backlog:
    def __init__(self, js: JetStreamContext, stream: str, timeout: float):
        self.js = js
        self.stream = stream
        self.timeout = timeout
        # Per subject: its waiters, each (the last sequence it waits for, its future).
        self._waiting: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self._watches: dict[str, asyncio.Task[None]] = {}
        # Per subject: when its oldest message was last looked at, and how old it was then.
        self._ages: dict[str, tuple[float, float]] = {}

    async def measure(self) -> None:
        """Sets the ingestion gauges from the stream's depth and its oldest
        message's age (a metrics probe, run in the background with a deadline)."""
        state = (await self.js.stream_info(self.stream)).state
        age = 0.0
        if state.messages:  # stored meanwhile, it is not found: the probe fails, and the next one reads again
            oldest = await self.js.get_msg(self.stream, seq=state.first_seq, next=True)
            assert oldest.time is not None  # a message NATS returns has its time
            age = max(0.0, (datetime.now(UTC) - oldest.time).total_seconds())
        metrics.INGESTION_PENDING.set(state.messages)
        metrics.INGESTION_LAG.set(age)

    async def first(self, subject: str, after: int = 0) -> float:
        """The sequence of the first message left on `subject` after
        `after`, or infinity when there is none."""
        try:
            async with asyncio.timeout(NATS_DEADLINE):
                found = await self.js.get_msg(self.stream, seq=after + 1, subject=subject, next=True)
        except NotFoundError:
            return math.inf
        assert found.seq is not None  # a message NATS returns has its sequence
        return found.seq

    async def lag(self, subject: str) -> float:
        """How long the oldest message left on `subject` has waited, in
        seconds (0 for none): read from NATS at most every AGE_KEPT seconds."""
        now = asyncio.get_running_loop().time()
        seen = self._ages.get(subject)
        if seen is not None and now - seen[0] < AGE_KEPT:
            return seen[1]
        try:
            async with asyncio.timeout(NATS_DEADLINE):
                oldest = await self.js.get_msg(self.stream, seq=1, subject=subject, next=True)
        except NotFoundError:
            age = 0.0
        except bus.TRANSIENT:
            log.info("JetStream did not tell the lag of %s; taking the last known", subject, exc_info=True)
            return seen[1] if seen is not None else 0.0
        else:
            assert oldest.time is not None  # and its time
            age = max(0.0, (datetime.now(UTC) - oldest.time).total_seconds())
        if len(self._ages) >= AGES_KEPT:
            self._ages.clear()
        self._ages[subject] = (now, age)
        return age

    async def settled(self, subject: str) -> None:
        """Returns once no message of `subject` queued before the call is left."""
        async with asyncio.timeout(NATS_DEADLINE):
            first, info = await asyncio.gather(self.first(subject), self.js.stream_info(self.stream))
        target = info.state.last_seq
        if first > target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(subject, []).append((target, future))
        if subject not in self._watches:
            self._watches[subject] = asyncio.create_task(self._watch(subject, int(first)), name=f"backlog:{subject}")
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            raise IngestionBehind(
                f"events accepted before this request are still being stored; retry in a moment "
                f"(waited {self.timeout:g} s)"
            ) from None
        finally:
            self._forget(subject, future)

    def _forget(self, subject: str, future: asyncio.Future[None]) -> None:
        self._keep(subject, [(target, f) for target, f in self._waiting.get(subject, []) if f is not future])

    def _keep(self, subject: str, waiters: list[tuple[int, asyncio.Future[None]]]) -> None:
        """Sets the subject's waiters; a subject none waits on is forgotten."""
        if waiters:
            self._waiting[subject] = waiters
        else:
            self._waiting.pop(subject, None)

    async def _watch(self, subject: str, first: int) -> None:
        """Looks at the subject's first message until no waiter is left,
        releasing each waiter the stream has moved past."""
        pause = POLL_FIRST
        try:
            while self._waiting.get(subject):
                await asyncio.sleep(pause)
                pause = min(pause * 2, POLL_MAX)
                try:
                    found = await self.first(subject, first - 1)
                except Exception:  # NATS away a moment: the waiters' timeouts bound the wait
                    log.warning("backlog of %s unreadable; looking again", subject, exc_info=True)
                    continue
                waiters = self._waiting.get(subject, [])  # those left after the waits timed out
                for target, future in waiters:
                    if found > target:  # every future here is pending: a finished wait forgets its own
                        future.set_result(None)
                self._keep(subject, [(t, f) for t, f in waiters if not f.done()])
                if found != math.inf:
                    first = int(found)
        finally:  # waiters left when the watch is cancelled (at shutdown) time out
            self._watches.pop(subject, None)
