"""Collecting the money (issue 19): automatic collection of N finalized
invoices through Stripe, and Stripe's webhooks in.

1. Automatic collection: N customers with a card saved at Stripe (made
   there directly), created in bxb with billing.provider "stripe" and that
   card, and linked by the payments service's linker (timed on its own: an
   invoice is charged only once its customer is linked); each is subscribed
   to a plan with a 49.00 base fee since last month. One billing run
   (InvoiceService.RunBilling, as billing.py) finalizes the N invoices, and
   the collector charges each, off session, when invoice_finalized arrives:
   no API call. Timed from the first invoice finalized until all N payments
   succeeded, and until invoicing shows all N paid (both polled in the
   databases every 0.1 s, which costs the stack next to nothing). Then
   checked: the PaymentIntents at Stripe are exactly N, one per invoice;
   no invoice has two succeeded attempts; GET /v1/payments?status=succeeded
   lists N. The CPU time each process used meanwhile says what bounds it.
2. Webhooks: signed payment_intent.succeeded events of those intents POSTed
   to /v1/webhooks/stripe/org_default, `concurrency` at once for `seconds`:
   first deliveries (new event ids), then duplicates (ids received before).
3. Stripe alone: PaymentIntents created directly with the SDK at the
   collector's concurrency, on the same Stripe; and localstripe's own rate
   (`localstripe_reference`), which is why N runs against the stand-in
   (bench/stripe_standin.py) unless `--stripe localstripe`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import stripe

from bench.billing import SETTINGS as BILLING_SETTINGS
from bench.billing import last_month, projected
from bench.common import KEY, ORG, percentile, report
from bench.rawhttp import Connection
from bxb.invoicing.v1 import billing_runs_pb2, billing_runs_pb2_grpc
from deploy.embedded import free_port, wait_for_port
from deploy.stack import Stack
from services.common import tenancy
from services.payments.models import LINK_FAILED, LINK_LINKED, PAYMENT_SUCCEEDED

STRIPE_KEY = "sk_test_bxb_bench"  # localstripe takes any sk_test_ key
WEBHOOK_SECRET = "whsec_bxb_bench_0123456789abcdef"
COLLECTOR_CONCURRENCY = 16  # services/payments/collection.py: Collector's charges at once
PLAN = {"code": "monthly_fee", "name": "Monthly fee", "interval": "monthly", "amount_cents": 4900, "charges": []}
WEBHOOK_PATH = f"/v1/webhooks/stripe/{ORG}"
ROOT = Path(__file__).resolve().parent.parent
# A phase whose counts stop moving for this long has failed.
STALLED_SECONDS = 180.0


@dataclass(frozen=True)
class StripeServer:
    """A Stripe API in its own process: localstripe, or the bench's stand-in."""

    kind: str  # "localstripe" or "standin"
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> stripe.StripeClient:
        http = stripe.HTTPXClient(timeout=300)  # localstripe grows slow
        return stripe.StripeClient(
            STRIPE_KEY, base_addresses={"api": self.url}, http_client=http, max_network_retries=0
        )


@contextmanager
def stripe_server(kind: str, latency_ms: float = 0.0) -> Iterator[StripeServer]:
    """localstripe (GPL: only ever its own process, as tests/stripe.py runs
    it) or the stand-in (taking `latency_ms` per PaymentIntent), on a free
    port, stopped on exit."""
    port = free_port()
    if kind == "localstripe":
        command = [str(Path(sys.executable).parent / "localstripe"), "--port", str(port), "--from-scratch"]
    else:
        command = [sys.executable, "-m", "bench.stripe_standin", "--port", str(port), "--api-key", STRIPE_KEY]
        command += ["--latency-ms", str(latency_ms)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=30, process=process)
        yield StripeServer(kind, port, process)
    finally:
        process.terminate()
        process.wait(timeout=10)


