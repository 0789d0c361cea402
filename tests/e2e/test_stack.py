"""End-to-end: the whole stack as `make run` starts it (embedded PostgreSQL
and NATS, four service processes, uvicorn gateway), driven over real HTTP."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import nats
import pytest

from bxb.catalog.v1 import billable_metrics_pb2, billable_metrics_pb2_grpc, organizations_pb2, organizations_pb2_grpc
from deploy.embedded import NATS_USER, free_port
from deploy.stack import SERVICES, Stack
from services.common import channels, tenancy, trust
from services.common.timestamps import utcnow
from tests import grpc_reflection
from tests.conftest import eventually
from tests.service.test_walkthrough_bill_by_usage import METRIC, PLAN

KEY = "e2e_key_0123456789abcdefghij"
REPO = Path(__file__).resolve().parents[2]


def stack_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BXB_")}
    env.update(BXB_HOME=str(home), BXB_GATEWAY_PORT=str(free_port()), **extra)
    return env


async def walkthrough(http: httpx.AsyncClient, customer: str = "cus_9a4b2") -> dict:
    assert (await http.post("/v1/billable_metrics", json=METRIC)).status_code == 201
    assert (await http.post("/v1/plans", json=PLAN)).status_code == 201
    sub = await http.post(
        "/v1/subscriptions", json={"customer_id": customer, "plan_code": "payg", "start_date": "2026-09-01T00:00:00Z"}
    )
    assert sub.status_code == 201 and sub.json()["status"] == "active"
    return sub.json()


async def send_events(http: httpx.AsyncClient, customer: str = "cus_9a4b2") -> None:
    # 2,340 tokens in three events, each sent twice: retries count once.
    for txn, tokens in (("txn_8f3a1", 1000), ("txn_8f3a2", 1000), ("txn_8f3a3", 340)):
        for _ in range(2):
            body = {
                "transaction_id": txn,
                "customer_id": customer,
                "code": "api_requests",
                "timestamp": "2026-09-15T00:00:00Z",
                "properties": {"tokens": tokens},
            }
            # As curl sends it: -d without a Content-Type header means form-encoded.
            response = await http.post(
                "/v1/events", content=httpx.Request("POST", "/", json=body).content,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
            assert response.status_code == 200, response.text


async def september_invoice(http: httpx.AsyncClient, customer: str = "cus_9a4b2") -> dict:
    response = await http.get(f"/v1/customers/{customer}/invoices")
    assert response.status_code == 200, response.text
    invoices = [i for i in response.json()["invoices"] if i["period_start"] == "2026-09-01T00:00:00Z"]
    assert len(invoices) == 1, response.json()
    return invoices[0]


def read_until(process: subprocess.Popen, marker: str) -> list[str]:
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError("stack exited before it was ready:\n" + "".join(lines))


def start_make_run(env: dict[str, str]) -> tuple[subprocess.Popen, str, str]:
    process, url, key, _ = start_make_run_grpc(env)
    return process, url, key


def start_make_run_grpc(env: dict[str, str]) -> tuple[subprocess.Popen, str, str, dict[str, str]]:
    """Starts `make run`; its URL, API key and the gRPC address it printed for each service."""
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.stack"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = read_until(process, "Ctrl-C stops everything")
    url = next(line.split(" at ")[1].strip() for line in lines if "bxb is running at" in line)
    key = next(line.split(": ")[1].strip() for line in lines if line.startswith("API key:"))
    grpc_lines = lines[next(i for i, line in enumerate(lines) if line.startswith("gRPC services")) + 1 :]
    addresses = dict(line.split() for line in grpc_lines[: len(SERVICES)])
    return process, url, key, addresses


async def grpc_metric_codes(addresses: dict[str, str], key: str) -> list[str]:
    """The metrics listed over gRPC, straight from the catalog at the address
    `make run` printed, for the organization the API key belongs to."""
    async with channels.open_channel(addresses["catalog"]) as channel:  # mutual TLS: BXB_TLS_DIR
        auth = await organizations_pb2_grpc.OrganizationServiceStub(channel).AuthenticateApiKey(
            organizations_pb2.AuthenticateApiKeyRequest(secret=key)
        )
        metrics = await billable_metrics_pb2_grpc.BillableMetricServiceStub(channel).ListBillableMetrics(
            billable_metrics_pb2.ListBillableMetricsRequest(), metadata=tenancy.metadata(auth.organization_id)
        )
    return [m.code for m in metrics.billable_metrics]


async def its_own_only(home: Path, addresses: dict[str, str]) -> None:
    """The stack's home is its owner's only, and its services take mutual TLS:
    a plaintext caller, even with the service token, is refused."""
    # Others may traverse the home (0711) only when the stack runs as root: PostgreSQL's system user reaches its data.
    assert home.stat().st_mode & 0o777 in (0o700, 0o711)
    for path in (home / "logs", home / "tls", home / "nats"):
        assert path.stat().st_mode & 0o777 == 0o700, path
    for path in (home / "secret_key", home / "postgres_password", home / "tls" / "tls.key", home / "pids.json"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert all(log.stat().st_mode & 0o777 == 0o600 for log in (home / "logs").iterdir())
    async with grpc.aio.insecure_channel(addresses["catalog"]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await organizations_pb2_grpc.OrganizationServiceStub(channel).CreateOrganization(
                organizations_pb2.CreateOrganizationRequest(name="Intruder"),
                metadata=trust.service_metadata(),
                timeout=5,
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # NATS takes mutual TLS too: with the right password, trusting the CA but presenting no certificate, no connection.
    conf = (home / "nats" / "nats.conf").read_text()
    port = re.search(r"^port: (\d+)$", conf, re.MULTILINE)
    assert port is not None and "tls {" in conf
    password = (home / "nats_password").read_text().strip()
    trusting = ssl.create_default_context(cafile=str(home / "tls" / "ca.crt"))
    with pytest.raises(OSError):  # the server hangs up on the handshake
        await nats.connect(
            f"tls://{NATS_USER}:{password}@127.0.0.1:{port[1]}", tls=trusting, allow_reconnect=False, connect_timeout=2
        )


def stop_make_run(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0


@pytest.mark.timeout(300)
async def test_make_run_bills_the_walkthrough_and_keeps_everything_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The billing run bills a backdated subscription 5 s after its creation: its events are in by then.
    env = stack_env(
        tmp_path / "home", BXB_API_KEY=KEY, BXB_BILLING_SETTLE_SECONDS="5", BXB_BILLING_INTERVAL_SECONDS="1"
    )
    process, url, key, addresses = start_make_run_grpc(env)
    try:
        assert key == KEY  # BXB_API_KEY makes that exact key valid
        assert list(addresses) == list(SERVICES)
        await its_own_only(tmp_path / "home", addresses)
        monkeypatch.setenv("BXB_TLS_DIR", str(tmp_path / "home" / "tls"))  # this test calls as the stack does
        for name, address in addresses.items():  # each printed address is that service, with reflection v1
            assert set(grpc_reflection.package_services(name)) <= set(await grpc_reflection.list_services(address)), (
                name
            )
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            assert (await http.get("/v1/billable_metrics", headers={"Authorization": "Bearer nope"})).status_code == 401
            sub = await walkthrough(http)
            await send_events(http)
            # Until the billing run issues it, September shows as a draft priced as it stands.
            pending = await eventually(lambda: september_invoice(http))
            assert (pending["status"], pending["total_amount_cents"]) == ("draft", 234)

            async def issued():
                invoice = await september_invoice(http)
                assert invoice["status"] == "finalized", invoice
                return invoice

            invoice = await eventually(issued, timeout=30)
            assert (invoice["currency"], invoice["total_amount_cents"]) == ("USD", 234)
            # Metering asks the catalog about what events name, from its own process and loop.
            typo = {"transaction_id": "txn_typo", "customer_id": "cus_9a4b2", "code": "api_requestz"}
            backfilled = await http.post("/v1/events/backfill", json={"events": [typo]})
            assert backfilled.json()["results"][0]["result"] == "created"
            rejected = (await http.get("/v1/events", params={"status": "rejected"})).json()["events"]
            assert [(e["transaction_id"], e["reason"]) for e in rejected] == [("txn_typo", "UNKNOWN_METRIC")]
        assert await grpc_metric_codes(addresses, KEY) == ["api_requests"]
    finally:
        stop_make_run(process)

    # Second run on the same BXB_HOME, without BXB_API_KEY: the old key still
    # works and nothing was lost.
    env.pop("BXB_API_KEY")
    process, url, new_key = start_make_run(env)
    try:
        assert new_key != KEY and (tmp_path / "home" / "api_key").read_text().strip() == new_key
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            assert [m["code"] for m in (await http.get("/v1/billable_metrics")).json()["billable_metrics"]] == [
                "api_requests"
            ]
            assert (await http.get("/v1/plans/payg")).json()["charges"][0]["properties"] == {"amount": "0.001"}
            assert (await http.get(f"/v1/subscriptions/{sub['id']}")).json()["customer_id"] == "cus_9a4b2"
            assert (await http.get("/v1/events/txn_8f3a3")).json()["properties"] == {"tokens": "340"}
            assert await september_invoice(http) == invoice
            await send_events(http)  # replayed a restart later: still counted once
            usage = (await http.get("/v1/customers/cus_9a4b2/current_usage")).json()
            assert usage["subscriptions"][0]["period_start"] == f"{utcnow():%Y-%m}-01T00:00:00Z"  # the open period
            assert await september_invoice(http) == invoice
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {new_key}"}) as http:
            assert (await http.get("/v1/billable_metrics")).status_code == 200
    finally:
        stop_make_run(process)


@pytest.mark.timeout(300)
async def test_invoicing_catches_up_on_subscriptions_created_while_it_was_down(tmp_path: Path):
    stack = Stack(tmp_path / "home", stack_env(tmp_path / "home", BXB_API_KEY=KEY))
    try:
        url, _ = await stack.start()
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            await stack.stop_service("invoicing")
            await walkthrough(http)  # the subscription is announced while invoicing is down
            await send_events(http)
            down = await http.get("/v1/customers/cus_9a4b2/invoices")
            assert down.status_code == 503 and down.json()["error"]["code"] == "UNAVAILABLE"
            await stack.start_service("invoicing")
            invoice = await eventually(lambda: september_invoice(http), timeout=30)
            assert invoice["total_amount_cents"] == 234
            assert stack.supervisor.restarts == {}  # stopped on purpose: not restarted
    finally:
        await stack.stop()
