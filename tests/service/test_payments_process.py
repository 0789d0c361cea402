"""`python -m services.payments` as a real process: it serves, consumes
invoicing events, and exits 0 on SIGTERM after a graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bxb.invoicing.v1 import events_pb2, invoices_pb2
from bxb.payments.v1 import payments_pb2, payments_pb2_grpc
from deploy.embedded import Nats, free_port
from services.common import bus
from services.common.ids import new_id
from services.common.tenancy import metadata
from services.payments.receivables import INVOICE_FINALIZED
from tests.conftest import Infra, Stack, eventually, organization, unique

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory):
    """A NATS of its own, so this process's durable consumer does not share the stack's."""
    server = Nats(tmp_path_factory.mktemp("payments-nats"))
    server.start()
    yield server
    server.stop()


async def wait_serving(address: str, process: asyncio.subprocess.Process, log: Path, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            assert process.returncode is None, f"exited with {process.returncode}:\n{log.read_text()}"
            try:
                response = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert asyncio.get_running_loop().time() < deadline, log.read_text()
            await asyncio.sleep(0.1)


async def test_the_payments_process_serves_and_exits_cleanly_on_sigterm(
    infra: Infra, stack: Stack, own_nats: Nats, tmp_path
):
    database = unique("payments_proc")
    await infra.postgres.create_database(database)
    port = free_port()
    env = {
        **os.environ,
        "BXB_PAYMENTS_ADDRESS": f"127.0.0.1:{port}",
        "BXB_PAYMENTS_DATABASE_URL": infra.postgres.url(database).replace("postgresql://", "postgres://"),
        "BXB_NATS_URL": own_nats.url,
        "BXB_CATALOG_ADDRESS": stack.catalog,  # which organizations exist
    }
    log = tmp_path / "payments.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.payments", cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        await wait_serving(f"127.0.0.1:{port}", process, log)
        org = await organization(stack, unique("org_proc"))
        publisher = await bus.Bus.connect(own_nats.url, "test-invoicing")
        try:
            invoice = invoices_pb2.Invoice(id="inv_proc", customer_id="c", total_amount_cents=250, currency="USD")
            event = events_pb2.InvoiceFinalized(event_id=new_id("evt"), organization_id=org, invoice=invoice)
            await publisher.publish(INVOICE_FINALIZED, event.SerializeToString(), event.event_id, org)
        finally:
            await publisher.close()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = payments_pb2_grpc.PaymentServiceStub(channel)

            async def recorded():
                payments = (
                    await stub.ListPayments(payments_pb2.ListPaymentsRequest(), metadata=metadata(org))
                ).payments
                assert len(payments) == 1
                return payments[0]

            payment = await eventually(recorded)
        assert (payment.invoice_id, payment.amount_cents, payment.status) == (
            "inv_proc",
            250,
            payments_pb2.PAYMENT_STATUS_PENDING,
        )
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = log.read_text()
    assert f"payments listening on port {port}" in text
    assert "payments shutting down" in text