def settings(server: StripeServer) -> dict[str, str]:
    """The stack's settings: the billing bench's (the timed run is the only
    one), and the default organization's Stripe shortcut. BXB_SECRET_KEY is
    not needed for it (only connected accounts are sealed); the stack sets one anyway."""
    return {
        **BILLING_SETTINGS,
        "BXB_STRIPE_API_KEY": STRIPE_KEY,
        "BXB_STRIPE_API_BASE": server.url,
        "BXB_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }


async def cards(server: StripeServer, count: int, concurrency: int = 16) -> list[tuple[str, str]]:
    """`count` Stripe customers, each with a card attached: (cus_..., pm_...).
    At localstripe through the SDK, three calls each, as tests/stripe.py
    does; the stand-in makes them in one request per thousand."""
    if server.kind == "standin":
        made: list[tuple[str, str]] = []
        headers = {"Authorization": f"Bearer {STRIPE_KEY}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as h:
            for first in range(0, count, 1000):
                answer = await h.post("/bench/customers", params={"count": min(1000, count - first)})
                answer.raise_for_status()
                made += [(c, m) for c, m in answer.json()]
        return made
    client = server.client()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> tuple[str, str]:
        async with gate:
            customer = await client.v1.customers.create_async(params={"email": "billing@bench.test"})
            card: stripe.params.PaymentMethodCreateParams = {
                "type": "card",
                "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"},
            }
            method = await client.v1.payment_methods.create_async(params=card)
            await client.v1.payment_methods.attach_async(method.id, params={"customer": customer.id})
            return customer.id, method.id

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def watch(
    read: Callable[[], Awaitable[tuple[int, ...]]], done: Callable[[tuple[int, ...]], bool], what: str
) -> tuple[int, ...]:
    """Reads counts every 0.1 s until `done`; fails loudly when they stop moving."""
    last, moved = None, time.perf_counter()
    while True:
        counts = await read()
        if done(counts):
            return counts
        if counts != last:
            last, moved = counts, time.perf_counter()
        elif time.perf_counter() - moved > STALLED_SECONDS:
            raise SystemExit(f"FAILED: {what} stalled at {counts} for {STALLED_SECONDS:.0f} s")
        await asyncio.sleep(0.1)


async def customers(stack: Stack, http: httpx.AsyncClient, made: list[tuple[str, str]]) -> None:
    """The customers in bxb, with their Stripe customer and card; timed until all are linked."""
    gate = asyncio.Semaphore(32)

    async def create(n: int, stripe_customer: str, method: str) -> None:
        body = {
            "id": f"collect_{n}",
            "email": f"billing+{n}@bench.test",
            "billing": {"provider": "stripe", "provider_customer_id": stripe_customer},
            "payment_method": {"provider_customer_id": stripe_customer, "provider_payment_method": method},
        }
        async with gate:
            (await http.post("/v1/customers", json=body)).raise_for_status()

    payments = await asyncpg.connect(stack.env["BXB_PAYMENTS_DATABASE_URL"])
    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(create(n, c, m) for n, (c, m) in enumerate(made)))
        created = time.perf_counter() - t0

        async def link_counts() -> tuple[int, ...]:
            row = await payments.fetchrow(
                "SELECT count(*) FILTER (WHERE status = $1), count(*) FILTER (WHERE status = $2)"
                " FROM provider_customers",
                LINK_LINKED,
                LINK_FAILED,
            )
            assert row is not None
            if row[1]:
                raise SystemExit(f"FAILED: {row[1]} customers could not be linked to Stripe")
            return (row[0],)

        await watch(link_counts, lambda c: c[0] >= len(made), "linking customers")
        linked = time.perf_counter() - t0
    finally:
        await payments.close()
    sample = [f"collect_{n}" for n in range(0, len(made), max(1, len(made) // 50))]
    shown = [(await http.get(f"/v1/customers/{c}/provider_customer")).json()["status"] for c in sample]
    if set(shown) != {"linked"}:
        raise SystemExit(f"FAILED: GET /v1/customers/{{id}}/provider_customer says {Counter(shown)}")
    n = len(made)
    print(
        f"created {n} customers with a card in {created:.1f} s ({n / created:.0f}/s); all {n} linked at Stripe "
        f"{linked:.1f} s after the first was created ({n / linked:.0f}/s; {len(sample)} checked over HTTP)",
        flush=True,
    )


async def subscribe(http: httpx.AsyncClient, count: int) -> None:
    (await http.post("/v1/plans", json=PLAN)).raise_for_status()
    start, _ = last_month()
    gate = asyncio.Semaphore(32)

    async def one(n: int) -> None:
        body = {"customer_id": f"collect_{n}", "plan_code": PLAN["code"], "start_date": start.isoformat()}
        async with gate:
            (await http.post("/v1/subscriptions", json=body)).raise_for_status()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    print(f"created {count} subscriptions in {time.perf_counter() - t0:.1f} s", flush=True)


MACHINE = "(whole machine)"


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) each process used so far, with its
    descendants not named (PostgreSQL's backends): the bench's own process,
    which started every other, counts alone. MACHINE: every core's busy time
    (/proc/stat), so that what other processes took meanwhile shows."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[int, float] = {}
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    named = set(pids.values())

    def total(pid: int) -> float:
        return used.get(pid, 0.0) + sum(total(child) for child in children.get(pid, []) if child not in named)

    spent = {name: total(pid) if pid != os.getpid() else used.get(pid, 0.0) for name, pid in pids.items()}
    cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _, _, irq, softirq, steal = (int(v) for v in cpu[:8])
    return {**spent, MACHINE: (user + nice + system + irq + softirq + steal) / ticks}


def cpu_report(
    before: dict[str, float], after: dict[str, float], wall: float, count: int, unit: str = "invoice"
) -> str:
    """Each process's CPU seconds between two readings, as a share of one
    core and per invoice; and what processes not named took meanwhile."""
    spent = sorted(((after[name] - before.get(name, 0.0), name) for name in after if name != MACHINE), reverse=True)
    others = after[MACHINE] - before[MACHINE] - sum(s for s, _ in spent)
    parts = ", ".join(
        f"{name} {s:.1f} s ({100 * s / wall:.0f}%, {1000 * s / count:.3g} ms/{unit})" for s, name in spent if s >= 0.05
    )
    return (
        f"CPU over those {wall:.1f} s ({os.cpu_count()} cores; % of one core): {parts}; "
        f"processes not named above (anything else on the machine): {max(others, 0.0):.1f} s ({100 * max(others, 0.0) / wall:.0f}%)"
    )


@dataclass
class Collected:
    intents: list[dict[str, Any]]  # the PaymentIntents at Stripe, as its API answers them


def processes(stack: Stack, server: StripeServer) -> dict[str, int]:
    """The processes whose CPU time is reported: the stack's, Stripe's and the bench's own."""
    return {**stack.supervisor.pids(), "stripe": server.process.pid, "bench": os.getpid()}


async def collect(stack: Stack, http: httpx.AsyncClient, server: StripeServer, count: int) -> Collected:
    """The billing run, then automatic collection of its invoices, timed and checked."""
    invoicing = await asyncpg.connect(stack.env["BXB_INVOICING_DATABASE_URL"])
    payments = await asyncpg.connect(stack.env["BXB_PAYMENTS_DATABASE_URL"])
    marks: dict[str, float] = {}

    async def counts() -> tuple[int, ...]:
        row = await invoicing.fetchrow(
            "SELECT count(*) FILTER (WHERE status <> 'INVOICE_STATUS_DRAFT'),"
            " count(*) FILTER (WHERE status = 'INVOICE_STATUS_PAID') FROM invoices"
        )
        succeeded = await payments.fetchval("SELECT count(*) FROM payments WHERE status = $1", PAYMENT_SUCCEEDED)
        assert row is not None
        now = time.perf_counter()
        finalized, paid = row
        if finalized:
            marks.setdefault("first", now)
        if finalized >= count:
            marks.setdefault("finalized", now)
        if succeeded >= count:
            marks.setdefault("succeeded", now)
        if paid >= count:
            marks.setdefault("paid", now)
        return finalized, succeeded, paid

    pids = processes(stack, server)
    try:
        async with grpc.aio.insecure_channel(stack.env["BXB_INVOICING_ADDRESS"]) as channel:
            stub = billing_runs_pb2_grpc.BillingRunServiceStub(channel)
            cpu_before = cpu_seconds(pids)
            t0 = time.perf_counter()

            async def billing_run() -> billing_runs_pb2.RunBillingResponse:
                request = billing_runs_pb2.RunBillingRequest()
                return await stub.RunBilling(request, metadata=tenancy.metadata(ORG), timeout=3600)

            run = asyncio.create_task(billing_run())
            run.add_done_callback(lambda _: marks.setdefault("answered", time.perf_counter()))
            final = await watch(counts, lambda c: c[1] >= count and c[2] >= count, "collection")
            ran = await run
            cpu_after = cpu_seconds(pids)
        published = await invoicing.fetchrow(
            "SELECT extract(epoch FROM max(publish_time) - min(create_time)) FROM outbox"
            " WHERE subject = 'bxb.invoicing.v1.invoice_finalized'"
        )
        recorded = await payments.fetchval(
            "SELECT extract(epoch FROM max(create_time) - min(create_time)) FROM payments"
        )
        duplicated = await payments.fetchval(
            "SELECT count(*) FROM (SELECT payment_id FROM payment_attempts WHERE status = 'succeeded'"
            " GROUP BY payment_id HAVING count(*) > 1) AS twice"
        )
        attempts = await payments.fetchval("SELECT count(*) FROM payment_attempts")
        # Where each payment's time went: from invoice_finalized recorded to its attempt
        # stored (waiting for the collector), then to the outcome recorded (the charge).
        timings = await payments.fetch(
            "SELECT extract(epoch FROM a.create_time - p.create_time) AS waited,"
            " extract(epoch FROM p.update_time - a.create_time) AS charged"
            " FROM payments p JOIN payment_attempts a ON a.payment_id = p.id"
        )
    finally:
        await invoicing.close()
        await payments.close()
    if ran.invoices_created != count or final[0] != count:
        raise SystemExit(
            f"FAILED: the billing run issued {ran.invoices_created} invoices ({final[0]} stored), not {count}"
        )
    first = marks["first"]
    took, paid_took = marks["succeeded"] - first, marks["paid"] - first
    print(
        f"billing run: {count} invoices finalized {marks['finalized'] - t0:.1f} s after it started "
        f"(first one {first - t0:.1f} s in; RunBilling answered after {marks['answered'] - t0:.1f} s)",
        flush=True,
    )
    print(
        f"AUTOMATIC COLLECTION: {count} finalized invoices charged off session with no API call: all {count} "
        f"payments succeeded {took:.1f} s after the first invoice was finalized = {count / took:.0f} invoices/s; "
        f"all {count} invoices paid in invoicing after {paid_took:.1f} s = {count / paid_took:.0f} invoices/s",
        flush=True,
    )
    print(cpu_report(cpu_before, cpu_after, marks["paid"] - t0, count), flush=True)
    waited, charged = [float(t["waited"]) for t in timings], [float(t["charged"]) for t in timings]
    assert published is not None
    print(
        f"invoicing published the {count} invoice_finalized within {float(published[0]):.1f} s of the first stored; "
        f"payments recorded them (one at a time, in order) over {float(recorded):.1f} s",
        flush=True,
    )
    print(
        f"per payment: invoice_finalized recorded -> attempt stored (waiting for the collector) "
        f"p50 {percentile(waited, 50):.1f} s, p99 {percentile(waited, 99):.1f} s; attempt stored -> outcome recorded "
        f"(the charge: Stripe called between two transactions) p50 {1000 * percentile(charged, 50):.0f} ms, "
        f"p99 {1000 * percentile(charged, 99):.0f} ms; charges in flight on average "
        f"{sum(charged) / took:.1f} (the collector allows {COLLECTOR_CONCURRENCY})",
        flush=True,
    )

    page = await server.client().v1.payment_intents.list_async(params={"limit": 100})
    intents = [intent.to_dict() async for intent in page.auto_paging_iter()]
    per_invoice = Counter(str((i.get("metadata") or {}).get("bxb_invoice_id", "")) for i in intents)
    statuses = Counter(str(i.get("status")) for i in intents)
    listed = await succeeded_over_http(http)
    print(
        f"PaymentIntents created at Stripe ({server.kind}, counted at its side): {len(intents)} for {count} invoices; "
        f"invoices with more than one: {sum(1 for n in per_invoice.values() if n > 1)}; statuses {dict(statuses)}; "
        f"payment attempts in bxb: {attempts}, invoices with two succeeded attempts: {duplicated}; "
        f"GET /v1/payments?status=succeeded lists {listed}",
        flush=True,
    )
    if len(intents) != count or len(per_invoice) != count or duplicated or listed != count:
        raise SystemExit(
            f"FAILED: EXACTLY ONCE BROKEN: {len(intents)} PaymentIntents at Stripe for {count} invoices "
            f"({len(per_invoice)} invoices charged), {duplicated} invoices with two succeeded attempts, "
            f"{listed} payments listed as succeeded"
        )
    return Collected(intents)


async def succeeded_over_http(http: httpx.AsyncClient) -> int:
    """The payments GET /v1/payments?status=succeeded lists, page after page."""
    listed, token = 0, ""
    while True:
        params = {"status": "succeeded", "page_size": "500", **({"page_token": token} if token else {})}
        answer = await http.get("/v1/payments", params=params)
        answer.raise_for_status()
        body = answer.json()
        listed += len(body["payments"])
        token = body.get("next_page_token", "")
        if not token:
            return listed


def sign(payload: bytes, secret: str) -> str:
    """Stripe's Stripe-Signature header for `payload`, signed now
    (tests/stripe_events.py's scheme: HMAC-SHA256 of "<t>.<payload>")."""
    at = int(time.time())
    return f"t={at},v1={hmac.new(secret.encode(), b'%d.' % at + payload, hashlib.sha256).hexdigest()}"


def succeeded_event(intent: dict[str, Any], event_id: str) -> bytes:
    """A payment_intent.succeeded event carrying `intent`, as Stripe sends it."""
    event = {
        "id": event_id,
        "object": "event",
        "api_version": stripe.api_version,
        "created": int(time.time()),
        "data": {"object": intent},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "payment_intent.succeeded",
    }
    return json.dumps(event, indent=2).encode()


async def deliveries(
    url: str, events: Callable[[int], tuple[str, bytes]], concurrency: int, seconds: float, duplicate: bool
) -> tuple[list[tuple[str, bytes]], list[float], Counter[str], float]:
    """POSTs signed events (`events(n)`: the n-th id and payload), `concurrency`
    at once, for `seconds`: those answered as expected, latencies, anything
    else answered (by status, or a wrong `duplicate`), and the time taken."""
    stop = asyncio.get_running_loop().time() + seconds
    counter = itertools.count()
    received: list[tuple[str, bytes]] = []
    latencies: list[float] = []
    wrong: Counter[str] = Counter()

    async def worker() -> None:
        connection = await Connection.open(url, KEY)
        try:
            while asyncio.get_running_loop().time() < stop:
                event_id, payload = events(next(counter))
                headers = f"Stripe-Signature: {sign(payload, WEBHOOK_SECRET)}\r\n"
                t = time.perf_counter()
                status, body = await connection.request("POST", WEBHOOK_PATH, payload, headers)
                latencies.append(time.perf_counter() - t)
                if status != 200:
                    wrong[f"{status} {body[:200]!r}"] += 1
                elif json.loads(body)["duplicate"] is not duplicate:
                    wrong[f"duplicate={not duplicate}"] += 1
                else:
                    received.append((event_id, payload))
        finally:
            await connection.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return received, latencies, wrong, time.perf_counter() - t0


async def webhooks(
    url: str, intents: list[dict[str, Any]], concurrency: int, seconds: float, pids: dict[str, int]
) -> None:
    def first(n: int) -> tuple[str, bytes]:
        event_id = f"evt_bench_{n:09d}"
        return event_id, succeeded_event(intents[n % len(intents)], event_id)

    before = cpu_seconds(pids)
    received, latencies, wrong, took = await deliveries(url, first, concurrency, seconds, duplicate=False)
    after = cpu_seconds(pids)
    print(
        f"WEBHOOKS, first deliveries: {len(latencies)} signed payment_intent.succeeded POSTed to {WEBHOOK_PATH} "
        f"({concurrency} at once) in {took:.1f} s = {len(latencies) / took:.0f} events/s; not as expected: "
        f"{sum(wrong.values())} {dict(wrong) if wrong else ''}",
        flush=True,
    )
    report("webhook, first delivery", latencies)
    print(cpu_report(before, after, took, len(latencies), "event"), flush=True)
    if not received:
        raise SystemExit("FAILED: no webhook was received")

    def again(n: int) -> tuple[str, bytes]:
        return received[n % len(received)]

    before = cpu_seconds(pids)
    _, latencies, wrong, took = await deliveries(url, again, concurrency, seconds, duplicate=True)
    after = cpu_seconds(pids)
    print(
        f"WEBHOOKS, duplicates (event ids received before, signed anew): {len(latencies)} in {took:.1f} s = "
        f"{len(latencies) / took:.0f} events/s; not answered duplicate: {sum(wrong.values())} "
        f"{dict(wrong) if wrong else ''}",
        flush=True,
    )
    report("webhook, duplicate", latencies)
    print(cpu_report(before, after, took, len(latencies), "event"), flush=True)


async def intents_alone(server: StripeServer, made: list[tuple[str, str]], concurrency: int, seconds: float) -> None:
    """PaymentIntents created directly with the SDK (as bxb creates them:
    confirmed, off session), `concurrency` at once, for `seconds`."""
    client = server.client()
    stop = asyncio.get_running_loop().time() + seconds
    counter = itertools.count()
    latencies: list[float] = []

    async def worker() -> None:
        while asyncio.get_running_loop().time() < stop:
            customer, method = made[next(counter) % len(made)]
            params: stripe.params.PaymentIntentCreateParams = {
                "amount": 4900,
                "currency": "usd",
                "customer": customer,
                "payment_method": method,
                "confirm": True,
                "off_session": True,
            }
            t = time.perf_counter()
            await client.v1.payment_intents.create_async(params=params)
            latencies.append(time.perf_counter() - t)

    pids = {"stripe": server.process.pid, "bench (the SDK client)": os.getpid()}
    before = cpu_seconds(pids)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.perf_counter() - t0
    after = cpu_seconds(pids)
    print(
        f"STRIPE ALONE ({server.kind}, {len(made)} customers with a card stored): {len(latencies)} PaymentIntents "
        f"created directly with the SDK, {concurrency} at once, in {took:.1f} s = {len(latencies) / took:.1f}/s "
        f"(p50 {1000 * percentile(latencies, 50):.0f} ms, p99 {1000 * percentile(latencies, 99):.0f} ms)",
        flush=True,
    )
    print(cpu_report(before, after, took, len(latencies), "PaymentIntent"), flush=True)


async def run(
    stack: Stack, http: httpx.AsyncClient, server: StripeServer, count: int, concurrency: int, seconds: float
) -> None:
    t0 = time.perf_counter()
    made = await cards(server, count)
    print(f"{count} Stripe customers with a card made at {server.kind} in {time.perf_counter() - t0:.1f} s", flush=True)
    await customers(stack, http, made)
    await subscribe(http, count)
    await projected(stack.env["BXB_INVOICING_DATABASE_URL"], count)
    collected = await collect(stack, http, server, count)
    await webhooks(str(http.base_url).rstrip("/"), collected.intents, concurrency, seconds, processes(stack, server))
    await intents_alone(server, made, COLLECTOR_CONCURRENCY, seconds)


async def localstripe_reference(customers: int, seconds: float) -> None:
    """localstripe's own rates, alone on the machine: customers with a card
    made in four slices (each slower than the last: it pickles its whole
    store on every write), then PaymentIntents at the collector's concurrency."""
    with stripe_server("localstripe") as server:
        made: list[tuple[str, str]] = []
        rates = []
        for _ in range(4):
            t = time.perf_counter()
            made += await cards(server, customers // 4)
            rates.append(f"{(customers // 4) / (time.perf_counter() - t):.1f}/s up to {len(made)}")
        print(f"localstripe: customers with a card (3 SDK calls each, 16 at once): {', '.join(rates)}", flush=True)
        await intents_alone(server, made, COLLECTOR_CONCURRENCY, seconds)
