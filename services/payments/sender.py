"""The sender: every delivery (to webhook endpoints and analytics
integrations alike) sent, retried and recorded, in every replica.

1. Claim: one short transaction leases due PENDING deliveries
   (`UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`,
   `lease_until` a deadline past the request's own): two replicas never send
   one delivery at once, and a replica that dies leaves leases that run out.
   A delivery is due only when no earlier one (lower `sequence`) of the same
   sink and customer is still pending: each sink gets each customer's events
   in order, while other customers and other sinks go on meanwhile (events
   of no customer are not ordered). Only as many are claimed as there are
   free slots: `concurrency` requests in flight per process, and
   `sink_concurrency` per sink, so a sink that never answers holds its own
   slots only, never another endpoint's or organization's.
2. Send, no transaction open: the sink (webhook_sink.WebhookSink for an
   endpoint, the integration provider's Vendor sink) within its deadline.
3. Record, in a new transaction: the attempt, and the delivery SUCCEEDED;
   else retried after `retry_schedule[attempt - 1]` seconds (jittered by
   20%), FAILED once the schedule is spent or the sink refused it for good.
   An endpoint's first failure starts `failing_since`, a success clears it;
   an endpoint failing longer than `disable_after` is disabled, its pending
   deliveries CANCELED, and `webhook_endpoint.disabled` is announced to the
   organization's other endpoints. An integration keeps its last sync and
   last error.

The sender runs when woken (something announced, a delivery finished) and
every `interval` seconds. Stopping hands back the leases of what was in
flight, so the next process sends it at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import httpx
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common import sealing
from services.common.ids import new_id
from services.common.timestamps import utcnow
from services.common.worker import Worker
from services.payments import public_json
from services.payments.announcing import Announcer, Draft
from services.payments.models import (
    DELIVERY_FAILED,
    DELIVERY_PENDING,
    DELIVERY_SUCCEEDED,
    Announcement,
    Delivery,
    DeliveryAttempt,
    Integration,
    WebhookEndpoint,
)
from services.payments.sinks import Account, Outgoing, Sent, Sink, Vendor
from services.payments.webhook_endpoints import SECRET_PURPOSE, cancel_pending, endpoint_proto
from services.payments.webhook_sink import WebhookSink

log = logging.getLogger("bxb.payments.sender")
INTEGRATION_KEY_PURPOSE = "integration_api_key"
JITTER = 0.2  # each retry's wait is its schedule's, give or take this fraction
# How long past a request's deadline a claim is still trusted to its sender.
LEASE_MARGIN_SECONDS = 30.0

CLAIM = text(
    """
