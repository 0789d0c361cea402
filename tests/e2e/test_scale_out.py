"""End-to-end scale-out: `make run`'s Stack with BXB_REPLICAS giving two
processes of every service and two gateways (embedded PostgreSQL and NATS,
one ClickHouse server the metering replicas share, Stripe as localstripe).

Two clients ingest batches of events, one through each gateway, while the
billing run bills a subscription's ended periods and a client charges each
invoice; then one replica of every service and one gateway are killed
(SIGKILL) at once, and the supervisor restarts them. A client retries a
failed request (a 503, or its gateway gone) with the same keys, as a real
one would. Afterwards: no answer was a 5xx other than 503/504 (the window an
in-flight write on a killed replica may meet; reads are retried on the other
replica by the channel), the events acknowledged are exactly the events
counted, each ended period has exactly one invoice, and Stripe charged each
invoice exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from deploy.embedded import free_port
from deploy.stack import Stack
from services.common.timestamps import utcnow
from tests.conftest import eventually, unique
from tests.e2e.test_crashes import (
    BATCH,
    PERIODS,
    PLAN,
    SETTLE,
    Customer,
    Outage,
    attempt,
    charge_every_invoice,
    month_start,
    stamp,
    subscribe,
)
from tests.e2e.test_stack import KEY, stack_env
from tests.service.test_walkthrough_bill_by_usage import METRIC
from tests.stripe import LocalStripe

REPLICAS = "metering=2,invoicing=2,catalog=2,payments=2,gateway=2"
KILLED = ("catalog-1", "metering-1", "invoicing-1", "payments-1", "gateway-1")


def two_free_ports() -> int:
    """A port that is free, and the one after it too (the second gateway's)."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


@pytest.fixture
async def stack(tmp_path: Path, localstripe: LocalStripe, clickhouse_url: str) -> AsyncIterator[Stack]:
    home = tmp_path / "home"
    env = stack_env(
        home,
        BXB_API_KEY=KEY,
        BXB_REPLICAS=REPLICAS,
        BXB_CLICKHOUSE_URL=clickhouse_url,
        BXB_CLICKHOUSE_DATABASE=unique("scale"),
        BXB_BILLING_INTERVAL_SECONDS="1",
        BXB_BILLING_SETTLE_SECONDS=str(SETTLE),
        BXB_STRIPE_API_KEY=localstripe.api_key,
        BXB_STRIPE_API_BASE=localstripe.url,
        BXB_STRIPE_TIMEOUT_SECONDS="2",
        BXB_PAYMENTS_RECOVERY_INTERVAL_SECONDS="1",
    )
    env["BXB_GATEWAY_PORT"] = str(two_free_ports())
    running = Stack(home, env)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


class Watched(Outage):
    """An Outage that also counts the failed answers of each route."""

    def __init__(self) -> None:
        super().__init__()
        self.routes: Counter[str] = Counter()

    def failed(self, route: str, answer: httpx.Response | Exception) -> None:
        super().failed(route, answer)
        status = str(answer.status_code) if isinstance(answer, httpx.Response) else type(answer).__name__
        self.routes[f"{status} {route.split('?')[0]}"] += 1


class Ingest:
    """A client sending batches of new events through one gateway until told
    to stop, each batch retried with the same keys until all are accepted."""

    def __init__(self, http: httpx.AsyncClient, customer: str, name: str, outage: Outage):
        self.http, self.customer, self.name, self.outage = http, customer, name, outage
        self.acked: dict[str, int] = {}  # transaction_id -> tokens, of events answered 202
        self.stop = asyncio.Event()

    async def run(self) -> None:
        batch = 0
        while not self.stop.is_set():
            events = [
                {
                    "transaction_id": f"{self.name}_{batch}_{i}",
                    "customer_id": self.customer,
                    "code": "api_requests",
                    "timestamp": stamp(utcnow()),
                    "properties": {"tokens": 1 + i % 7},
                }
                for i in range(BATCH)
            ]
            while True:
                response = await attempt(self.http, self.outage, "POST", "/v1/events/batch", json={"events": events})
                if response is not None and all(r["status"] == 202 for r in response.json()["results"]):
                    break
                await asyncio.sleep(0.1)
            self.acked.update((e["transaction_id"], e["properties"]["tokens"]) for e in events)
            batch += 1
            await asyncio.sleep(0.1)

    async def acknowledged(self, count: int) -> None:
        async def enough():
            assert len(self.acked) >= count

        await eventually(enough, timeout=90)


@pytest.mark.timeout(300)
async def test_one_replica_of_each_killed_under_ingest_and_billing_loses_and_doubles_nothing(
    stack: Stack, localstripe: LocalStripe
):
    assert len(stack.urls) == 2 and len(stack.supervisor.children) == 2 + 8 + 2  # postgres, nats; services; gateways
    headers = {"Authorization": f"Bearer {KEY}"}
    first, second = (httpx.AsyncClient(base_url=url, headers=headers, timeout=10) for url in stack.urls)
    async with first, second:
        assert (await first.post("/v1/billable_metrics", json=METRIC)).status_code == 201
        assert (await second.post("/v1/plans", json=PLAN)).status_code == 201
        now = utcnow()
        stripe_customer, method = await localstripe.customer_with_card()
        customer = Customer("cus_scale", stripe_customer)
        body = {
            "id": customer.id,
            "billing": {"provider": "stripe"},
            "payment_method": {"provider_customer_id": stripe_customer, "provider_payment_method": method},
        }
        assert (await first.post("/v1/customers", json=body)).status_code == 201
        outage = Watched()
        start = month_start(now, PERIODS)
        before = await subscribe(second, outage, customer.id, start, "before")
        subscribed_at = time.monotonic()
        ingests = [Ingest(http, customer.id, f"gw{i}", outage) for i, http in enumerate((first, second))]
        sending = [asyncio.create_task(ingest.run()) for ingest in ingests]
        # Charged through the gateway that stays up (a client of a dead gateway is the retry test above).
        billing = asyncio.create_task(charge_every_invoice(second, customer.id, outage, PERIODS + 1))
        await asyncio.sleep(max(0.0, subscribed_at + SETTLE - time.monotonic()))
        for ingest in ingests:
            await ingest.acknowledged(3 * BATCH)

        killed = {name: stack.supervisor.children[name].process.pid for name in KILLED}
        for pid in killed.values():
            os.kill(pid, signal.SIGKILL)
        outage.killed_at = time.monotonic()
        after = asyncio.create_task(subscribe(first, outage, customer.id, month_start(now, 1), "after"))

        async def restarted():
            assert all(stack.supervisor.restarts.get(name, 0) >= 1 for name in KILLED), stack.supervisor.restarts

        await eventually(restarted, timeout=90)
        for ingest in ingests:  # events keep flowing through both gateways after the restart
            await ingest.acknowledged(len(ingest.acked) + 3 * BATCH)
            ingest.stop.set()
        await asyncio.wait_for(asyncio.gather(*sending), 30)
        await asyncio.wait_for(billing, 120)
        customer.subscriptions = {before: PERIODS, await after: 1}

        acked = {key: tokens for ingest in ingests for key, tokens in ingest.acked.items()}
        usage = {
            "customer_id": customer.id,
            "code": "api_requests",
            "period_start": stamp(start),
            "period_end": stamp(now + timedelta(days=1)),
        }

        async def counted() -> dict:
            response = await first.post("/v1/usage/compute", json=usage)
            assert response.status_code == 200, response.text
            result = response.json()
            assert (result["events_count"], result["value"]) == (len(acked), str(sum(acked.values())))
            return result

        await eventually(counted, timeout=60)
        invoices = await customer.billed_once(second, localstripe, now)
    print(f"scale-out: killed {killed}; failed answers {dict(outage.routes)}; {len(acked)} events; {invoices}")
    assert not outage.wrong, outage.wrong  # no 500, no client timeout
    assert all(status in ("503", "504") for status in outage.statuses if status.startswith("5")), outage.statuses
    assert all(stack.supervisor.children[name].process.pid != pid for name, pid in killed.items())
