"""POST /v1/pricing/calculate for a subscription with 20 charges over 1M
stored events.

The events go in through the metering service's gRPC batch ingestion (the
HTTP single-event path would take hours and is measured elsewhere): 20
metrics of every aggregation, events spread over 20 customers and one month,
so the priced customer has 1/20 of them and the tables hold the full million.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import grpc
import httpx

from bench.common import ORG, report
from bxb.metering.v1 import usage_events_pb2 as pb
from bxb.metering.v1 import usage_events_pb2_grpc
from services.common import tenancy
from services.common.timestamps import to_proto

START = datetime(2026, 3, 1, tzinfo=UTC)
MONTH = timedelta(days=31)
REGIONS = ["us-east-1", "eu-west-1", "ap-south-1"]
AGGREGATIONS = ["sum", "count", "max", "unique_count", "latest"]
CHARGES = [
    ("standard", {"amount": "0.001"}),
    (
        "graduated",
        {
            "graduated_ranges": [
                {"from": 0, "to": 1000, "per_unit": "0"},
                {"from": 1001, "to": None, "per_unit": "0.0005"},
            ]
        },
    ),
    (
        "volume",
        {
            "volume_ranges": [
                {"from": 0, "to": 1000, "per_unit": "0.002"},
                {"from": 1001, "to": None, "per_unit": "0.001"},
            ]
        },
    ),
    ("package", {"amount": "5", "package_size": 100, "free_units": 10}),
]


def metric(n: int) -> dict[str, object]:
    aggregation = AGGREGATIONS[n % len(AGGREGATIONS)]
    body: dict[str, object] = {"name": f"Metric {n}", "code": f"m{n:02d}", "aggregation_type": aggregation}
    if aggregation != "count":
        body["field_name"] = "units"
    body["filters"] = [{"key": "region", "values": REGIONS}]
    return body


def charge(n: int) -> dict[str, object]:
    model, properties = CHARGES[n % len(CHARGES)]
    body: dict[str, object] = {"billable_metric_code": f"m{n:02d}", "charge_model": model, "properties": properties}
    if n % 5 == 0:  # some charges price a region apart
        body["filters"] = [{"values": {"region": ["us-east-1"]}, "properties": properties}]
    return body


async def setup(http: httpx.AsyncClient, metrics: int) -> str:
    for n in range(metrics):
        (await http.post("/v1/billable_metrics", json=metric(n))).raise_for_status()
    plan = {"code": "big", "interval": "monthly", "amount_cents": 4900, "charges": [charge(n) for n in range(metrics)]}
    (await http.post("/v1/plans", json=plan)).raise_for_status()
    body = {"customer_id": "cus_0", "plan_code": "big", "start_date": START.isoformat()}
    response = await http.post("/v1/subscriptions", json=body)
    response.raise_for_status()
    subscription_id: str = response.json()["id"]
    return subscription_id


async def load(address: str, events: int, metrics: int, customers: int, batch: int = 500) -> None:
    """Ingests in requests of `batch` events (the service's limit), several in
    flight at once so the metering writer group-commits them."""
    rng = random.Random(7)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = usage_events_pb2_grpc.EventServiceStub(channel)
        in_flight = asyncio.Semaphore(16)
        t0 = time.perf_counter()

        async def send(request: pb.IngestEventsRequest) -> None:
            async with in_flight:
                await stub.IngestEvents(request, metadata=tenancy.metadata(ORG))

        tasks = []
        for first in range(0, events, batch):
            request = pb.IngestEventsRequest(
                events=[
                    pb.UsageEvent(
                        transaction_id=f"e{n}",
                        customer_id=f"cus_{n % customers}",
                        code=f"m{n // customers % metrics:02d}",
                        timestamp=to_proto(START + MONTH * rng.random() * 0.99),
                        properties={"units": str(rng.randint(1, 100)), "region": rng.choice(REGIONS)},
                    )
                    for n in range(first, min(events, first + batch))
                ]
            )
            await in_flight.acquire()  # build requests no faster than they go out
            in_flight.release()
            tasks.append(asyncio.create_task(send(request)))
        await asyncio.gather(*tasks)
        print(f"loaded {events} events in {time.perf_counter() - t0:.0f} s", flush=True)


async def run(http: httpx.AsyncClient, metering_address: str, events: int, requests: int) -> None:
    metrics, customers = 20, 20
    subscription = await setup(http, metrics)
    await load(metering_address, events, metrics, customers)
    body = {
        "customer_id": "cus_0",
        "subscription_id": subscription,
        "period_start": START.isoformat(),
        "period_end": (START + MONTH).isoformat(),
    }
    first = await http.post("/v1/pricing/calculate", json=body)
    first.raise_for_status()
    print(f"calculation: total {first.json()['total_amount']} over {len(first.json()['line_items'])} lines")
    latencies = []
    for _ in range(requests):
        t0 = time.perf_counter()
        response = await http.post("/v1/pricing/calculate", json=body)
        latencies.append(time.perf_counter() - t0)
        response.raise_for_status()
    report(f"POST /v1/pricing/calculate ({metrics} charges, {events} events)", latencies)