WITH busy(sink_id, n) AS (
    SELECT * FROM unnest(CAST(:busy_sinks AS varchar[]), CAST(:busy_counts AS integer[]))
),
due AS (
    SELECT d.id, d.sink_id,
           row_number() OVER (PARTITION BY d.sink_id ORDER BY d.next_attempt_time, d.sequence) AS place
    FROM deliveries d
    WHERE d.status = :pending AND d.next_attempt_time <= :now
      AND (d.lease_until IS NULL OR d.lease_until <= :now)
      AND (d.endpoint_id IS NULL
           OR EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = d.endpoint_id AND w.enabled))
      AND (d.customer_id = ''
           OR NOT EXISTS (SELECT 1 FROM deliveries e
                          WHERE e.status = :pending AND e.sink_id = d.sink_id
                            AND e.customer_id = d.customer_id AND e.sequence < d.sequence))
)
UPDATE deliveries SET lease_until = :lease_until
WHERE id IN (
    SELECT d.id FROM deliveries d
    JOIN due ON due.id = d.id
    LEFT JOIN busy ON busy.sink_id = due.sink_id
    WHERE due.place <= :per_sink - coalesce(busy.n, 0)
      AND d.status = :pending AND (d.lease_until IS NULL OR d.lease_until <= :now)
    ORDER BY d.next_attempt_time, d.sequence
    LIMIT :batch
    FOR UPDATE OF d SKIP LOCKED
)
RETURNING id
"""
)


class Unsendable(Exception):
    """A delivery that cannot be sent as things are (no such vendor, a secret that does not open)."""


@dataclass(frozen=True)
class Job:
    """One claimed delivery, with what sending it takes."""

    delivery_id: str
    sink_id: str
    outgoing: Outgoing
    endpoint: WebhookEndpoint | None
    integration: Integration | None


class Sender(Worker):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        announcer: Announcer,
        vendors: Mapping[str, Vendor],
        http: httpx.AsyncClient,
        *,
        webhook_timeout: float,
        retry_schedule: tuple[float, ...],
        disable_after: float,
        interval: float = 1.0,
        concurrency: int = 64,
        sink_concurrency: int = 4,
        lease: float = 0.0,
    ):
        super().__init__("payments-sender", interval, self._claim_and_send, log, "sending deliveries failed")
        self.sessions = sessions
        self.announcer = announcer  # tells the other endpoints that one was disabled
        self.vendors = vendors  # the analytics tools, by provider
        self.http = http  # the process's webhook client (webhook_sink.client)
        self.webhook_timeout = webhook_timeout
        self.retry_schedule = retry_schedule
        self.disable_after = timedelta(seconds=disable_after)
        self.concurrency = concurrency
        self.sink_concurrency = sink_concurrency
        self.lease = timedelta(seconds=lease or webhook_timeout + LEASE_MARGIN_SECONDS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, int] = {}  # requests in flight per sink
        self._held: set[str] = set()  # deliveries claimed and not yet recorded

    async def _claim_and_send(self) -> bool:
        """Claims what free slots allow and starts sending it; each delivery
        done wakes the loop again, so nothing more is said to be waiting."""
        free = self.concurrency - len(self._tasks)
        if free > 0:
            for job in await self._claim(free):
                self._start(job)
        return False

    def _start(self, job: Job) -> None:
        self._in_flight[job.sink_id] = self._in_flight.get(job.sink_id, 0) + 1
        self._held.add(job.delivery_id)
        task = asyncio.create_task(self._deliver(job), name=f"delivery {job.delivery_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim(self, batch: int) -> list[Job]:
        now = utcnow()
        busy = {sink: n for sink, n in self._in_flight.items() if n}
        async with self.sessions() as session, session.begin():
            claimed = await session.execute(
                CLAIM,
                {
                    "busy_sinks": list(busy),
                    "busy_counts": list(busy.values()),
                    "pending": DELIVERY_PENDING,
                    "now": now,
                    "lease_until": now + self.lease,
                    "per_sink": self.sink_concurrency,
                    "batch": batch,
                },
            )
            ids = list(claimed.scalars())
            if not ids:
                return []
            rows = await session.execute(
                select(Delivery, Announcement, WebhookEndpoint, Integration)
                .join(Announcement, Announcement.id == Delivery.announcement_id)
                .outerjoin(WebhookEndpoint, WebhookEndpoint.id == Delivery.endpoint_id)
                .outerjoin(Integration, Integration.id == Delivery.integration_id)
                .where(Delivery.id.in_(ids))
                .order_by(Delivery.next_attempt_time, Delivery.sequence)
            )
            return [
                Job(
                    delivery.id,
                    delivery.sink_id,
                    Outgoing(
                        delivery_id=delivery.id,
                        event_id=announcement.id,
                        organization_id=announcement.organization_id,
                        type=announcement.type,
                        customer_id=announcement.customer_id,
                        occur_time=announcement.occur_time,
                        payload=announcement.payload,
                    ),
                    endpoint,
                    integration,
                )
                for delivery, announcement, endpoint, integration in rows
            ]

    async def _deliver(self, job: Job) -> None:
        try:
            sent = await self._send(job)
            await self._record(job, sent)
        except Exception:  # the lease runs out and another round sends it again
            log.exception("delivery %s could not be recorded; it is sent again once its lease ends", job.delivery_id)
        self._held.discard(job.delivery_id)
        self._in_flight[job.sink_id] -= 1
        self.wake()  # a slot is free, and the customer's next delivery may be due

    @staticmethod
    def _open(sealed: str, org: str, purpose: str, what: str) -> str:
        try:
            return sealing.unseal(sealed, org, purpose)
        except sealing.Unsealable:
            raise Unsendable(f"{what} does not open (sealed under another BXB_SECRET_KEY?)") from None

    def _sink(self, job: Job, now: datetime) -> Sink:
        org = job.outgoing.organization_id
        endpoint = job.endpoint
        if endpoint is not None:
            secrets = [self._open(endpoint.secret_sealed, org, SECRET_PURPOSE, "the endpoint's signing secret")]
            expire = endpoint.previous_secret_expire_time
            if endpoint.previous_secret_sealed and expire is not None and expire > now:
                secrets.append(
                    self._open(endpoint.previous_secret_sealed, org, SECRET_PURPOSE, "the endpoint's previous secret")
                )
            return WebhookSink(self.http, endpoint.url, secrets, self.webhook_timeout)
        integration = job.integration
        assert integration is not None  # a delivery has exactly one sink
        vendor = self.vendors.get(integration.provider)
        if vendor is None:
            raise Unsendable(f"no {integration.provider!r} integration in this bxb: nothing sends to it")
        api_key = self._open(integration.api_key_sealed, org, INTEGRATION_KEY_PURPOSE, "the integration's API key")
        return vendor.sink(Account(org, api_key, integration.data_source_id))

    async def _send(self, job: Job) -> Sent:
        try:
            sink = self._sink(job, utcnow())
        except Unsendable as error:
            return Sent(False, error=str(error))
        return await sink.send(job.outgoing)

    def _retry_at(self, now: datetime, attempts: int) -> datetime | None:
        """When the next attempt is due after `attempts`, or None once the schedule is spent."""
        if attempts > len(self.retry_schedule):
            return None
        wait = self.retry_schedule[attempts - 1] * random.uniform(1 - JITTER, 1 + JITTER)
        return now + timedelta(seconds=wait)

    async def _record(self, job: Job, sent: Sent) -> None:
        now = utcnow()
        async with self.sessions() as session, session.begin():
            delivery = await session.get(Delivery, job.delivery_id, with_for_update=True)
            if delivery is None:
                return  # its endpoint or integration was removed meanwhile, and its deliveries with it
            session.add(
                DeliveryAttempt(
                    delivery_id=delivery.id,
                    attempt_time=now - timedelta(milliseconds=sent.latency_ms),
                    status_code=sent.status_code,
                    latency_ms=sent.latency_ms,
                    response_snippet=sent.response_snippet[:1000],
                    error=sent.error[:1000],
                    succeeded=sent.succeeded,
                )
            )
            if delivery.status != DELIVERY_PENDING:
                return  # canceled meanwhile (its endpoint disabled): the attempt is kept, nothing more
            delivery.attempt_count += 1
            delivery.last_status_code = sent.status_code
            delivery.last_error = sent.error[:1000]
            delivery.lease_until = None
            retry_at = None if sent.succeeded or sent.permanent else self._retry_at(now, delivery.attempt_count)
            delivery.next_attempt_time = retry_at
            if retry_at is None:
                delivery.status = DELIVERY_SUCCEEDED if sent.succeeded else DELIVERY_FAILED
                delivery.finish_time = now
            await session.flush()
            if delivery.endpoint_id is not None:
                await self._endpoint_outcome(session, delivery.endpoint_id, sent.succeeded, now)
            else:
                await self._integration_outcome(session, job.sink_id, sent, now)
        if retry_at is not None:
            self.wake_at(retry_at)  # the retry goes out when due, not on a later sweep

    async def _endpoint_outcome(self, session: AsyncSession, endpoint_id: str, succeeded: bool, now: datetime) -> None:
        endpoints = update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
        if succeeded:
            await session.execute(
                endpoints.where(WebhookEndpoint.failing_since.is_not(None)).values(failing_since=None)
            )
            return
        failing = await session.execute(
            endpoints.values(failing_since=func.coalesce(WebhookEndpoint.failing_since, now)).returning(
                WebhookEndpoint.failing_since
            )
        )
        since = cast(datetime, failing.scalar_one())  # just set, if it was not
        if now - since > self.disable_after:
            await self._disable(session, endpoint_id, since, now)

    async def _disable(self, session: AsyncSession, endpoint_id: str, since: datetime, now: datetime) -> None:
        """The endpoint disabled, what waits for it canceled, the organization's other endpoints told."""
        reason = f"every delivery failed since {since.isoformat(timespec='seconds')}"
        endpoint = (
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id)
                .values(enabled=False, disabled_reason=reason, update_time=now)
                .returning(WebhookEndpoint)
                .execution_options(populate_existing=True)
            )
        ).scalar_one()
        await cancel_pending(session, endpoint_id, now)
        log.warning("webhook endpoint %s disabled: %s", endpoint_id, reason)
        draft = Draft(
            organization_id=endpoint.organization_id,
            type="webhook_endpoint.disabled",
            customer_id="",
            source_key=f"webhook_endpoint.disabled:{endpoint_id}:{new_id('off')}",
            occur_time=now,
            data={"webhook_endpoint": public_json.render(endpoint_proto(endpoint))},
        )
        await self.announcer.announce(session, draft, now)

    @staticmethod
    async def _integration_outcome(session: AsyncSession, integration_id: str, sent: Sent, now: datetime) -> None:
        integrations = update(Integration).where(Integration.id == integration_id)
        if sent.succeeded:
            await session.execute(integrations.values(last_sync_time=now))
        else:
            await session.execute(integrations.values(last_error=sent.error[:1000], last_error_time=now))

    async def stop(self) -> None:
        """Stops claiming, cancels what is in flight and hands its leases back."""
        await super().stop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        held, self._held = list(self._held), set()
        # Best effort: a lease not handed back runs out by itself.
        with contextlib.suppress(SQLAlchemyError, OSError):
            async with self.sessions() as session, session.begin():
                await session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(held), Delivery.status == DELIVERY_PENDING)
                    .values(lease_until=None)
                )
