"""Replicas starting together migrate one database at once: the advisory
lock makes the second wait until the first's migrations are committed, so it
finds them done instead of running them again into "already exists"."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg

from services.common import db
from services.invoicing.server import MIGRATIONS
from tests.conftest import Infra, eventually, unique

REPO = Path(__file__).resolve().parents[2]
MIGRATE = "import asyncio, sys; from services.common import db; asyncio.run(db.migrate(sys.argv[1], sys.argv[2]))"


async def migrating(url: str) -> tuple[int, bytes]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", MIGRATE, url, str(MIGRATIONS), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    return await process.wait(), output


async def test_processes_migrating_one_database_at_once_all_succeed(infra: Infra):
    url = await infra.database(unique("concurrent_migrations"))
    holder = await asyncpg.connect(url)
    try:
        # Every process waits for the lock, then they go one after the other.
        await holder.execute(f"SELECT pg_advisory_lock({db.MIGRATION_LOCK})")
        running = asyncio.gather(*(migrating(url) for _ in range(3)))

        async def all_waiting():
            waiting = await holder.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            assert waiting == 3

        await eventually(all_waiting, timeout=60)
        await holder.execute(f"SELECT pg_advisory_unlock({db.MIGRATION_LOCK})")
        results = await asyncio.wait_for(running, 120)
    finally:
        await holder.close()
    for code, output in results:
        assert code == 0, output.decode()[-2000:]
