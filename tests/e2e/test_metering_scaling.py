"""End-to-end: two metering processes share one durable JetStream consumer
and one ClickHouse server; one is killed (SIGKILL) mid-ingest, and usage
stays exact: nothing acknowledged is lost, nothing is counted twice.

Process B reaches ClickHouse through a pass-through HTTP proxy that counts
the events B stores and, on B's second stored message, lets the INSERT of
its events through and then withholds the answer: B is killed inside the
crash window the intake is built for, the events written and the message
not acknowledged, so JetStream redelivers it to A, which must store nothing
twice.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote_plus, urlsplit

import grpc

from bxb.metering.v1 import usage_events_pb2 as pb
from bxb.metering.v1 import usage_events_pb2_grpc, usage_pb2, usage_pb2_grpc
from deploy.embedded import Nats, free_port
from deploy.readiness import wait_serving
from services.common import config, tenancy
from services.common.timestamps import to_proto
from tests.conftest import Stack, Tenant, unique

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 5, 1, tzinfo=UTC)
END = datetime(2026, 6, 1, tzinfo=UTC)
CUSTOMERS = ("cus_a", "cus_b")
BATCH = 500  # events per SubmitEvents call, the most one call takes
CALLS = 40  # distinct batches: 20,000 events
AFTER_KILL = 12  # calls submitted after B is killed, at least


class ClickHouseProxy(ThreadingHTTPServer):
    """ClickHouse's HTTP interface passed through to `upstream` for one
    process. Counts the process's INSERTs into `events` and their rows, and
    withholds the answer to the `hold_after`-th one, once it is written."""

    daemon_threads = True

    def __init__(self, upstream: str, database: str, hold_after: int):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.events_insert = re.compile(rf"INSERT INTO {database}\.events\s")
        self.hold_after = hold_after
        self.lock = threading.Lock()
        self.inserts = 0
        self.stored_events = 0
        self.holding = threading.Event()
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ClickHouseProxy

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        try:
            upstream.request("POST", self.path, body, headers)
            response = upstream.getresponse()
            answer = response.read()
        finally:
            upstream.close()
        statement = unquote_plus(urlsplit(self.path).query) + "\n" + body.decode(errors="replace")
        if response.status == 200 and self.server.events_insert.search(statement):
            rows = sum(1 for line in statement.splitlines() if line.startswith("{"))
            with self.server.lock:
                self.server.inserts += 1
                self.server.stored_events += rows
                hold = self.server.inserts == self.server.hold_after
            if hold:  # written, never answered: the process dies waiting
                self.server.holding.set()
                self.server.release.wait()
                self.close_connection = True
                return
        self.send_response(response.status)
        for name in ("Content-Type", "X-ClickHouse-Exception-Code"):
            if response.getheader(name):
                self.send_header(name, response.getheader(name))
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args) -> None:
        return None


def metering_env(
    address: str, nats_url: str, clickhouse_url: str, database: str, home: Path, catalog: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BXB_")}
    env.update(
        BXB_METERING_ADDRESS=address,
        BXB_NATS_URL=nats_url,
        BXB_CLICKHOUSE_URL=clickhouse_url,
        BXB_CLICKHOUSE_DATABASE=database,
        BXB_HOME=str(home),
        # The stack's catalog: the organization exists, its metric and customers too.
        BXB_CATALOG_ADDRESS=catalog,
        BXB_SECRET_KEY=config.secret_key().decode(),  # the service token the test's calls carry
        # A usage query waits for the redelivery of what the killed process held.
        BXB_USAGE_SETTLE_TIMEOUT_SECONDS="30",
    )
    return env


def spawn(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.metering"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def batch(call: int) -> list[pb.UsageEvent]:
    """Call `call`'s events: distinct transaction ids, two customers, values
    with decimals, times spread over the window."""
    return [
        pb.UsageEvent(
            transaction_id=f"txn_{call}_{i}",
            customer_id=CUSTOMERS[i % 2],
            code="api",
            timestamp=to_proto(START + timedelta(seconds=call * BATCH + i)),
            properties={"tokens": f"{(call * 31 + i) % 1000}.{i % 7}"},
        )
        for i in range(BATCH)
    ]


def plan() -> list[int]:
    """The batches in the order they are sent: every fifth call is a client
    retry of the batch sent three calls earlier, which must count once."""
    order: list[int] = []
    for call in range(CALLS):
        order.append(call)
        if call % 5 == 4:
            order.append(call - 3)
    return order


def expected() -> dict[str, tuple[Decimal, int]]:
    totals = {customer: (Decimal(0), 0) for customer in CUSTOMERS}
    for call in range(CALLS):
        for event in batch(call):
            value, count = totals[event.customer_id]
            totals[event.customer_id] = (value + Decimal(event.properties["tokens"]), count + 1)
    return totals


async def submit(events: usage_events_pb2_grpc.EventServiceStub, org: str, call: int) -> None:
    """Submits call `call`'s batch, retried with the same events as a client
    would while metering answers that the organization's queue is too far
    behind (INGESTION_BACKLOG: a slow machine stores slowly)."""
    while True:
        try:
            reply = await events.SubmitEvents(
                pb.SubmitEventsRequest(events=batch(call)), metadata=tenancy.metadata(org)
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.2)
            continue
        assert [r.outcome for r in reply.results] == [pb.INGEST_OUTCOME_QUEUED] * BATCH
        return


async def usage_of(address: str, org: str) -> dict[str, tuple[Decimal, int]]:
    """Each customer's SUM of tokens and COUNT of events over the window."""
    found = {}
    async with grpc.aio.insecure_channel(address) as channel:
        usage = usage_pb2_grpc.UsageServiceStub(channel)
        for customer in CUSTOMERS:
            total = await usage.AggregateUsage(
                usage_pb2.AggregateUsageRequest(
                    customer_id=customer,
                    code="api",
                    aggregation=usage_pb2.AGGREGATION_SUM,  # as the metric defines it; the reply counts too
                    field_name="tokens",
                    start_time=to_proto(START),
                    end_time=to_proto(END),
                ),
                metadata=tenancy.metadata(org),
                timeout=40,
            )
            found[customer] = (Decimal(total.value), total.event_count)
    return found


