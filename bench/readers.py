"""Reads under load: 200 concurrent readers (customers' invoice listings and
POST /v1/pricing/calculate) while batches of events are ingested at full
speed. Prints each read's latency percentiles and how many answered 503
(shed at once, with Retry-After) or failed otherwise; the target is p99
under 1 s, or shedding, never a 30 s hang."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import httpx

from bench.common import KEY, report
from bench.rawhttp import Connection
from bxb.catalog.v1 import organizations_pb2, organizations_pb2_grpc
from services.common import channels

PLAN = {
    "code": "payg",
    "interval": "monthly",
    "amount_cents": 1000,
    "charges": [
        {"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.001"}}
    ],
}


async def setup(http: httpx.AsyncClient, customers: int) -> list[str]:
    """`customers` customers on one plan since 2026-01; their subscription ids."""
    metric = {"name": "API Requests", "code": "api_requests", "aggregation_type": "sum", "field_name": "tokens"}
    (await http.post("/v1/billable_metrics", json=metric)).raise_for_status()
    (await http.post("/v1/plans", json=PLAN)).raise_for_status()
    ids = []
    for n in range(customers):
        body = {"customer_id": f"reader_{n}", "plan_code": "payg", "start_date": "2026-01-01T00:00:00Z"}
        created = await http.post("/v1/subscriptions", json=body)
        created.raise_for_status()
        ids.append(created.json()["id"])
    return ids


async def tenant_key(catalog: str) -> str:
    """An API key of a new organization: another tenant than the readers'."""
    async with channels.open_channel(catalog) as channel:  # carries the service token
        stub = organizations_pb2_grpc.OrganizationServiceStub(channel)
        org = await stub.CreateOrganization(organizations_pb2.CreateOrganizationRequest(name="loader"))
        key = await stub.CreateApiKey(organizations_pb2.CreateApiKeyRequest(organization_id=org.id))
    return key.secret


async def ingest(url: str, key: str, stop: asyncio.Event, customers: int, concurrency: int) -> int:
    """Batches of 500 events sent with `key`, `concurrency` in flight,
    until `stop` (a 503 is sent again after a second); events acknowledged."""
    accepted = 0

    async def worker(w: int) -> None:
        nonlocal accepted
        connection = await Connection.open(url, key)
        n = 0
        while not stop.is_set():
            events = [
                {
                    "transaction_id": f"load_{w}_{n}_{i}",
                    "customer_id": f"reader_{(n + i) % customers}",
                    "code": "api_requests",
                    "timestamp": "2026-11-15T00:00:00Z",
                    "properties": {"tokens": 1},
                }
                for i in range(500)
            ]
            body = json.dumps({"events": events}).encode()
            status, _ = await connection.post("/v1/events/batch", body)
            while status == 503 and not stop.is_set():  # shed or backlogged: again, after Retry-After
                await asyncio.sleep(1)
                status, _ = await connection.post("/v1/events/batch", body)
            n += 1
            if status == 207:
                accepted += 500
        await connection.close()

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return accepted


async def readers(
    url: str, subscriptions: list[str], count: int, seconds: float
) -> dict[str, tuple[list[float], Counter[int]]]:
    """`count` readers, each alternating an invoice listing and a price
    calculation for its own customer, for `seconds`."""
    results: dict[str, tuple[list[float], Counter[int]]] = {"invoices": ([], Counter()), "pricing": ([], Counter())}
    deadline = time.perf_counter() + seconds

    async def reader(r: int) -> None:
        connection = await Connection.open(url, KEY)
        n = r % len(subscriptions)
        pricing = json.dumps({"customer_id": f"reader_{n}", "subscription_id": subscriptions[n]}).encode()
        turn = r
        while time.perf_counter() < deadline:
            kind = ("invoices", "pricing")[turn % 2]
            turn += 1
            started = time.perf_counter()
            if kind == "invoices":
                status, _ = await connection.request("GET", f"/v1/customers/reader_{n}/invoices")
            else:
                status, _ = await connection.post("/v1/pricing/calculate", pricing)
            latencies, statuses = results[kind]
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1
            if status == 503:
                await asyncio.sleep(1)  # as Retry-After asks
        await connection.close()

    await asyncio.gather(*(reader(r) for r in range(count)))
    return results


async def run(
    http: httpx.AsyncClient, catalog: str, count: int, seconds: float, customers: int, concurrency: int
) -> None:
    """The readers alone, while another organization ingests, and while their own does."""
    url = str(http.base_url).rstrip("/")
    subscriptions = await setup(http, customers)
    other = await tenant_key(catalog)
    for loader in (None, other, KEY):
        stop = asyncio.Event()
        loading = None if loader is None else asyncio.create_task(ingest(url, loader, stop, customers, concurrency))
        results = await readers(url, subscriptions, count, seconds)
        stop.set()
        accepted = await loading if loading is not None else 0
        who = "another organization's" if loader == other else "their own organization's"
        label = "alone" if loader is None else f"with {who} batch ingest ({accepted / seconds:,.0f} events/s accepted)"
        for kind, (latencies, statuses) in results.items():
            report(f"{kind}, {count} readers, {label}", latencies)
            print(f"  statuses: {dict(sorted(statuses.items()))}", flush=True)
