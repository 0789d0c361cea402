"""Replicas starting together migrate one database at once: the advisory
lock makes the second wait until the first's migrations are committed, so it
finds them done instead of running them again into "already exists"."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from deploy.embedded import Postgres
from services.common import db
from services.invoicing.server import MIGRATIONS
from tests.conftest import eventually

REPO = Path(__file__).resolve().parents[2]
PROCESSES = 4
MIGRATE = "import asyncio, sys; from services.common import db; asyncio.run(db.migrate(sys.argv[1], sys.argv[2]))"


async def migrating(url: str) -> tuple[int, bytes]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", MIGRATE, url, str(MIGRATIONS), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    return await process.wait(), output


@pytest.fixture
async def durable(tmp_path: Path) -> AsyncIterator[Postgres]:
    """A PostgreSQL that syncs its commits, as `make run`'s does (the
    session's PostgreSQL does not, and commit_delay needs it)."""
    postgres = Postgres(tmp_path / "postgres", durable=True)
    await asyncio.to_thread(postgres.start)
    yield postgres
    await asyncio.to_thread(postgres.stop)


async def test_processes_migrating_one_database_at_once_all_succeed(durable: Postgres):
    await durable.create_database("migrated")
    url = durable.url("migrated")
    holder = await asyncpg.connect(url)
    try:
        # Each commit waits 0.1 s before it is flushed: long enough for a
        # process let in before the migrations are committed to see them missing.
        await holder.execute("ALTER DATABASE migrated SET commit_delay = 100000")
        await holder.execute("ALTER DATABASE migrated SET commit_siblings = 0")
        # Every process waits for the lock, then they go one after the other.
        await holder.execute(f"SELECT pg_advisory_lock({db.MIGRATION_LOCK})")
        running = asyncio.gather(*(migrating(url) for _ in range(PROCESSES)))

        async def all_waiting():
            waiting = await holder.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            assert waiting == PROCESSES

        await eventually(all_waiting, timeout=60)
        await holder.execute(f"SELECT pg_advisory_unlock({db.MIGRATION_LOCK})")
        results = await asyncio.wait_for(running, 120)
    finally:
        await holder.close()
    for code, output in results:
        assert code == 0, output.decode()[-2000:]