async def test_two_processes_share_the_queue_and_a_killed_one_loses_and_doubles_nothing(
    clickhouse_url: str, stack: Stack, tenant: Tenant, tmp_path: Path
):
    database = unique("bxb_scaling")
    org = tenant.organization_id
    metric = {"name": "API", "code": "api", "aggregation_type": "sum", "field_name": "tokens"}
    assert (await tenant.http.post("/v1/billable_metrics", json=metric)).status_code == 201
    for customer in CUSTOMERS:
        assert (await tenant.http.post("/v1/customers", json={"id": customer})).status_code == 201
    nats = Nats(tmp_path / "nats")  # its own stream and consumer
    proxy = ClickHouseProxy(clickhouse_url, database, hold_after=2)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    a_address, b_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    processes: list[subprocess.Popen] = []
    try:
        nats.start()
        a_env = metering_env(a_address, nats.url, clickhouse_url, database, tmp_path / "a", stack.catalog)
        b_env = metering_env(b_address, nats.url, proxy.url, database, tmp_path / "b", stack.catalog)
        a = spawn(a_env, a_log)
        b = spawn(b_env, b_log)
        processes += [a, b]
        await asyncio.gather(wait_serving(a_address), wait_serving(b_address))

        order = plan()
        async with grpc.aio.insecure_channel(a_address) as channel:
            events = usage_events_pb2_grpc.EventServiceStub(channel)
            sent = 0
            for call in order[:-AFTER_KILL]:  # until B is inside its second message
                await submit(events, org, call)
                sent += 1
                if proxy.holding.is_set():
                    break
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while not proxy.holding.is_set():
                assert loop.time() < deadline, f"B stored {proxy.inserts} messages, not 2"
                await asyncio.sleep(0.02)
            # B stored one message and wrote the second's events: killed
            # before it acknowledges that one, with more calls still to come.
            b.send_signal(signal.SIGKILL)
            assert b.wait(10) == -signal.SIGKILL
            assert proxy.inserts == 2 and proxy.stored_events >= 2 * BATCH
            for call in order[sent:]:  # acknowledged after the kill: stored by A alone
                await submit(events, org, call)

        want = expected()
        assert sum(count for _, count in want.values()) == CALLS * BATCH
        assert await usage_of(a_address, org) == want

        # B again, straight to ClickHouse: its redelivered message was stored
        # once, and a retry of acknowledged events through it counts once.
        b_env["BXB_CLICKHOUSE_URL"] = clickhouse_url
        b = spawn(b_env, b_log)
        processes.append(b)
        await wait_serving(b_address)
        async with grpc.aio.insecure_channel(b_address) as channel:
            await submit(usage_events_pb2_grpc.EventServiceStub(channel), org, 0)
        assert await usage_of(b_address, org) == want
        assert await usage_of(a_address, org) == want
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        proxy.stop()
        nats.stop()
