"""Telling the world (issue 20): outgoing webhooks and analytics resync.

1. Throughput: N announcements (`--deliveries`) of `--customers` customers
   are stored with their deliveries to one endpoint at a fast receiver
   (bench/webhook_receivers.py, its own process), as the payments service's
   consumers store them, in batches of 500; timed from the first stored until
   the receiver has every `webhook-id`: deliveries/s, and each delivery's
   latency (stored -> received), with the CPU each process spent.
2. Isolation: announcements at a steady `--rate` for `--seconds` to an
   endpoint at the fast receiver, first alone, then while an endpoint of
   another organization, subscribed to the same flow of events, sends to a
   black hole (takes each request, never answers: every attempt waits out
   the 10 s deadline). The fast endpoint's latency must not change.
3. Resync: `--resync-customers` customers, each subscribed to a plan since
   last month with a finalized invoice (one billing run), then ChartMogul
   (tests/chartmogul_fake.py in its own process) connected and a resync of all
   history asked for: timed until the resync is done, with its progress.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import httpx
from sqlalchemy import text

from bench.billing import SETTINGS as BILLING_SETTINGS
from bench.billing import last_month, projected
from bench.billing import setup as subscribe_all
from bench.collection import cpu_report, cpu_seconds
from bench.common import ORG, percentile, running_stack
from bxb.invoicing.v1 import billing_runs_pb2, billing_runs_pb2_grpc
from bxb.payments.v1 import webhook_endpoints_pb2 as pb
from bxb.payments.v1 import webhook_endpoints_pb2_grpc
from deploy.embedded import free_port, wait_for_port
from deploy.stack import Stack
from services.common import db, tenancy
from services.common.timestamps import utcnow
from services.payments.announcing import Announcer, Draft

OTHER_ORG = "org_bench_other"  # the black hole's organization
BATCH = 500
SETTINGS = {"BXB_WEBHOOKS_ALLOW_PRIVATE": "1"}


@dataclass
class Receivers:
    process: subprocess.Popen[bytes]
    fast: str  # the fast receiver's URL
    hole: str  # the black hole's URL

    async def arrivals(self) -> dict[str, float]:
        async with httpx.AsyncClient() as client:
            stats = (await client.get(self.fast.replace("/hooks", "/stats"))).json()
        return dict(stats["arrivals"])


@contextmanager
def receivers() -> Iterator[Receivers]:
    fast, hole = free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.webhook_receivers", str(fast), str(hole)])
    try:
        wait_for_port(fast, 10)
        yield Receivers(process, f"http://127.0.0.1:{fast}/hooks", f"http://127.0.0.1:{hole}/hooks")
    finally:
        process.terminate()
        process.wait()


async def endpoint(stack: Stack, org: str, url: str) -> str:
    """An endpoint of `org` for every event type, made over gRPC as the gateway would."""
    async with grpc.aio.insecure_channel(stack.env["BXB_PAYMENTS_ADDRESS"]) as channel:
        stub = webhook_endpoints_pb2_grpc.WebhookEndpointServiceStub(channel)
        request = pb.CreateWebhookEndpointRequest(webhook_endpoint=pb.WebhookEndpoint(url=url))
        made = await stub.CreateWebhookEndpoint(request, metadata=tenancy.metadata(org), timeout=10)
        return made.id


class Announcements:
    """Announcements stored in the payments database as its consumers store them."""

    def __init__(self, stack: Stack):
        self.engine = db.create_engine(stack.env["BXB_PAYMENTS_DATABASE_URL"], pool_size=2)
        self.sessions = db.sessions(self.engine)
        self.announcer = Announcer({})
        self.stored: dict[str, float] = {}  # event id: wall-clock time its transaction committed

    async def store(self, orgs: list[str], first: int, count: int, customers: int) -> None:
        """`count` announcements numbered from `first`, for each organization."""
        now = utcnow()
        ids: list[str] = []
        async with self.sessions() as session, session.begin():
            for n in range(first, first + count):
                for org in orgs:
                    customer = f"cus_{n % customers}"
                    data = {"customer": {"id": customer, "name": f"Customer {n}", "email": f"{customer}@bench.test"}}
                    draft = Draft(org, "customer.updated", customer, f"bench:{n}", now, data)
                    queued = await self.announcer.announce(session, draft, now)
                    if org == ORG:
                        ids += queued
        committed = time.time()
        async with self.sessions() as session:
            rows = await session.execute(
                text("SELECT announcement_id FROM deliveries WHERE id = ANY(:ids)"), {"ids": ids}
            )
            self.stored.update({event: committed for (event,) in rows})

    async def close(self) -> None:
        await self.engine.dispose()


def latencies(stored: dict[str, float], arrivals: dict[str, float]) -> list[float]:
    return [arrivals[event] - at for event, at in stored.items() if event in arrivals]


def describe(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"p50 {percentile(ms, 50):.0f} ms, p90 {percentile(ms, 90):.0f} ms, p99 {percentile(ms, 99):.0f} ms"


async def throughput(stack: Stack, hooks: Receivers, deliveries: int, customers: int) -> None:
    await endpoint(stack, ORG, hooks.fast)
    store = Announcements(stack)
    pids = {**stack.supervisor.pids(), "receivers": hooks.process.pid, "bench": os.getpid()}
    try:
        before, t0 = cpu_seconds(pids), time.perf_counter()
        for first in range(0, deliveries, BATCH):
            await store.store([ORG], first, min(BATCH, deliveries - first), customers)
        stored = time.perf_counter() - t0
        while True:
            arrivals = await hooks.arrivals()
            if all(event in arrivals for event in store.stored):
                break
            await asyncio.sleep(0.2)
        took = max(arrivals.values()) - min(store.stored.values())
        wall = time.perf_counter() - t0
        print(
            f"throughput: {deliveries} deliveries of {customers} customers to one endpoint: stored in {stored:.1f} s, "
            f"all received {took:.1f} s after the first was stored = {deliveries / took:.0f} deliveries/s; "
            f"stored -> received {describe(latencies(store.stored, arrivals))}",
            flush=True,
        )
        print(cpu_report(before, cpu_seconds(pids), wall, deliveries, "delivery"), flush=True)
    finally:
        await store.close()


async def steady(store: Announcements, orgs: list[str], first: int, rate: float, seconds: float) -> int:
    """Announcements at `rate` per second for `seconds` (batches every 0.1 s); how many."""
    count, t0 = 0, time.perf_counter()
    per_tick = max(1, round(rate / 10))
    while time.perf_counter() - t0 < seconds:
        await store.store(orgs, first + count, per_tick, 1000)
        count += per_tick
        await asyncio.sleep(max(0.0, t0 + count / rate - time.perf_counter()))
    return count


async def isolation(stack: Stack, hooks: Receivers, rate: float, seconds: float) -> None:
    store = Announcements(stack)
    try:
        await endpoint(stack, ORG, hooks.fast)
        alone = await steady(store, [ORG], 0, rate, seconds)
        await asyncio.sleep(2)
        baseline = latencies(store.stored, await hooks.arrivals())
        print(f"isolation, alone: {alone} deliveries at {rate:.0f}/s to the fast endpoint: {describe(baseline)}")
        store.stored.clear()
        await endpoint(stack, OTHER_ORG, hooks.hole)
        beside = await steady(store, [ORG, OTHER_ORG], alone, rate, seconds)
        await asyncio.sleep(2)
        arrivals = await hooks.arrivals()
        hurt = latencies(store.stored, arrivals)
        missing = len(store.stored) - len(hurt)
        print(
            f"isolation, beside a black hole of another organization (as many events, every attempt waits out "
            f"the 10 s deadline): {beside} deliveries at {rate:.0f}/s to the fast endpoint: {describe(hurt)}; "
            f"not received within 2 s of the last: {missing}",
            flush=True,
        )
    finally:
        await store.close()


@contextmanager
def chartmogul() -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.chartmogul_fake", "--port", str(port)], stdout=subprocess.PIPE, text=False
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        key = line.rsplit(" ", 1)[-1].strip()
        yield process, f"http://127.0.0.1:{port}", key
    finally:
        process.terminate()
        process.wait()


async def resync(stack: Stack, http: httpx.AsyncClient, fake: subprocess.Popen[bytes], key: str, count: int) -> None:
    start, _ = last_month()
    await subscribe_all(http, count, start)
    await projected(stack.env["BXB_INVOICING_DATABASE_URL"], count)
    async with grpc.aio.insecure_channel(stack.env["BXB_INVOICING_ADDRESS"]) as channel:
        stub = billing_runs_pb2_grpc.BillingRunServiceStub(channel)
        run = await stub.RunBilling(billing_runs_pb2.RunBillingRequest(), metadata=tenancy.metadata(ORG), timeout=3600)
    print(f"billing run: {run.invoices_created} invoices finalized", flush=True)
    connected = await http.post("/v1/integrations/chartmogul", json={"api_key": key})
    connected.raise_for_status()
    pids = {**stack.supervisor.pids(), "chartmogul": fake.pid, "bench": os.getpid()}
    before, t0 = cpu_seconds(pids), time.perf_counter()
    (await http.post("/v1/integrations/chartmogul/resync", json={})).raise_for_status()
    last = ""
    while True:
        shown = (await http.get("/v1/integrations/chartmogul")).json()["resync"]
        progress = f"{shown['state']} {shown['done_count']}/{shown['total_count']} ({shown['progress_percent']}%)"
        if progress != last and int(time.perf_counter() - t0) % 30 == 0:
            print(f"  {time.perf_counter() - t0:6.0f} s: {progress}", flush=True)
            last = progress
        if shown["state"] == "done":
            break
        await asyncio.sleep(1)
    took = time.perf_counter() - t0
    print(
        f"resync of {count} customers' history (customer, subscription, invoice each): {shown['total_count']} "
        f"events to ChartMogul in {took:.0f} s = {shown['total_count'] / took:.0f} events/s; "
        f"failed {shown['failed_count']}",
        flush=True,
    )
    print(cpu_report(before, cpu_seconds(pids), took, int(shown["total_count"]), "event"), flush=True)


async def run(deliveries: int, customers: int, rate: float, seconds: float, resync_customers: int) -> None:
    with receivers() as hooks:
        async with running_stack(**SETTINGS) as (stack, _):
            await throughput(stack, hooks, deliveries, customers)
        async with running_stack(**SETTINGS) as (stack, _):
            await isolation(stack, hooks, rate, seconds)
    if resync_customers:
        with chartmogul() as (fake, url, key):
            settings = {**SETTINGS, **BILLING_SETTINGS, "BXB_CHARTMOGUL_API_BASE": url}
            async with running_stack(**settings) as (stack, http):
                await resync(stack, http, fake, key, resync_customers)
