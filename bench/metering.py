"""Metering figures through the gateway: batch ingestion throughput, single
event latency, event-to-billable latency, POST /v1/usage/compute over many
stored events, and the metering process's memory.

1. Batch ingestion: POST /v1/events/batch with 500 events a request, many in
   flight, from first send until POST /v1/usage/compute counts every event.
   The bodies are serialized before the clock starts, and the client runs in
   several OS processes (`--batch-workers`), so the client stays light.
2. Single events: POST /v1/events at a fixed rate (ingest_and_invoices).
3. Event to billable: one event, then usage computes until it is counted.
4. POST /v1/usage/compute for one customer and month with `--stored-events`
   events stored for the organization, loaded over metering's gRPC
   IngestEvents (batches of 500, several in flight, in worker processes).
5. Metering RSS, sampled from /proc during the whole scenario.

Each phase also prints the CPU seconds every process of the stack spent in it
(from /proc, children included), which shows where the time went.

Event months keep the phases apart: batch events in January 2026, events to
bill in February, stored events from March to June.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import TypedDict

import grpc
import httpx
from google.protobuf.timestamp_pb2 import Timestamp

from bench.common import KEY, ORG, report
from bench.ingest_and_invoices import single_events
from bench.rawhttp import Connection
from bxb.metering.v1 import usage_events_pb2 as pb
from deploy.stack import Stack
from services.common import tenancy

METRIC = "tokens"
BATCH = 500
JANUARY = ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")
FEBRUARY = ("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z")
APRIL = ("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z")
STORED_FROM = 1_772_323_200  # 2026-03-01T00:00:00Z
STORED_SPAN = 122 * 86_400  # March to June
INGEST_EVENTS = "/bxb.metering.v1.EventService/IngestEvents"
BEHIND: dict[int, int] = {}  # status -> computes refused while storage lagged


class Usage(TypedDict):
    """What POST /v1/usage/compute answers (the fields read here)."""

    value: str
    events_count: int


class Sent(TypedDict):
    """What one batch client process sent: its requests and their events' outcomes."""

    requests: int
    accepted: int
    rejected: int
    retries: int
    error: str  # the first rejection, as JSON
    latencies: list[float]


@dataclass
class Options:
    rate: float = 200
    seconds: float = 10
    customers: int = 50  # single events go to this many customers
    requests: int = 200  # usage computes over the stored events
    batch_events: int = 1_000_000
    batch_customers: int = 100
    batch_workers: int = 2
    batch_concurrency: int = 16
    samples: int = 200
    stored_events: int = 10_000_000
    stored_customers: int = 1000
    load_workers: int = 2
    load_concurrency: int = 16


# ---------------------------------------------------------------- /proc


