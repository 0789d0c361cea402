"""End-to-end crash tests: one `make run` stack (embedded PostgreSQL and
NATS, four services, the gateway, Stripe as localstripe), and each of its
processes killed with SIGKILL in turn while a client ingests batches of
events and the billing run issues invoices that a client charges; one more
subscription is asked for while the process is down.

The supervisor restarts what was killed. A client retries a failed request
with the same idempotency keys, as a real one would. Afterwards the events
acknowledged are exactly the events counted, each subscription's ended
period has exactly one invoice, and Stripe charged each invoice exactly once. One stack is
killed again and again (one test: xdist keeps it on one worker); each kill
prints how long after it a read route and an ingest route first answered,
and the failed answers seen meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.common.timestamps import utcnow
from tests.conftest import eventually
from tests.e2e.test_stack import KEY, stack_env, start_make_run, stop_make_run
from tests.service.test_walkthrough_bill_by_usage import METRIC
from tests.stripe import LocalStripe

SETTLE = 2  # seconds after a subscription's creation before the billing run bills its ended periods
PERIODS = 3  # ended monthly periods each test's subscription has to be billed
BATCH = 20  # events per ingest request
RECOVERY_BOUND = 30.0  # seconds: generous, for a slow shared 2-core machine
PLAN = {
    "name": "Crash",
    "code": "crash",
    "interval": "monthly",
    "amount_cents": 1000,
    "charges": [
        {"billable_metric_code": "api_requests", "charge_model": "standard", "properties": {"amount": "0.001"}}
    ],
}


@dataclass
class Running:
    """The `make run` process, its home, and every line it printed so far."""

    process: subprocess.Popen
    home: Path
    url: str
    lines: list[str] = field(default_factory=list)

    def pid(self, child: str) -> int:
        return json.loads((self.home / "pids.json").read_text())["children"][child]

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def drain(process: subprocess.Popen, lines: list[str]) -> None:
    """Keeps reading the supervisor's output (a full pipe would block it)."""
    for line in process.stdout:
        lines.append(line)


@pytest.fixture
def running(tmp_path_factory, localstripe: LocalStripe) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("crashes") / "home"
    env = stack_env(
        home,
        BXB_API_KEY=KEY,
        BXB_BILLING_INTERVAL_SECONDS="1",
        BXB_BILLING_SETTLE_SECONDS=str(SETTLE),
        BXB_STRIPE_API_KEY=localstripe.api_key,
        BXB_STRIPE_API_BASE=localstripe.url,
        BXB_STRIPE_TIMEOUT_SECONDS="2",
        BXB_PAYMENTS_RECOVERY_INTERVAL_SECONDS="1",
    )
    process, url, _ = start_make_run(env)
    stack = Running(process, home, url)
    reader = threading.Thread(target=drain, args=(process, stack.lines), daemon=True)
    reader.start()
    try:
        yield stack
    finally:
        stop_make_run(process)
        reader.join(10)
        print("".join(line for line in stack.lines if " stack " in line))


@pytest.fixture
async def http(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=running.url, headers=headers, timeout=10) as client:
        assert (await client.post("/v1/billable_metrics", json=METRIC)).status_code == 201
        assert (await client.post("/v1/plans", json=PLAN)).status_code == 201
        yield client


def month_start(moment: datetime, back: int) -> datetime:
    """The first instant of the month `back` months before `moment`'s."""
    index = moment.year * 12 + moment.month - 1 - back
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Outage:
    """What the clients saw around one kill."""

    killed_at: float = 0.0
    recovered: dict[str, float] = field(default_factory=dict)  # route -> seconds from the kill
    statuses: Counter[str] = field(default_factory=Counter)  # failed answers, by status or error
    wrong: list[str] = field(default_factory=list)  # answers no outage excuses: a 500, a client timeout

    def failed(self, route: str, answer: httpx.Response | Exception) -> None:
        key = str(answer.status_code) if isinstance(answer, httpx.Response) else type(answer).__name__
        self.statuses[key] += 1
        if key == "500" or isinstance(answer, httpx.TimeoutException):
            self.wrong.append(f"{route}: {key} {answer.text[:200] if isinstance(answer, httpx.Response) else ''}")


async def attempt(http: httpx.AsyncClient, outage: Outage, method: str, url: str, **kwargs) -> httpx.Response | None:
    """One request: its response when 2xx, else None (the failure noted)."""
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.HTTPError as error:
        outage.failed(f"{method} {url}", error)
        return None
    if response.is_success:
        return response
    outage.failed(f"{method} {url}", response)
    return None


