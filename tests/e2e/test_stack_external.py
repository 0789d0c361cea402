"""End-to-end: the stack on external PostgreSQL and NATS (no embedded server
starts), how it stops children that died or hang, and `make run` exiting 1
when a service dies."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from deploy.embedded import Nats, free_port
from deploy.stack import DATABASES, SERVICES, Stack
from tests.conftest import Infra, eventually, unique
from tests.e2e.test_stack import KEY, stack_env, start_make_run
from tests.service.test_walkthrough_bill_by_usage import METRIC, PLAN

EMBEDDED = {"postgres", "nats-server"}


@pytest.fixture
async def external(infra: Infra, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """BXB_*_DATABASE_URL for fresh databases on the test PostgreSQL, and
    BXB_NATS_URL for a NATS of its own (the services' durable consumers must
    not share the session stack's)."""
    nats = Nats(tmp_path / "nats")
    nats.start()
    env = {f"BXB_{db.upper()}_DATABASE_URL": await infra.database(unique(f"ext_{db}")) for db in DATABASES}
    env["BXB_NATS_URL"] = nats.url
    yield env
    nats.stop()


def embedded_children(pid: int | None = None) -> set[int]:
    """PostgreSQL and NATS servers started by process `pid` (default: this one)."""
    return {child.pid for child in psutil.Process(pid).children() if child.name() in EMBEDDED}


@pytest.mark.timeout(180)
async def test_stack_on_external_servers_starts_no_embedded_ones_and_stops_dead_and_hung_children(
    infra: Infra, external: dict[str, str], tmp_path: Path
):
    home = tmp_path / "home"
    before = embedded_children()
    stack = Stack(home, stack_env(home, BXB_API_KEY=KEY, **external))
    try:
        url, _ = await stack.start()
        assert (stack.postgres, stack.nats) == (None, None)
        assert embedded_children() == before
        assert not (home / "postgres").exists() and not (home / "nats").exists()
        assert {name for name, _ in stack.children} == {*SERVICES, "gateway"}

        # The stack really runs on those servers: catalog writes to its
        # database, and invoicing hears of the subscription over that NATS.
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            assert (await http.post("/v1/billable_metrics", json=METRIC)).status_code == 201
            assert (await http.post("/v1/plans", json=PLAN)).status_code == 201
            sub = await http.post(
                "/v1/subscriptions", json={"customer_id": "cus_ext", "plan_code": "payg", "start_date": "2026-09-01T00:00:00Z"}
            )  # fmt: skip
            assert sub.status_code == 201, sub.text
        catalog = await asyncpg.connect(external["BXB_CATALOG_DATABASE_URL"])
        invoicing = await asyncpg.connect(external["BXB_INVOICING_DATABASE_URL"])
        try:
            assert await catalog.fetch("SELECT code FROM billable_metrics") == [("api_requests",)]

            async def projected():
                assert await invoicing.fetchval("SELECT id FROM subscriptions") == sub.json()["id"]

            await eventually(projected, timeout=30)
        finally:
            await catalog.close()
            await invoicing.close()

        with pytest.raises(KeyError):
            stack.stop_service("ledger")
        assert len(stack.children) == len(SERVICES) + 1

        processes = dict(stack.children)
        processes["metering"].kill()
        processes["metering"].wait(30)
        assert stack.exited() == "metering"
        processes["payments"].send_signal(signal.SIGSTOP)  # hung: SIGTERM stays pending
        started = time.monotonic()
        await asyncio.to_thread(stack.stop, 2)
        assert time.monotonic() - started >= 2  # waited for payments, then killed it
        assert processes["metering"].returncode == processes["payments"].returncode == -signal.SIGKILL
        assert all(process.returncode is not None for process in processes.values())
        assert stack.children == []
        # The external servers are not the stack's to stop.
        assert infra.postgres.process.poll() is None
    finally:
        await asyncio.to_thread(stack.stop)


async def test_only_the_databases_without_a_url_get_an_embedded_postgres(external: dict[str, str], tmp_path: Path):
    port = free_port()
    env = {"BXB_CATALOG_DATABASE_URL": external["BXB_CATALOG_DATABASE_URL"], "BXB_POSTGRES_PORT": str(port)}
    stack = Stack(tmp_path / "home", {**env, "BXB_NATS_URL": external["BXB_NATS_URL"]})
    try:
        await stack.start_servers()
        assert stack.nats is None and stack.postgres is not None and stack.postgres.port == port
        assert stack.env["BXB_CATALOG_DATABASE_URL"] == external["BXB_CATALOG_DATABASE_URL"]
        assert stack.env["BXB_INVOICING_DATABASE_URL"] == f"postgresql://postgres@127.0.0.1:{port}/bxb_invoicing"
        assert stack.env["BXB_PAYMENTS_DATABASE_URL"] == f"postgresql://postgres@127.0.0.1:{port}/bxb_payments"
        conn = await asyncpg.connect(stack.postgres.url())
        try:
            databases = {row["datname"] for row in await conn.fetch("SELECT datname FROM pg_database")}
        finally:
            await conn.close()
        assert {"bxb_invoicing", "bxb_payments"} <= databases and "bxb_catalog" not in databases
        server = stack.postgres.process
    finally:
        await asyncio.to_thread(stack.stop)
    assert server.returncode == 0 and stack.postgres.process is None  # stopped cleanly with the stack


@pytest.mark.timeout(180)
async def test_make_run_exits_1_naming_the_log_when_a_service_dies(external: dict[str, str], tmp_path: Path):
    home = tmp_path / "home"
    process, _, _ = start_make_run(stack_env(home, BXB_API_KEY=KEY, **external))
    try:
        children = psutil.Process(process.pid).children()
        assert embedded_children(process.pid) == set()
        assert len(children) == len(SERVICES) + 1
        [invoicing] = [child for child in children if "services.invoicing" in child.cmdline()]
        invoicing.kill()
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1
    log = home / "logs" / "invoicing.log"
    assert f"invoicing exited; see {log}; stopping" in output
    assert log.exists()
    assert not any(child.is_running() for child in children)  # the others were stopped
