"""Single-event ingestion latency at a fixed rate, and invoice listing."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque

import httpx

from bench.common import KEY, report
from bench.rawhttp import Connection


async def setup(http: httpx.AsyncClient, customers: int) -> None:
    metric = {"name": "API Requests", "code": "api_requests", "aggregation_type": "sum", "field_name": "tokens"}
    plan = {
        "code": "payg",
        "interval": "monthly",
        "charges": [
            {"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.001"}}
        ],
    }
    (await http.post("/v1/billable_metrics", json=metric)).raise_for_status()
    (await http.post("/v1/plans", json=plan)).raise_for_status()
    for n in range(customers):
        body = {"customer_id": f"cus_{n}", "plan_code": "payg", "start_date": "2026-01-01T00:00:00Z"}
        (await http.post("/v1/subscriptions", json=body)).raise_for_status()


async def single_events(http: httpx.AsyncClient, rate: float, seconds: float, customers: int) -> list[float]:
    """POST /v1/events at `rate` requests/s, each on the free keep-alive
    connection used longest ago (none sits idle long enough for the server
    to close it), from a lean client (bench/rawhttp.py); the latencies."""
    latencies: list[float] = []
    interval = 1 / rate
    idle: deque[Connection] = deque()
    url = str(http.base_url).rstrip("/")
    start = time.perf_counter()
    tasks = []

    async def one(n: int) -> None:
        body = {
            "transaction_id": f"bench_{n}",
            "customer_id": f"cus_{n % customers}",
            "code": "api_requests",
            "timestamp": "2026-01-15T00:00:00Z",
            "properties": {"tokens": 10},
        }
        connection = idle.popleft() if idle else await Connection.open(url, KEY)
        t0 = time.perf_counter()
        status, answer = await connection.post("/v1/events", json.dumps(body).encode())
        latencies.append(time.perf_counter() - t0)
        idle.append(connection)
        if status != 200:
            raise RuntimeError(f"POST /v1/events: {status} {answer[:300]!r}")

    for _ in range(8):  # connections opened before the clock starts
        idle.append(await Connection.open(url, KEY))
    n = 0
    while time.perf_counter() - start < seconds:
        tasks.append(asyncio.create_task(one(n)))
        n += 1
        await asyncio.sleep(max(0.0, start + n * interval - time.perf_counter()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for connection in idle:
        await connection.close()
    print(f"single events: {n} sent in {elapsed:.1f} s ({n / elapsed:.0f}/s offered {rate:.0f}/s)")
    return latencies


async def invoice_listing(http: httpx.AsyncClient, customers: int) -> list[float]:
    latencies = []
    for n in range(customers):
        t0 = time.perf_counter()
        response = await http.get(f"/v1/customers/cus_{n}/invoices")
        latencies.append(time.perf_counter() - t0)
        response.raise_for_status()
    return latencies


async def run(http: httpx.AsyncClient, rate: float, seconds: float, customers: int) -> None:
    await setup(http, customers)
    report("POST /v1/events (single)", await single_events(http, rate, seconds, customers))
    report("GET /v1/customers/{id}/invoices (bills)", await invoice_listing(http, customers))
    report("GET /v1/customers/{id}/invoices (again)", await invoice_listing(http, customers))
