"""The billing run: N subscriptions with usage in a period that has ended,
closed by one run (InvoiceService.RunBilling, as the scheduler calls it),
timed from the call to its answer; then a second run, which must issue
nothing (exactly once).

The stack runs with BXB_BILLING_SETTLE_SECONDS=0 and a scheduler interval of
an hour, so the timed run is the only one closing the period.
"""

from __future__ import annotations

import asyncio
import calendar
import random
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from bench.common import ORG
from bxb.invoicing.v1 import billing_runs_pb2, billing_runs_pb2_grpc
from bxb.metering.v1 import usage_events_pb2 as pb
from bxb.metering.v1 import usage_events_pb2_grpc
from deploy.stack import Stack
from services.common import channels, tenancy
from services.common.timestamps import to_proto

SETTINGS = {"BXB_BILLING_SETTLE_SECONDS": "0", "BXB_BILLING_INTERVAL_SECONDS": "3600"}
PLAN = {
    "code": "usage",
    "interval": "monthly",
    "amount_cents": 4900,
    "charges": [
        {
            "billable_metric_code": "api_requests",
            "charge_model": "graduated",
            "properties": {
                "graduated_ranges": [
                    {"from": 0, "to": 1000, "per_unit": "0"},
                    {"from": 1001, "to": None, "per_unit": "0.0005"},
                ]
            },
        }
    ],
}


def last_month() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    end = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (end - timedelta(days=1)).replace(day=1)
    assert calendar.monthrange(start.year, start.month)[1] == (end - start).days
    return start, end


async def setup(http: httpx.AsyncClient, subscriptions: int, start: datetime) -> None:
    metric = {"code": "api_requests", "name": "API requests", "aggregation_type": "sum", "field_name": "tokens"}
    (await http.post("/v1/billable_metrics", json=metric)).raise_for_status()
    (await http.post("/v1/plans", json=PLAN)).raise_for_status()
    gate = asyncio.Semaphore(32)

    async def subscribe(n: int) -> None:
        async with gate:
            body = {"customer_id": f"cus_{n}", "plan_code": "usage", "start_date": start.isoformat()}
            (await http.post("/v1/subscriptions", json=body)).raise_for_status()

    t0 = time.perf_counter()
    await asyncio.gather(*(subscribe(n) for n in range(subscriptions)))
    print(f"created {subscriptions} subscriptions in {time.perf_counter() - t0:.0f} s", flush=True)


async def load(address: str, subscriptions: int, per_subscription: int, start: datetime, end: datetime) -> None:
    rng = random.Random(11)
    span = (end - start).total_seconds()
    events = subscriptions * per_subscription
    t0 = time.perf_counter()
    async with channels.open_channel(address) as channel:
        stub = usage_events_pb2_grpc.EventServiceStub(channel)
        gate = asyncio.Semaphore(16)

        async def send(first: int) -> None:
            request = pb.IngestEventsRequest(
                events=[
                    pb.UsageEvent(
                        transaction_id=f"b{n}",
                        customer_id=f"cus_{n % subscriptions}",
                        code="api_requests",
                        timestamp=to_proto(start + timedelta(seconds=span * rng.random() * 0.99)),
                        properties={"tokens": str(rng.randint(1, 500))},
                    )
                    for n in range(first, min(events, first + 500))
                ]
            )
            async with gate:
                await stub.IngestEvents(request, metadata=tenancy.metadata(ORG))

        await asyncio.gather(*(send(first) for first in range(0, events, 500)))
    print(f"loaded {events} events in {time.perf_counter() - t0:.0f} s", flush=True)


async def projected(database_url: str, subscriptions: int) -> None:
    """Waits until invoicing has every subscription (its catalog events are in)."""
    connection = await asyncpg.connect(database_url)
    try:
        while True:
            if await connection.fetchval("SELECT count(*) FROM subscriptions") >= subscriptions:
                return
            await asyncio.sleep(0.5)
    finally:
        await connection.close()


async def run(stack: Stack, http: httpx.AsyncClient, subscriptions: int, per_subscription: int) -> None:
    start, end = last_month()
    await setup(http, subscriptions, start)
    await load(stack.env["BXB_METERING_ADDRESS"], subscriptions, per_subscription, start, end)
    await projected(stack.env["BXB_INVOICING_DATABASE_URL"], subscriptions)
    async with channels.open_channel(stack.env["BXB_INVOICING_ADDRESS"]) as channel:
        stub = billing_runs_pb2_grpc.BillingRunServiceStub(channel)
        meta = tenancy.metadata(ORG)
        t0 = time.perf_counter()
        first = await stub.RunBilling(billing_runs_pb2.RunBillingRequest(), metadata=meta, timeout=3600)
        took = time.perf_counter() - t0
        again = await stub.RunBilling(billing_runs_pb2.RunBillingRequest(), metadata=meta, timeout=3600)
    print(
        f"billing run: {first.invoices_created} invoices for {subscriptions} subscriptions "
        f"({per_subscription} events each) in {took:.1f} s = {first.invoices_created / took:.0f} invoices/s; "
        f"a second run issued {again.invoices_created}",
        flush=True,
    )
