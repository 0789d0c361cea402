"""`python -m bench scale`: figures for issue 21, one and two replicas, and mTLS.

1. `ingest`: batch ingestion (bench/metering.py's: POST /v1/events/batch
   until /v1/usage/compute counts every event) with metering=1 and with
   metering=2 + gateway=2 (the client processes spread over both gateways),
   each against its own ClickHouse server (tests/clickhouse_http.py: chdb
   behind ClickHouse's HTTP interface, its own process), so the two compare.
2. `billing`: a period close of N subscriptions with usage (bench/billing.py)
   with invoicing=1 and invoicing=2. Every invoicing replica runs the same
   scheduler, sweeping every organization each interval, and RunBilling is
   answered by whichever replica the balanced channel picks; nothing splits
   the work: the row locks and the already-billed check keep invoices exactly
   once. So with two replicas the run times both replicas sweeping at once
   (RunBilling to each, as their schedulers do on the same tick).
3. `tls`: single-event latency at a fixed rate through the gateway
   (POST /v1/events) and straight to metering (SubmitEvents, one event), in
   a stack with mutual TLS (make run's default: gRPC ports and NATS) and one
   without (plaintext, the service token authenticating callers).

Every stack runs mutual TLS on its internal gRPC ports and NATS, as
`make run` does by default, but for part 3's plaintext one (BXB_TLS_DIR="").

Each part prints the CPU seconds each process spent in it (children of a
process such as PostgreSQL's backends counted with it; the bench's own client
worker processes show as "not named").
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench import billing, metering
from bench.collection import MACHINE, cpu_report, cpu_seconds
from bench.common import ORG, percentile, report, running_stack
from bench.ingest_and_invoices import single_events
from bxb.invoicing.v1 import billing_runs_pb2, billing_runs_pb2_grpc
from bxb.metering.v1 import usage_events_pb2 as pb
from bxb.metering.v1 import usage_events_pb2_grpc
from deploy import certificates
from deploy.stack import Stack
from services.common import channels, tenancy
from services.common.timestamps import to_proto

PARTS = ("ingest", "billing", "tls")


@dataclass
class Options:
    parts: tuple[str, ...] = PARTS
    events: int = 500_000  # ingest: events sent in batches
    customers: int = 100  # ingest: customers of the batches; tls: of the single events
    batch_workers: int = 2  # ingest: client processes (spread over the gateways)
    batch_concurrency: int = 16  # ingest: batch requests in flight
    subscriptions: int = 2_000  # billing: subscriptions to close
    events_per_subscription: int = 10  # billing
    rate: float = 100  # tls: single events per second
    seconds: float = 10  # tls: for this long


@contextmanager
def clickhouse() -> Iterator[tuple[str, int]]:
    """A ClickHouse server on a fresh path (tests/clickhouse_http.py, run as
    its `serve` runs it; it stops when its stdin closes): its URL and pid."""
    path = Path(tempfile.mkdtemp(prefix="bxb-bench-ch-")) / "data"
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.clickhouse_http", str(path)],
        cwd=Path(__file__).resolve().parents[1],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        port = server.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"the ClickHouse HTTP server did not start (exit code {server.wait(10)})")
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        server.stdin.close()
        server.wait(30)


def tls_settings(tls: bool) -> dict[str, str]:
    """BXB_TLS_DIR for a stack: a new local CA and the stack's certificate,
    as `make run` makes them on first start (mutual TLS, its default), or
    empty: plaintext, callers authenticated by the service token."""
    if not tls:
        return {"BXB_TLS_DIR": ""}
    return {"BXB_TLS_DIR": str(certificates.ensure(Path(tempfile.mkdtemp(prefix="bxb-bench-tls-")) / "tls"))}


def processes(stack: Stack, **more: int) -> dict[str, int]:
    return {**stack.supervisor.pids(), **more, "bench": os.getpid()}


# ---------------------------------------------------------------- 1. ingest


async def ingest(replicas: int, options: Options) -> float:
    print(f"\n== batch ingestion, metering={replicas} gateway={replicas}", flush=True)
    with clickhouse() as (url, pid):
        settings = {
            **tls_settings(True),
            "BXB_CLICKHOUSE_URL": url,
            "BXB_REPLICAS": f"metering={replicas},gateway={replicas}",
        }
        async with running_stack(**settings) as (stack, http):
            await metering.setup(http, options.customers)
            figures = metering.Options(
                batch_events=options.events,
                batch_customers=options.customers,
                batch_workers=max(options.batch_workers, replicas),
                batch_concurrency=options.batch_concurrency,
            )
            pids = processes(stack, clickhouse=pid)
            marks: list[tuple[dict[str, float], float]] = []  # at the first send
            rate = await metering.batch_ingestion(
                http, figures, stack.urls, lambda: marks.append((cpu_seconds(pids), time.perf_counter()))
            )
            (before, t0), after = marks[0], cpu_seconds(pids)
            print(cpu_report(before, after, time.perf_counter() - t0, options.events, "event"), flush=True)
    return rate


# ---------------------------------------------------------------- 2. billing


async def run_billing(address: str) -> int:
    """One RunBilling for the bench's organization at `address`; the invoices it issued."""
    async with channels.open_channel(address) as channel:
        stub = billing_runs_pb2_grpc.BillingRunServiceStub(channel)
        reply = await stub.RunBilling(
            billing_runs_pb2.RunBillingRequest(), metadata=tenancy.metadata(ORG), timeout=3600
        )
    return reply.invoices_created