def status_kb(pid: int, field: str) -> int:
    """A `kB` line of /proc/<pid>/status (VmRSS, VmHWM), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree_cpu() -> dict[int, tuple[int, float]]:
    """Every process: pid -> (parent pid, user + system CPU seconds)."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state, ppid, ... utime (12th), stime (13th).
        table[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


def tree_cpu(table: dict[int, tuple[int, float]], root: int) -> float:
    """CPU seconds of a process and its live descendants (postgres backends)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += table.get(pid, (0, 0.0))[1]
        todo.extend(children.get(pid, []))
    return total


class Watch:
    """Samples the metering process's RSS in a thread, and tells the CPU time
    each process of the stack spent in each phase."""

    def __init__(self, stack: Stack, interval: float = 0.1):
        self.roots = stack.supervisor.pids()
        self.pid = self.roots["metering"]
        self.interval = interval
        self.peak_kb = 0
        self.phase_peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = status_kb(self.pid, "VmRSS")
            self.peak_kb = max(self.peak_kb, rss)
            self.phase_peak_kb = max(self.phase_peak_kb, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def cpu(self) -> dict[str, float]:
        table = process_tree_cpu()
        seconds = {name: tree_cpu(table, pid) for name, pid in self.roots.items()}
        times = os.times()  # this process and its reaped workers
        seconds["bench client"] = times.user + times.system + times.children_user + times.children_system
        return seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        before, t0 = self.cpu(), time.perf_counter()
        self.phase_peak_kb = status_kb(self.pid, "VmRSS")
        yield
        wall = time.perf_counter() - t0
        after = self.cpu()
        spent = sorted(((after[k] - before.get(k, 0.0), k) for k in after), reverse=True)
        parts = ", ".join(f"{k} {s:.1f}" for s, k in spent if s >= 0.05)
        print(f"  [{name}] wall {wall:.1f} s; CPU s: {parts}", flush=True)
        print(
            f"  [{name}] metering RSS peak {self.phase_peak_kb / 1024:.0f} MB, "
            f"now {status_kb(self.pid, 'VmRSS') / 1024:.0f} MB",
            flush=True,
        )


# ---------------------------------------------------------------- setup


async def setup(http: httpx.AsyncClient, customers: int) -> None:
    """The metrics events name (`tokens`; `api_requests` for the single
    events) and customers cus_0..cus_{customers-1}."""
    for code in (METRIC, "api_requests"):
        body = {"name": code, "code": code, "aggregation_type": "sum", "field_name": "tokens"}
        (await http.post("/v1/billable_metrics", json=body)).raise_for_status()
    in_flight = asyncio.Semaphore(16)

    async def customer(n: int) -> None:
        async with in_flight:
            (await http.post("/v1/customers", json={"id": f"cus_{n}", "name": f"Customer {n}"})).raise_for_status()

    t0 = time.perf_counter()
    await asyncio.gather(*(customer(n) for n in range(customers)))
    print(f"setup: 2 metrics, {customers} customers in {time.perf_counter() - t0:.1f} s", flush=True)


async def compute(
    http: httpx.AsyncClient, customer: str, window: tuple[str, str], code: str = METRIC
) -> httpx.Response:
    body = {"customer_id": customer, "metric_key": code, "period_start": window[0], "period_end": window[1]}
    return await http.post("/v1/usage/compute", json=body)


async def counted(
    http: httpx.AsyncClient, customer: str, window: tuple[str, str], expected: int, code: str = METRIC
) -> Usage:
    """Computes until the usage counts `expected` events. An answer 503/504 or
    500 (storage still behind the queue, metering's settle wait ran out:
    invoicing currently turns that UNAVAILABLE into INTERNAL) is asked again,
    for up to half an hour; BEHIND counts those answers."""
    deadline = time.perf_counter() + 1800
    while True:
        response = await compute(http, customer, window, code)
        if response.status_code in (500, 503, 504) and time.perf_counter() < deadline:
            BEHIND[response.status_code] = BEHIND.get(response.status_code, 0) + 1
            continue
        response.raise_for_status()
        usage: Usage = response.json()
        if usage["events_count"] >= expected:
            return usage
        await asyncio.sleep(0.005)


async def all_counted(http: httpx.AsyncClient, code: str, events: int, customers: int) -> int:
    """Waits until the January usage of `code` of every customer cus_i counts
    its events (event n went to cus_{n % customers}); the events counted."""
    in_flight = asyncio.Semaphore(8)

    async def check(c: int) -> int:
        async with in_flight:
            usage = await counted(http, f"cus_{c}", JANUARY, len(range(c, events, customers)), code)
        return usage["events_count"]

    return sum(await asyncio.gather(*(check(c) for c in range(min(customers, events)))))


# ---------------------------------------------------------------- 1. batches


def batch_event(n: int, customers: int) -> dict[str, object]:
    second = n % (31 * 86_400)
    day, rest = divmod(second, 86_400)
    return {
        "transaction_id": f"b{n}",
        "customer_id": f"cus_{n % customers}",
        "code": METRIC,
        "timestamp": f"2026-01-{day + 1:02d}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}Z",
        "properties": {"tokens": n % 100 + 1},
    }


def batch_bodies(worker: int, workers: int, events: int, customers: int) -> list[bytes]:
    """The request bodies of one worker: every `workers`-th batch of 500."""
    return [
        json.dumps(
            {"events": [batch_event(n, customers) for n in range(first, min(events, first + BATCH))]},
            separators=(",", ":"),
        ).encode()
        for first in range(worker * BATCH, events, workers * BATCH)
    ]


async def post_bodies(url: str, bodies: list[bytes], concurrency: int) -> Sent:
    latencies: list[float] = []
    stats = Sent(requests=0, accepted=0, rejected=0, retries=0, error="", latencies=latencies)
    pending = iter(bodies)

    async def sender() -> None:
        connection = await Connection.open(url, KEY)
        for body in pending:
            while True:
                t0 = time.perf_counter()
                status, answer = await connection.post("/v1/events/batch", body)
                latencies.append(time.perf_counter() - t0)
                if status in (429, 502, 503, 504):
                    stats["retries"] += 1
                    await asyncio.sleep(0.05)
                    continue
                break
            if status != 207:
                raise RuntimeError(f"POST /v1/events/batch: {status} {answer[:300]!r}")
            stats["requests"] += 1
            for result in json.loads(answer)["results"]:
                if result["status"] == 202:
                    stats["accepted"] += 1
                else:
                    stats["rejected"] += 1
                    stats["error"] = stats["error"] or json.dumps(result)
        await connection.close()

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return stats


def batch_worker(
    url: str,
    worker: int,
    workers: int,
    events: int,
    customers: int,
    concurrency: int,
    ready: Queue[int],
    go: Event,
    out: Queue[Sent],
) -> None:
    """One client process: builds its bodies, says so, waits for the start, sends."""
    bodies = batch_bodies(worker, workers, events, customers)
    ready.put(worker)
    go.wait()
    out.put(asyncio.run(post_bodies(url, bodies, concurrency)))


async def batch_ingestion(
    http: httpx.AsyncClient, options: Options, urls: list[str] | None = None, go_hook: Callable[[], object] = list
) -> float:
    """Sends the batches, client process w to gateway urls[w % len(urls)]
    (by default http's), and waits until usage counts every event; the
    events/s from the first send until then. `go_hook` is called just
    before the first send (the bodies are ready)."""
    events, customers, workers = options.batch_events, options.batch_customers, options.batch_workers
    gateways = urls or [str(http.base_url).rstrip("/")]
    per_worker = math.ceil(options.batch_concurrency / workers)
    context = multiprocessing.get_context("spawn")  # no fork of a process running grpc
    ready, out, go = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(
            target=batch_worker,
            args=(gateways[w % len(gateways)], w, workers, events, customers, per_worker, ready, go, out),
        )
        for w in range(workers)
    ]
    t_build = time.perf_counter()
    for process in processes:
        process.start()
    for _ in processes:
        await asyncio.to_thread(ready.get)
    print(
        f"batch: {events} events in bodies of {BATCH} serialized by {workers} client processes "
        f"in {time.perf_counter() - t_build:.1f} s; sending with {per_worker} connections each",
        flush=True,
    )
    go_hook()
    t0 = time.perf_counter()
    go.set()
    results: list[Sent] = [await asyncio.to_thread(out.get) for _ in processes]
    t_sent = time.perf_counter() - t0
    for process in processes:
        await asyncio.to_thread(process.join)
    accepted = sum(r["accepted"] for r in results)
    rejected = sum(r["rejected"] for r in results)
    retries = sum(r["retries"] for r in results)
    print(
        f"batch: {sum(r['requests'] for r in results)} requests answered 207 in {t_sent:.1f} s "
        f"({accepted / t_sent:,.0f} events/s accepted); {accepted} accepted, {rejected} rejected, "
        f"{retries} retried requests",
        flush=True,
    )
    if rejected:
        print(f"batch: first rejection {next(r['error'] for r in results if r['error'])}", flush=True)
    report("POST /v1/events/batch (500 events, loaded)", [x for r in results for x in r["latencies"]])

    BEHIND.clear()
    total = await all_counted(http, METRIC, events, customers)
    elapsed = time.perf_counter() - t0
    if BEHIND:
        print(f"batch: usage computes refused while storage lagged (status: count): {BEHIND}", flush=True)
    print(
        f"batch ingestion: {total} events counted by /v1/usage/compute {elapsed:.1f} s after the first send "
        f"= {total / elapsed:,.0f} events/s (target 100,000/s)",
        flush=True,
    )
    return total / elapsed


# ---------------------------------------------------------------- 3. event to billable


async def event_to_billable(http: httpx.AsyncClient, samples: int) -> None:
    latencies, posts, extra = [], [], 0
    counts = [0] * 10
    for n in range(samples):
        customer = n % len(counts)
        counts[customer] += 1
        body = {
            "transaction_id": f"e2b_{n}",
            "customer_id": f"cus_{customer}",
            "code": METRIC,
            "timestamp": f"2026-02-{n % 28 + 1:02d}T12:00:00Z",
            "properties": {"tokens": 1},
        }
        t0 = time.perf_counter()
        response = await http.post("/v1/events", json=body)
        posts.append(time.perf_counter() - t0)
        response.raise_for_status()
        while True:
            usage = await compute(http, f"cus_{customer}", FEBRUARY)
            if usage.status_code not in (200, 500, 503, 504):
                usage.raise_for_status()
            if usage.status_code == 200 and usage.json()["events_count"] >= counts[customer]:
                break
            extra += 1
        latencies.append(time.perf_counter() - t0)
    print(f"event to billable: {samples} samples, {extra} extra computes needed", flush=True)
    report("  POST /v1/events alone", posts)
    report("event sent -> counted by /v1/usage/compute", latencies)


# ---------------------------------------------------------------- 4. stored events


def stored_requests(worker: int, workers: int, events: int, customers: int) -> Iterator[bytes]:
    """Serialized IngestEventsRequests of 500: every `workers`-th batch."""
    rng = random.Random(worker)
    for first in range(worker * BATCH, events, workers * BATCH):
        request = pb.IngestEventsRequest()
        for n in range(first, min(events, first + BATCH)):
            millis = rng.randrange(STORED_SPAN * 1000)
            request.events.append(
                pb.UsageEvent(
                    transaction_id=f"s{n}",
                    customer_id=f"cus_{n % customers}",
                    code=METRIC,
                    timestamp=Timestamp(seconds=STORED_FROM + millis // 1000, nanos=millis % 1000 * 1_000_000),
                    properties={"tokens": str(rng.randint(1, 100))},
                )
            )
        yield request.SerializeToString()


async def ingest(address: str, worker: int, workers: int, events: int, customers: int, concurrency: int) -> int:
    """Sends this worker's requests, `concurrency` in flight so the metering
    writer group-commits them; builds the next while those are out."""
    async with grpc.aio.insecure_channel(address) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, pb.IngestEventsResponse] = channel.unary_unary(
            INGEST_EVENTS, request_serializer=None, response_deserializer=pb.IngestEventsResponse.FromString
        )
        in_flight = asyncio.Semaphore(concurrency)
        metadata = tenancy.metadata(ORG)
        accepted = 0

        async def send(request: bytes) -> None:
            nonlocal accepted
            try:
                reply = await call(request, metadata=metadata, timeout=300)
            finally:
                in_flight.release()
            accepted += sum(r.outcome == pb.INGEST_OUTCOME_ACCEPTED for r in reply.results)

        tasks = []
        for request in stored_requests(worker, workers, events, customers):
            await in_flight.acquire()
            tasks.append(asyncio.create_task(send(request)))
        await asyncio.gather(*tasks)
        return accepted


def load_worker(
    address: str, worker: int, workers: int, events: int, customers: int, concurrency: int, out: Queue[int]
) -> None:
    out.put(asyncio.run(ingest(address, worker, workers, events, customers, concurrency)))


async def load(address: str, options: Options) -> None:
    events, workers = options.stored_events, options.load_workers
    per_worker = math.ceil(options.load_concurrency / workers)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    processes = [
        context.Process(
            target=load_worker, args=(address, w, workers, events, options.stored_customers, per_worker, out)
        )
        for w in range(workers)
    ]
    t0 = time.perf_counter()
    for process in processes:
        process.start()
    accepted = sum([await asyncio.to_thread(out.get) for _ in processes])
    for process in processes:
        await asyncio.to_thread(process.join)
    elapsed = time.perf_counter() - t0
    print(
        f"load: {accepted} of {events} events stored over gRPC IngestEvents ({workers} client processes, "
        f"{per_worker} requests in flight each) in {elapsed:.0f} s = {events / elapsed:,.0f} events/s",
        flush=True,
    )


async def usage_compute(http: httpx.AsyncClient, options: Options) -> None:
    first = await compute(http, "cus_0", APRIL)
    first.raise_for_status()
    usage = first.json()
    print(f"usage of cus_0 in April: value {usage['value']} over {usage['events_count']} events", flush=True)
    latencies = []
    for _ in range(options.requests):
        t0 = time.perf_counter()
        response = await compute(http, "cus_0", APRIL)
        latencies.append(time.perf_counter() - t0)
        response.raise_for_status()
    report(f"POST /v1/usage/compute ({options.stored_events} stored)", latencies)


# ---------------------------------------------------------------- the scenario


async def run(stack: Stack, http: httpx.AsyncClient, options: Options) -> None:
    with Watch(stack) as watch:
        print(f"metering pid {watch.pid}, RSS {status_kb(watch.pid, 'VmRSS') / 1024:.0f} MB at start", flush=True)
        await setup(http, max(options.customers, options.batch_customers, options.stored_customers, 10))
        with watch.phase("batch ingestion"):
            await batch_ingestion(http, options)
        with watch.phase("single events"):
            latencies = await single_events(http, options.rate, options.seconds, options.customers)
            t_sent = time.perf_counter()
            report("POST /v1/events (single)", latencies)
            # The next phase starts with the queue drained.
            BEHIND.clear()
            total = await all_counted(http, "api_requests", len(latencies), options.customers)
            if BEHIND:
                print(f"single events: usage computes refused while storage lagged: {BEHIND}", flush=True)
            print(
                f"single events: all {total} counted by /v1/usage/compute "
                f"{time.perf_counter() - t_sent:.1f} s after the last answer",
                flush=True,
            )
        with watch.phase("event to billable"):
            await event_to_billable(http, options.samples)
        with watch.phase("load"):
            await load(stack.env["BXB_METERING_ADDRESS"], options)
        with watch.phase("usage compute"):
            await usage_compute(http, options)
        print(
            f"metering process memory: peak RSS sampled {watch.peak_kb / 1024:.0f} MB, "
            f"VmHWM {status_kb(watch.pid, 'VmHWM') / 1024:.0f} MB (target < 1536 MB)",
            flush=True,
        )
