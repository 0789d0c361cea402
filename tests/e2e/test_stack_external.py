"""End-to-end: the stack on external PostgreSQL and NATS (no embedded server
starts), how it stops children that hang, and `make run` restarting a
service that dies while the others run on."""

from __future__ import annotations

import json
import os
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
from tests.e2e.test_stack import KEY, read_until, stack_env, start_make_run
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
        assert set(stack.supervisor.children) == {*SERVICES, "gateway"}

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
            await stack.stop_service("ledger")
        processes = {name: child.process for name, child in stack.supervisor.children.items()}
        assert set(processes) == {*SERVICES, "gateway"}
        assert json.loads((home / "pids.json").read_text())["children"] == stack.supervisor.pids()
        processes["payments"].send_signal(signal.SIGSTOP)  # hung: SIGTERM stays pending
        started = time.monotonic()
        await stack.stop(2)
        assert time.monotonic() - started >= 2  # waited for payments, then killed it
        assert processes["payments"].returncode == -signal.SIGKILL
        assert all(process.returncode is not None for process in processes.values())
        assert stack.supervisor.children == {} and not (home / "pids.json").exists()
        # The external servers are not the stack's to stop.
        assert infra.postgres.process.poll() is None
    finally:
        await stack.stop()


async def test_only_the_databases_without_a_url_get_an_embedded_postgres(external: dict[str, str], tmp_path: Path):
    port = free_port()
    env = {"BXB_CATALOG_DATABASE_URL": external["BXB_CATALOG_DATABASE_URL"], "BXB_POSTGRES_PORT": str(port)}
    stack = Stack(tmp_path / "home", {**env, "BXB_NATS_URL": external["BXB_NATS_URL"]})
    try:
        await stack.start_servers()
        assert stack.nats is None and stack.postgres is not None and stack.postgres.port == port
        assert stack.env["BXB_CATALOG_DATABASE_URL"] == external["BXB_CATALOG_DATABASE_URL"]
        password = (tmp_path / "home" / "postgres_password").read_text().strip()  # kept for the next start
        assert (
            stack.env["BXB_INVOICING_DATABASE_URL"]
            == f"postgresql://postgres:{password}@127.0.0.1:{port}/bxb_invoicing"
        )
        assert (
            stack.env["BXB_PAYMENTS_DATABASE_URL"] == f"postgresql://postgres:{password}@127.0.0.1:{port}/bxb_payments"
        )
        conn = await asyncpg.connect(stack.postgres.url())
        try:
            databases = {row["datname"] for row in await conn.fetch("SELECT datname FROM pg_database")}
        finally:
            await conn.close()
        assert {"bxb_invoicing", "bxb_payments"} <= databases and "bxb_catalog" not in databases
        server = stack.postgres.process
    finally:
        await stack.stop()
    assert server.returncode == 0  # stopped cleanly with the stack


@pytest.mark.timeout(180)
async def test_make_run_restarts_a_killed_service_and_leaves_the_others_running(
    external: dict[str, str], tmp_path: Path
):
    home = tmp_path / "home"
    process, url, _ = start_make_run(stack_env(home, BXB_API_KEY=KEY, **external))
    try:
        before = json.loads((home / "pids.json").read_text())
        assert before["stack"] == process.pid and set(before["children"]) == {*SERVICES, "gateway"}
        assert {child.pid for child in psutil.Process(process.pid).children()} == set(before["children"].values())
        assert embedded_children(process.pid) == set()
        os.kill(before["children"]["invoicing"], signal.SIGKILL)
        lines = read_until(process, "invoicing restarted after")
        log = home / "logs" / "invoicing.log"
        assert any(f"invoicing exited with code -9 (see {log}); restarting in 0.5 s" in line for line in lines)
        after = json.loads((home / "pids.json").read_text())
        assert after["children"].pop("invoicing") != before["children"].pop("invoicing")
        assert after["children"] == before["children"]  # the others ran on
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            assert (await http.get("/v1/customers/cus_ext/invoices")).status_code == 200  # invoicing answers
        children = psutil.Process(process.pid).children()
    finally:
        process.send_signal(signal.SIGTERM)  # as a service manager stops it
        assert process.wait(60) == 0
    assert not any(child.is_running() for child in children)
    assert not (home / "pids.json").exists()
