"""End-to-end: two invoicing processes on one database bill the same
subscriptions at once, one of them killed (SIGKILL) mid-run, and every
subscription period is invoiced exactly once, with gapless numbers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from sqlalchemy import select

from bxb.invoicing.v1 import billing_runs_pb2, billing_runs_pb2_grpc
from deploy.embedded import free_port
from deploy.readiness import wait_serving
from services.common import config, tenancy
from services.common.timestamps import utcnow
from services.invoicing.models import Invoice
from tests.conftest import Infra, Stack, Tenant, eventually
from tests.service.invoicing_helpers import InvoicingDb

REPO = Path(__file__).resolve().parents[2]
SUBSCRIPTIONS = 20
PLAN = {"code": "seat", "interval": "monthly", "amount_cents": 1000, "charges": []}


def spawn(address: str, stack: Stack, infra: Infra, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BXB_")}
    env.update(
        BXB_INVOICING_ADDRESS=address,
        BXB_INVOICING_DATABASE_URL=stack.invoicing_database,
        BXB_NATS_URL=infra.nats.url,
        BXB_METERING_ADDRESS=stack.metering,
        BXB_CATALOG_ADDRESS=stack.catalog,
        BXB_SECRET_KEY=config.secret_key().decode(),  # the stack's: the service token
        BXB_BILLING_INTERVAL_SECONDS="3600",  # after the run at start, the runs below are the test's own
        BXB_BILLING_SETTLE_SECONDS="0",
        BXB_BILLING_PAGE_SIZE="2",  # 2 subscriptions' periods a transaction, so B dies between pages
    )
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.invoicing"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def run_billing(address: str, org: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = billing_runs_pb2_grpc.BillingRunServiceStub(channel)
        reply = await stub.RunBilling(billing_runs_pb2.RunBillingRequest(), metadata=tenancy.metadata(org), timeout=60)
        return reply.invoices_created


async def test_two_invoicing_processes_bill_each_period_exactly_once(
    stack: Stack, infra: Infra, tenant: Tenant, tmp_path: Path
):
    h = tenant.http
    today = utcnow()
    ended = (today.year - 2026) * 12 + today.month - 1  # the monthly periods over since 2026-01-01
    assert (await h.post("/v1/plans", json=PLAN)).status_code == 201
    invoicing = InvoicingDb(stack)
    try:
        a_address, b_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        a = spawn(a_address, stack, infra, tmp_path / "a.log")
        b = spawn(b_address, stack, infra, tmp_path / "b.log")
        try:
            # Each bills at its start: the subscriptions come after, so only the test's runs bill them.
            await asyncio.gather(wait_serving(a_address), wait_serving(b_address))
            subscriptions = []
            for n in range(SUBSCRIPTIONS):
                body = {"customer_id": f"c{n}", "plan_code": "seat", "start_date": "2026-01-01T00:00:00Z"}
                created = await h.post("/v1/subscriptions", json=body)
                subscriptions.append(created.json()["id"])
            for subscription in subscriptions:
                await invoicing.projected(subscription)
            org = tenant.organization_id

            async def billed(at_least: int):
                async with invoicing.sessions() as session:
                    query = select(Invoice.subscription_id, Invoice.period_start, Invoice.number).where(
                        Invoice.organization_id == org
                    )
                    rows = (await session.execute(query)).all()
                assert len(rows) >= at_least
                return rows

            async def b_billed_a_page():
                assert "issued" in (tmp_path / "b.log").read_text()

            # B starts first (started together, B could trail A page after
            # page, blocked on the rows A holds, and bill nothing); once it
            # has billed a page, A races it, and B is killed mid-run: its
            # open transactions roll back.
            racing = [asyncio.gather(*(run_billing(b_address, org) for _ in range(3)), return_exceptions=True)]
            await eventually(b_billed_a_page, timeout=60, interval=0.01)
            racing.append(asyncio.gather(*(run_billing(a_address, org) for _ in range(3)), return_exceptions=True))
            await eventually(lambda: billed(SUBSCRIPTIONS * ended // 3), timeout=60)
            b.send_signal(signal.SIGKILL)
            await asyncio.gather(*racing)
            await run_billing(a_address, tenant.organization_id)  # whatever B left
            rows = await billed(SUBSCRIPTIONS * ended)
        finally:
            for process in (a, b):
                process.kill()
                process.wait(timeout=10)
    finally:
        await invoicing.close()
    periods = [(sub, start) for sub, start, _ in rows]
    assert len(periods) == len(set(periods)) == SUBSCRIPTIONS * ended  # each period exactly once
    # B billed some pages (2 subscriptions, every ended period of each) before it died.
    assert f"issued {2 * ended} invoices" in (tmp_path / "b.log").read_text()
    numbers = sorted(int(number.split("-")[1]) for _, _, number in rows)
    assert numbers == list(range(1, len(rows) + 1))  # gapless, though B died holding some
