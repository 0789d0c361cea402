"""Fixtures shared by the service tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.metering.clickhouse import ClickHouse, Embedded, Remote
from services.metering.store import EventStore
from tests.conftest import Infra, unique


@pytest.fixture(scope="session", params=["embedded", "remote"])
async def clickhouse(request, infra: Infra) -> AsyncIterator[ClickHouse]:
    """Both ClickHouse transports, for storage tests that must pass on each: Embedded
    opens a second session on the test session's chdb; Remote talks to the chdb
    HTTP server process."""
    ch = Embedded(infra.chdb_path) if request.param == "embedded" else Remote(request.getfixturevalue("clickhouse_url"))
    yield ch
    await ch.close()


@pytest.fixture(scope="session")
async def store(clickhouse: ClickHouse) -> EventStore:
    """An event store on each transport; tests keep apart by organization."""
    store = EventStore(clickhouse, "bxb_store")
    await store.create_schema()
    return store


@pytest.fixture
def org() -> str:
    return unique("org")