class Ingest:
    """A client sending batches of new events until told to stop, each
    batch retried with the same keys until every event in it is accepted."""

    def __init__(self, http: httpx.AsyncClient, customer: str, outage: Outage):
        self.http = http
        self.customer = customer
        self.outage = outage
        self.acked: dict[str, int] = {}  # transaction_id -> tokens, of events answered 202
        self.batches = 0  # sent and acknowledged
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            events = [
                {
                    "transaction_id": f"{self.customer}_{self.batches}_{i}",
                    "customer_id": self.customer,
                    "code": "api_requests",
                    "timestamp": stamp(utcnow()),
                    "properties": {"tokens": 1 + i % 7},
                }
                for i in range(BATCH)
            ]
            await self.send(events)
            self.batches += 1
            await asyncio.sleep(0.1)  # a steady stream, not a flood of the two shared cores

    async def acknowledged(self, count: int) -> None:
        """Returns once `count` events are acknowledged."""

        async def enough():
            assert len(self.acked) >= count

        await eventually(enough, timeout=60)

    async def send(self, events: list[dict]) -> None:
        while True:
            response = await attempt(self.http, self.outage, "POST", "/v1/events/batch", json={"events": events})
            if response is not None and all(r["status"] == 202 for r in response.json()["results"]):
                self.acked.update((e["transaction_id"], e["properties"]["tokens"]) for e in events)
                return
            await asyncio.sleep(0.1)


async def probe(http: httpx.AsyncClient, outage: Outage, name: str, method: str, url: str, **kwargs) -> None:
    """Repeats one request until it succeeds; notes when, counted from the kill."""
    while True:
        if await attempt(http, outage, method, url, timeout=3, **kwargs) is not None:
            outage.recovered[name] = time.monotonic() - outage.killed_at
            return
        await asyncio.sleep(0.1)


async def subscribe(http: httpx.AsyncClient, outage: Outage, customer: str, start: datetime, name: str) -> str:
    """Creates a subscription, retried with the same external_id until it is answered."""
    sub = {
        "customer_id": customer,
        "plan_code": "crash",
        "start_date": stamp(start),
        "billing_time": "calendar",
        "external_id": f"{customer}_{name}",
    }
    while True:
        created = await attempt(http, outage, "POST", "/v1/subscriptions", json=sub)
        if created is not None:
            return created.json()["id"]
        await asyncio.sleep(0.1)


async def charge_every_invoice(http: httpx.AsyncClient, customer: str, outage: Outage, count: int) -> list[dict]:
    """Waits for `count` invoices of the customer (the billing run's) and
    charges each until it is paid, retrying like a client; the invoices."""
    paid: set[str] = set()
    while True:
        listed = await attempt(http, outage, "GET", "/v1/invoices", params={"customer_id": customer})
        invoices = [i for i in listed.json()["invoices"] if i["id"]] if listed is not None else []
        for invoice in invoices:
            if invoice["id"] not in paid and invoice["status"] in ("finalized", "paid"):
                charged = await attempt(http, outage, "POST", f"/v1/invoices/{invoice['id']}/charge")
                if charged is not None:
                    assert charged.json()["status"] == "paid", charged.text
                    paid.add(invoice["id"])
        if len(paid) >= count:
            return invoices
        await asyncio.sleep(0.2)


READS = {  # a read route that needs the killed process
    "catalog": ("GET", "/v1/customers/{customer}", {}),
    "metering": ("GET", "/v1/events", {"params": {"customer_id": "{customer}", "page_size": "1"}}),
    "invoicing": ("GET", "/v1/invoices", {"params": {"customer_id": "{customer}"}}),
    "payments": ("GET", "/v1/parked_messages", {"params": {"service": "payments"}}),
    "gateway": ("GET", "/v1/billable_metrics", {}),
    "nats": ("POST", "/v1/usage/compute", {"json": "usage"}),
    "postgres": ("GET", "/v1/customers/{customer}", {}),
}


def read_route(target: str, customer: str, usage: dict) -> tuple[str, str, dict]:
    method, path, kwargs = READS[target]
    filled = {
        key: usage if value == "usage" else {k: v.format(customer=customer) for k, v in value.items()}
        for key, value in kwargs.items()
    }
    return method, path.format(customer=customer), filled


@dataclass
class Customer:
    """A customer of one crash scenario: its card at Stripe and its subscriptions."""

    id: str
    stripe_id: str
    subscriptions: dict[str, int] = field(default_factory=dict)  # id -> ended periods to bill

    async def billed_once(self, http: httpx.AsyncClient, localstripe: LocalStripe, now: datetime) -> str:
        """Checks that each ended period of its subscriptions has exactly one
        invoice, charged at Stripe exactly once; says what it found."""
        listed = await http.get("/v1/invoices", params={"customer_id": self.id})
        assert listed.status_code == 200, listed.text
        invoices = [i for i in listed.json()["invoices"] if i["id"]]
        periods = Counter((invoice["subscription_id"], invoice["period_start"]) for invoice in invoices)
        intents = [i for i in await localstripe.intents_of(self.stripe_id) if i.status == "succeeded"]
        charges = Counter(intent.metadata["bxb_invoice_id"] for intent in intents)
        expected = {
            (sub, stamp(month_start(now, back)))
            for sub, ended in self.subscriptions.items()
            for back in range(ended, 0, -1)
        }
        assert set(periods) == expected and set(periods.values()) == {1}, periods
        assert charges == Counter({invoice["id"]: 1 for invoice in invoices}), charges
        assert all(intent.amount == PLAN["amount_cents"] for intent in intents)
        return (
            f"{len(invoices)} invoices for {len(periods)} periods, {len(intents)} charges for {len(charges)} invoices"
        )


