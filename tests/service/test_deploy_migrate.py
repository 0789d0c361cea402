"""`python -m services.<svc> migrate` as the image's migration Jobs run it:
each service's schema is applied by a process that exits 0 (PostgreSQL's
Alembic head for catalog, invoicing and payments; ClickHouse's tables for
metering), needing neither NATS nor its peers; and a replica started with
BXB_MIGRATE_ON_START=0 leaves the schema to that Job."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from deploy.embedded import Nats, free_port
from services.metering.clickhouse import Remote
from tests.conftest import Infra, unique
from tests.service.test_catalog_process import wait_serving

ROOT = Path(__file__).resolve().parents[2]
# Nothing listens here: a migration that touched NATS would fail.
NO_NATS = "nats://127.0.0.1:1"


async def command(service: str, env: dict[str, str], log: Path, *args: str) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{service}",
            *args,
            cwd=ROOT,
            env={**os.environ, "BXB_NATS_URL": NO_NATS, **env},
            stdout=out,
            stderr=out,
        )


async def finished(process: asyncio.subprocess.Process, log: Path) -> int:
    code = await asyncio.wait_for(process.wait(), 180)  # generous: the machine may be busy
    assert code is not None, log.read_text()
    return code


def head(service: str) -> str:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "services" / service / "migrations"))
    revision = ScriptDirectory.from_config(config).get_current_head()
    assert revision is not None
    return revision


async def version(url: str) -> str | None:
    """The database's Alembic revision, None before any migration ran."""
    connection = await asyncpg.connect(url)
    try:
        if await connection.fetchval("SELECT to_regclass('public.alembic_version')") is None:
            return None
        revision: str = await connection.fetchval("SELECT version_num FROM alembic_version")
        return revision
    finally:
        await connection.close()


async def test_each_migrate_command_applies_its_schema_and_exits_0(infra: Infra, clickhouse_url: str, tmp_path):
    urls = {
        service: await infra.database(unique(f"migrate_{service}")) for service in ("catalog", "invoicing", "payments")
    }
    clickhouse_db = unique("migrate_metering")
    envs = {service: {f"BXB_{service.upper()}_DATABASE_URL": url} for service, url in urls.items()}
    envs["metering"] = {"BXB_CLICKHOUSE_URL": clickhouse_url, "BXB_CLICKHOUSE_DATABASE": clickhouse_db}
    logs = {service: tmp_path / f"{service}.log" for service in envs}
    processes = {service: await command(service, env, logs[service], "migrate") for service, env in envs.items()}
    for service, process in processes.items():
        assert await finished(process, logs[service]) == 0, logs[service].read_text()
    for service, url in urls.items():
        assert await version(url) == head(service)
    ch = Remote(clickhouse_url)
    try:
        tables = {row[0] for row in await ch.query(f"SHOW TABLES FROM {clickhouse_db}")}
    finally:
        await ch.close()
    assert {"events", "event_copies", "rejected_events"} <= tables
    # A second run (the next release's Job on an up-to-date schema) changes nothing and succeeds.
    again = await command("catalog", envs["catalog"], tmp_path / "again.log", "migrate")
    assert await finished(again, tmp_path / "again.log") == 0
    assert await version(urls["catalog"]) == head("catalog")


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory):
    server = Nats(tmp_path_factory.mktemp("migrate-nats"))
    server.start()
    yield server
    server.stop()


async def test_a_replica_with_migrate_on_start_0_waits_for_the_migration_job(infra: Infra, own_nats: Nats, tmp_path):
    url = await infra.database(unique("no_migrate"))
    port = free_port()
    env = {
        "BXB_CATALOG_DATABASE_URL": url,
        "BXB_CATALOG_ADDRESS": f"127.0.0.1:{port}",
        "BXB_NATS_URL": own_nats.url,
        "BXB_MIGRATE_ON_START": "0",
    }
    # Before the Job: the replica does not migrate, so it cannot start (and is restarted until the Job ran).
    early = await command("catalog", env, tmp_path / "early.log")
    assert await finished(early, tmp_path / "early.log") != 0
    assert 'relation "organizations" does not exist' in (tmp_path / "early.log").read_text()
    assert await version(url) is None
    job = await command("catalog", env, tmp_path / "job.log", "migrate")
    assert await finished(job, tmp_path / "job.log") == 0
    # A replica as the manifests run it: its health also on a plaintext port of its own, for the kubelet's probes.
    health = free_port()
    replica = await command(
        "catalog", {**env, "BXB_CATALOG_HEALTH_LISTEN": f"127.0.0.1:{health}"}, tmp_path / "replica.log"
    )
    try:
        await wait_serving(f"127.0.0.1:{health}", replica, tmp_path / "replica.log", timeout=120)
        await wait_serving(f"127.0.0.1:{port}", replica, tmp_path / "replica.log", timeout=120)
    finally:
        replica.terminate()
        assert await finished(replica, tmp_path / "replica.log") == 0
    assert await version(url) == head("catalog")
