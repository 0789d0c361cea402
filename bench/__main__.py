"""`make bench`: figures for the stack as `make run` starts it.

Starts a fresh stack in a temporary BXB_HOME, then measures, through the
gateway over real HTTP on loopback (client on the same machine):
- single-event ingestion latency at a fixed request rate (p50/p90/p99),
- the walkthrough's invoice listing (which closes due periods) latency.

Usage: python -m bench [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from deploy.embedded import free_port
from deploy.stack import Stack

KEY = "bench_key_0123456789abcdef"


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def report(name: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(
        f"{name:<40} n={len(ms):<6} p50={percentile(ms, 50):7.2f} ms  p90={percentile(ms, 90):7.2f} ms"
        f"  p99={percentile(ms, 99):7.2f} ms  mean={statistics.fmean(ms):7.2f} ms"
    )


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
    latencies: list[float] = []
    interval = 1 / rate
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
        t0 = time.perf_counter()
        response = await http.post("/v1/events", json=body)
        latencies.append(time.perf_counter() - t0)
        response.raise_for_status()

    n = 0
    while time.perf_counter() - start < seconds:
        tasks.append(asyncio.create_task(one(n)))
        n += 1
        await asyncio.sleep(max(0.0, start + n * interval - time.perf_counter()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
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


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--customers", type=int, default=50)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bxb-bench-")) / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BXB_")}
    env.update(BXB_HOME=str(home), BXB_GATEWAY_PORT=str(free_port()), BXB_API_KEY=KEY)
    stack = Stack(home, env)
    try:
        url, _ = await stack.start()
        print(f"stack at {url}, {os.cpu_count()} cores")
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, limits=limits) as http:
            await setup(http, args.customers)
            report("POST /v1/events (single)", await single_events(http, args.rate, args.seconds, args.customers))
            report("GET /v1/customers/{id}/invoices (bills)", await invoice_listing(http, args.customers))
            report("GET /v1/customers/{id}/invoices (again)", await invoice_listing(http, args.customers))
    finally:
        await asyncio.to_thread(stack.stop)


asyncio.run(main())
