"""Fixtures shared by the service tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.metering.clickhouse import ClickHouse, Embedded, Remote
from tests.conftest import Infra


@pytest.fixture(scope="session", params=["embedded", "remote"])
async def clickhouse(request, infra: Infra) -> AsyncIterator[ClickHouse]:
    """Both ClickHouse transports, for storage tests that must pass on each: Embedded
    opens a second session on the test session's chdb; Remote talks to the chdb
    HTTP server process."""
    ch = Embedded(infra.chdb_path) if request.param == "embedded" else Remote(request.getfixturevalue("clickhouse_url"))
    yield ch
    await ch.close()