async def crash(
    running: Running, http: httpx.AsyncClient, localstripe: LocalStripe, target: str, now: datetime
) -> Customer:
    """Kills `target` while a client ingests and the billing run bills, and
    checks what the clients got once it is back; prints what happened."""
    stripe_customer, method = await localstripe.customer_with_card()
    customer = Customer(f"cus_crash_{target}", stripe_customer)
    body = {
        "id": customer.id,
        "billing": {"provider": "stripe"},
        "payment_method": {"provider_customer_id": stripe_customer, "provider_payment_method": method},
    }
    assert (await http.post("/v1/customers", json=body)).status_code == 201
    start = month_start(now, PERIODS)
    outage = Outage()
    before = await subscribe(http, outage, customer.id, start, "before")  # billed about when the process is killed
    subscribed_at = time.monotonic()
    ingest = Ingest(http, customer.id, outage)
    sending = asyncio.create_task(ingest.run())
    billing = asyncio.create_task(charge_every_invoice(http, customer.id, outage, PERIODS + 1))
    # Killed while events flow, as the billing run comes due for the subscription.
    await asyncio.sleep(subscribed_at + SETTLE - time.monotonic())
    await ingest.acknowledged(3 * BATCH)
    killed = running.pid(target)
    os.kill(killed, signal.SIGKILL)
    outage.killed_at = time.monotonic()
    # One more subscription, asked for while the process is down: announced
    # and billed once it is back.
    after = asyncio.create_task(subscribe(http, outage, customer.id, month_start(now, 1), "after"))
    usage = {
        "customer_id": customer.id,
        "code": "api_requests",
        "period_start": stamp(start),
        "period_end": stamp(now + timedelta(days=1)),
    }
    probe_event = {
        "transaction_id": f"{customer.id}_probe",
        "customer_id": customer.id,
        "code": "api_requests",
        "timestamp": stamp(utcnow()),
        "properties": {"tokens": 1},
    }
    method_, path, kwargs = read_route(target, customer.id, usage)
    await asyncio.wait_for(
        asyncio.gather(
            probe(http, outage, "read", method_, path, **kwargs),
            probe(http, outage, "ingest", "POST", "/v1/events/batch", json={"events": [probe_event]}),
        ),
        timeout=60,
    )
    ingest.acked[probe_event["transaction_id"]] = 1  # acknowledged once it got through
    await ingest.acknowledged(len(ingest.acked) + 3 * BATCH)  # events keep flowing after the restart
    ingest.stop.set()
    await asyncio.wait_for(sending, 30)
    await asyncio.wait_for(billing, 90)
    customer.subscriptions = {before: PERIODS, await after: 1}

    # Events acknowledged are events counted: none lost, none doubled.
    async def counted() -> dict:
        response = await http.post("/v1/usage/compute", json=usage)
        assert response.status_code == 200, response.text
        return response.json()

    result = await eventually(counted, timeout=30)
    lost = max(0, len(ingest.acked) - result["events_count"])
    doubled = max(0, result["events_count"] - len(ingest.acked))
    invoices = await customer.billed_once(http, localstripe, now)
    print(
        f"{target}: killed pid {killed}; read route answered after {outage.recovered['read']:.1f} s, "
        f"ingest after {outage.recovered['ingest']:.1f} s; failed answers {dict(outage.statuses)}; "
        f"{len(ingest.acked)} events acknowledged, {result['events_count']} counted "
        f"({lost} lost, {doubled} doubled); {invoices}; wrong answers {outage.wrong}",
        flush=True,
    )
    assert (result["events_count"], result["value"]) == (len(ingest.acked), str(sum(ingest.acked.values())))

    async def restarted():
        assert running.said(f"{target} restarted after")

    await eventually(restarted)
    assert running.pid(target) != killed
    assert max(outage.recovered.values()) < RECOVERY_BOUND, outage.recovered
    assert not outage.wrong, outage.wrong  # a dependency away is a 503 at once, never a 500 or a hang
    return customer


@pytest.mark.timeout(900)
async def test_each_process_killed_in_turn_is_restarted_and_nothing_acknowledged_is_lost_or_doubled(
    running: Running, http: httpx.AsyncClient, localstripe: LocalStripe
):
    now = utcnow()
    customers = [await crash(running, http, localstripe, target, now) for target in READS]
    # After every kill, still one invoice per period and one charge per invoice.
    for customer in customers:
        await customer.billed_once(http, localstripe, now)