async def invoices(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM invoices")
        return count
    finally:
        await connection.close()


async def billing_run(replicas: int, options: Options) -> float:
    print(f"\n== billing run, invoicing={replicas}", flush=True)
    settings = {**tls_settings(True), **billing.SETTINGS, "BXB_REPLICAS": f"invoicing={replicas}"}
    async with running_stack(**settings) as (stack, http):
        start, end = billing.last_month()
        n = options.subscriptions
        await billing.setup(http, n, start)
        await billing.load(stack.env["BXB_METERING_ADDRESS"], n, options.events_per_subscription, start, end)
        await billing.projected(stack.env["BXB_INVOICING_DATABASE_URL"], n)
        # Each replica, as its scheduler does at the same tick (one replica: the RunBilling a deployment calls).
        addresses = [stack.listen[name] for name in stack.processes("invoicing")]
        pids = processes(stack)
        before, t0 = cpu_seconds(pids), time.perf_counter()
        issued = await asyncio.gather(*(run_billing(address) for address in addresses))
        took = time.perf_counter() - t0
        after = cpu_seconds(pids)
        again = await run_billing(stack.env["BXB_INVOICING_ADDRESS"])
        stored = await invoices(stack.env["BXB_INVOICING_DATABASE_URL"])
    print(
        f"billing run: {sum(issued)} invoices (by replica: {issued}) for {n} subscriptions in {took:.1f} s "
        f"= {sum(issued) / took:.0f} invoices/s; stored {stored}; a second run issued {again}",
        flush=True,
    )
    print(cpu_report(before, after, took, max(sum(issued), 1)), flush=True)
    return sum(issued) / took


# ---------------------------------------------------------------- 3. tls


async def direct_events(address: str, rate: float, seconds: float, customers: int) -> list[float]:
    """SubmitEvents with one event at `rate` calls/s straight to metering; the latencies."""
    latencies: list[float] = []
    async with channels.open_channel(address) as channel:
        stub = usage_events_pb2_grpc.EventServiceStub(channel)
        metadata = tenancy.metadata(ORG)
        at = to_proto(billing.last_month()[0])

        async def one(n: int) -> None:
            event = pb.UsageEvent(
                transaction_id=f"direct_{n}",
                customer_id=f"cus_{n % customers}",
                code="api_requests",
                timestamp=at,
                properties={"tokens": "10"},
            )
            t0 = time.perf_counter()
            reply = await stub.SubmitEvents(pb.SubmitEventsRequest(events=[event]), metadata=metadata, timeout=10)
            latencies.append(time.perf_counter() - t0)
            if reply.results[0].outcome not in (pb.INGEST_OUTCOME_QUEUED, pb.INGEST_OUTCOME_ACCEPTED):
                raise RuntimeError(f"SubmitEvents: {reply.results[0]}")

        await one(-1)  # the channel connected before the clock starts
        latencies.clear()
        tasks, start, n = [], time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            tasks.append(asyncio.create_task(one(n)))
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
    return latencies


async def latency(tls: bool, options: Options) -> tuple[list[float], list[float]]:
    """Single-event latencies through the gateway and straight to metering."""
    print(f"\n== single-event latency, {'mutual TLS' if tls else 'plaintext with service token'}", flush=True)
    async with running_stack(**tls_settings(tls)) as (stack, http):
        await metering.setup(http, options.customers)
        pids = processes(stack)
        mode = "mTLS" if tls else "plaintext"
        before = cpu_seconds(pids)
        await asyncio.sleep(options.seconds)
        print(f"idle for {options.seconds:.0f} s: {idle_cpu(before, cpu_seconds(pids))}", flush=True)
        before, t0 = cpu_seconds(pids), time.perf_counter()
        through = await single_events(http, options.rate, options.seconds, options.customers)
        report(f"POST /v1/events ({mode})", through)
        print(cpu_report(before, cpu_seconds(pids), time.perf_counter() - t0, len(through), "event"), flush=True)
        address = stack.env["BXB_METERING_ADDRESS"]
        before, t0 = cpu_seconds(pids), time.perf_counter()
        direct = await direct_events(address, options.rate, options.seconds, options.customers)
        report(f"metering SubmitEvents, 1 event ({mode})", direct)
        print(cpu_report(before, cpu_seconds(pids), time.perf_counter() - t0, len(direct), "event"), flush=True)
    return through, direct


def idle_cpu(before: dict[str, float], after: dict[str, float]) -> str:
    """The CPU seconds each process took while nothing was asked of the stack."""
    spent = sorted(((after[name] - before.get(name, 0.0), name) for name in after if name != MACHINE), reverse=True)
    return "CPU s " + ", ".join(f"{name} {s:.2f}" for s, name in spent if s >= 0.01)


def tls_cost(path: str, tls: list[float], plain: list[float]) -> str:
    """What mutual TLS adds on a path, in ms, at p50/p90/p99."""
    added = (1000 * (percentile(tls, p) - percentile(plain, p)) for p in (50, 90, 99))
    return f"{path}: " + ", ".join(f"p{p} {ms:+.2f} ms" for p, ms in zip((50, 90, 99), added, strict=True))


# ---------------------------------------------------------------- the scenario


async def run(options: Options) -> None:
    print(f"scale: parts {','.join(options.parts)} on {os.cpu_count()} cores", flush=True)
    if "ingest" in options.parts:
        rates = [await ingest(replicas, options) for replicas in (1, 2)]
        print(
            f"\nbatch ingestion: metering=1 {rates[0]:,.0f} events/s; metering=2 {rates[1]:,.0f} events/s", flush=True
        )
    if "billing" in options.parts:
        rates = [await billing_run(replicas, options) for replicas in (1, 2)]
        print(
            f"\nbilling run: invoicing=1 {rates[0]:.0f} invoices/s; invoicing=2 {rates[1]:.0f} invoices/s", flush=True
        )
    if "tls" in options.parts:
        (gateway, direct), (plain_gateway, plain_direct) = [await latency(tls, options) for tls in (True, False)]
        print(f"\nmutual TLS vs plaintext: {tls_cost('POST /v1/events', gateway, plain_gateway)}", flush=True)
        print(f"mutual TLS vs plaintext: {tls_cost('SubmitEvents to metering', direct, plain_direct)}", flush=True)
