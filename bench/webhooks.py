"""Telling the world (issue 20): outgoing webhooks and analytics resync.

1. Throughput: N announcements (`--deliveries`) of `--customers` customers
   are stored with their deliveries to one endpoint at a fast receiver
   (bench/webhook_receivers.py, its own process), as the payments service's
   consumers store them, in batches of 500; timed from the first stored until
   the receiver has every `webhook-id`: deliveries/s, and each delivery's
   latency (stored -> received), with the CPU each process spent.
2. Isolation, end to end: two organizations change their customers through
   the gateway (PATCH /v1/customers/{id}, so catalog -> NATS -> payments'
   consumer -> announcement -> sender) at a steady `--rate` each for
   `--seconds` (`--change-rate` of `python -m bench`), each of the first's changes timed from the PATCH sent until
   its customer.updated reaches the fast receiver; first with the other's
   endpoint fast too, then with it at a black hole (takes each request,
   never answers: every attempt waits out the 10 s deadline). The first's
   latency must not change.
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
from bxb.catalog.v1 import organizations_pb2, organizations_pb2_grpc
from bxb.invoicing.v1 import billing_runs_pb2, billing_runs_pb2_grpc
from bxb.payments.v1 import webhook_endpoints_pb2 as pb
from bxb.payments.v1 import webhook_endpoints_pb2_grpc
from deploy.embedded import free_port, wait_for_port
from deploy.stack import Stack
from services.common import channels, db, tenancy
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

    async def stats(self) -> dict[str, dict[str, float]]:
        async with httpx.AsyncClient() as client:
            return dict((await client.get(self.fast.replace("/hooks", "/stats"))).json())

    async def arrivals(self) -> dict[str, float]:
        """By webhook-id."""
        return (await self.stats())["arrivals"]

    async def named(self) -> dict[str, float]:
        """By the changed customer's name."""
        return (await self.stats())["named"]


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


async def delete_endpoint(stack: Stack, org: str, endpoint_id: str) -> None:
    async with grpc.aio.insecure_channel(stack.env["BXB_PAYMENTS_ADDRESS"]) as channel:
        stub = webhook_endpoints_pb2_grpc.WebhookEndpointServiceStub(channel)
        request = pb.DeleteWebhookEndpointRequest(id=endpoint_id)
        await stub.DeleteWebhookEndpoint(request, metadata=tenancy.metadata(org), timeout=10)


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


CUSTOMERS = 100  # per organization, changed in turn


async def other_organization(stack: Stack, url: str) -> httpx.AsyncClient:
    """A second organization with an API key, as an operator makes one over gRPC."""
    async with channels.open_channel(stack.env["BXB_CATALOG_ADDRESS"]) as channel:  # carries the service token
        stub = organizations_pb2_grpc.OrganizationServiceStub(channel)
        org = await stub.CreateOrganization(
            organizations_pb2.CreateOrganizationRequest(id=OTHER_ORG, name="Bench other"), timeout=10
        )
        key = await stub.CreateApiKey(organizations_pb2.CreateApiKeyRequest(organization_id=org.id), timeout=10)
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key.secret}"}, timeout=60)


async def customers(http: httpx.AsyncClient) -> None:
    for n in range(CUSTOMERS):
        (await http.post("/v1/customers", json={"id": f"cus_{n}", "name": "new"})).raise_for_status()


async def steady(clients: list[httpx.AsyncClient], rate: float, seconds: float, tag: str) -> dict[str, float]:
    """Each client renames its customers in turn, `rate` per second each, for
    `seconds`; the time each of the first client's changes was sent, by name."""
    sent: dict[str, float] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def change(http: httpx.AsyncClient, n: int, name: str) -> None:
        (await http.patch(f"/v1/customers/cus_{n % CUSTOMERS}", json={"name": name})).raise_for_status()

    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        name = f"{tag}-{n}"
        sent[name] = time.time()
        for place, http in enumerate(clients):
            task = asyncio.create_task(change(http, n, name if place == 0 else f"other-{name}"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        n += 1
        await asyncio.sleep(max(0.0, t0 + n / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    return sent


async def isolation(stack: Stack, http: httpx.AsyncClient, hooks: Receivers, rate: float, seconds: float) -> None:
    other = await other_organization(stack, str(http.base_url))
    try:
        await customers(http)
        await customers(other)
        await endpoint(stack, ORG, hooks.fast)
        healthy = await endpoint(stack, OTHER_ORG, hooks.fast)
        for label in ("healthy", "hole"):
            if label == "hole":  # the other organization's endpoint now never answers
                await endpoint(stack, OTHER_ORG, hooks.hole)
                await delete_endpoint(stack, OTHER_ORG, healthy)
            sent = await steady([http, other], rate, seconds, label)
            await asyncio.sleep(3)
            named = await hooks.named()
            delays = [named[name] - at for name, at in sent.items() if name in named]
            what = (
                "beside another organization changing as many customers, its endpoint fast too"
                if label == "healthy"
                else "beside another organization changing as many customers, its endpoint a black hole (each "
                "attempt waits out the 10 s deadline)"
            )
            print(
                f"isolation, {what}: {len(sent)} customer changes at {rate:.0f}/s, PATCH sent -> customer.updated "
                f"received: {describe(delays)}; not received 3 s after the last: {len(sent) - len(delays)}",
                flush=True,
            )
    finally:
        await other.aclose()


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
        async with running_stack(**SETTINGS) as (stack, http):
            await isolation(stack, http, hooks, rate, seconds)
    if resync_customers:
        with chartmogul() as (fake, url, key):
            settings = {**SETTINGS, **BILLING_SETTINGS, "BXB_CHARTMOGUL_API_BASE": url}
            async with running_stack(**settings) as (stack, http):
                await resync(stack, http, fake, key, resync_customers)
