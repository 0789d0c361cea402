"""One ClickHouse interface over two transports, running the same SQL.

- `Embedded`: the ClickHouse engine in-process through chdb (the default).
- `Remote`: a ClickHouse server or cluster over HTTP through
  clickhouse-connect, when BXB_CLICKHOUSE_URL is set.

Queries use server-side parameters (`{name:Type}`) and answer JSONCompact,
parsed with exact decimals; inserts send `INSERT ... FORMAT JSONEachRow` with
the rows in the same body, written by orjson (json.dumps cost an insert of
20,000 events more than ClickHouse did). Both transports are blocking, so
calls run in a worker thread; chdb is not thread-safe, so its calls are
serialized.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import orjson
from clickhouse_connect.driver.binding import format_bind_value

from services.metering.tables import CLUSTER_SETTINGS

# Table settings of what billing reads: a part is fsynced, data and directory,
# before its insert returns, so the queue's message is acknowledged (and leaves
# NATS) only once its events would survive a power loss.
DURABLE = "fsync_after_insert = 1, fsync_part_directory = 1"
# Seconds: reaching a ClickHouse server, and the longest one statement may run
# (then ClickHouse stops it: TIMEOUT_EXCEEDED), on either transport.
CONNECT_TIMEOUT = 5
QUERY_TIMEOUT = 60


class ClickHouse(Protocol):
    async def execute(self, sql: str, params: dict[str, Any] | None = None) -> None: ...

    async def query(
        self, sql: str, params: dict[str, Any] | None = None, *, write: bool = False
    ) -> list[list[Any]]: ...

    async def insert(self, table: str, rows: list[dict[str, Any]]) -> None: ...

    async def close(self) -> None: ...


def _rows(body: bytes) -> list[list[Any]]:
    rows: list[list[Any]] = json.loads(body, parse_float=Decimal)["data"]
    return rows


def insert_statement(table: str, rows: list[dict[str, Any]]) -> str:
    lines = b"\n".join(map(orjson.dumps, rows)).decode()
    return f"INSERT INTO {table} FORMAT JSONEachRow\n{lines}"


# What clickhouse-connect escapes in a bound string (binding.escape_str).
_SPECIAL = ("\\", "'", "`", "\t", "\n")
_ESCAPED = str.maketrans({c: "\\" + c for c in _SPECIAL})


def bound(value: Any) -> str:
    """A parameter's text, as clickhouse-connect's format_bind_value writes
    it. A list of strings (the thousands of keys a deduplication query
    looks up) is joined in one call instead of escaped character by
    character, which cost more than the query."""
    if isinstance(value, list) and value and all(type(v) is str for v in value):
        if any(c in "".join(value) for c in _SPECIAL):
            value = [v.translate(_ESCAPED) for v in value]
        return "['" + "', '".join(value) + "']"
    text: str = format_bind_value(value)
    return text


class Turns:
    """Whose turn it is at an engine that runs one statement at a time: the
    writes waiting (inserts, and the reads a write makes) go before the reads
    waiting, so however many usage queries queue up, ingestion never waits
    behind more than the one statement running."""

    def __init__(self) -> None:
        self._busy = False
        self._writes: deque[asyncio.Future[None]] = deque()
        self._reads: deque[asyncio.Future[None]] = deque()

    @contextlib.asynccontextmanager
    async def turn(self, write: bool) -> AsyncIterator[None]:
        if self._busy:
            given: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            (self._writes if write else self._reads).append(given)
            try:
                await given
            except asyncio.CancelledError:
                if given.done() and not given.cancelled():  # given the turn as it was cancelled: pass it on
                    self._pass()
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._pass()

    def _pass(self) -> None:
        for queue in (self._writes, self._reads):
            while queue:
                given = queue.popleft()
                if not given.done():  # a waiter cancelled meanwhile has gone
                    given.set_result(None)
                    return
        self._busy = False


class Embedded:
    """chdb: one engine per process, its data in `path`; one statement at a
    time, writes first (Turns)."""

    def __init__(self, path: Path):
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        self._session = session.Session(str(path))
        self._session.query(f"SET max_execution_time = {QUERY_TIMEOUT}")
        self._lock = threading.Lock()  # a cancelled call's thread still runs: the next one waits for it
        self._turns = Turns()

    def _run(self, sql: str, params: dict[str, Any] | None, fmt: str) -> bytes:
        texts = {k: bound(v) for k, v in (params or {}).items()}
        with self._lock:
            result = self._session.query(sql, fmt, params=texts) if texts else self._session.query(sql, fmt)
        data: bytes = result.bytes()
        return data

    async def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        async with self._turns.turn(write=True):
            await asyncio.to_thread(self._run, sql, params, "CSV")

    async def query(self, sql: str, params: dict[str, Any] | None = None, *, write: bool = False) -> list[list[Any]]:
        async with self._turns.turn(write):
            return _rows(await asyncio.to_thread(self._run, sql, params, "JSONCompact"))

    async def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        async with self._turns.turn(write=True):
            await asyncio.to_thread(self._run, insert_statement(table, rows), None, "CSV")

    async def close(self) -> None:
        # chdb keeps one engine per process; it is released at exit.
        return None


class Remote:
    """A ClickHouse server through clickhouse-connect (HTTP); `settings`
    apply to every request besides the timeout (a cluster's, tables.py)."""

    def __init__(self, url: str, settings: dict[str, Any] | None = None):
        import clickhouse_connect

        parts = urlparse(url)
        self._client = clickhouse_connect.get_client(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 8123,
            username=parts.username or "default",
            password=parts.password or "",
            secure=parts.scheme == "https",
            autogenerate_session_id=False,
            connect_timeout=CONNECT_TIMEOUT,
            send_receive_timeout=QUERY_TIMEOUT,
            settings={"max_execution_time": QUERY_TIMEOUT, **(settings or {})},
        )

    async def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        await asyncio.to_thread(self._client.command, sql, parameters=params)

    async def query(self, sql: str, params: dict[str, Any] | None = None, *, write: bool = False) -> list[list[Any]]:
        """`write` is only a priority hint: a server runs statements side by side."""
        body = await asyncio.to_thread(self._client.raw_query, sql, parameters=params, fmt="JSONCompact")
        return _rows(body)

    async def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(self._client.command, insert_statement(table, rows))

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


def connect(url: str, embedded_path: Path, cluster: str = "") -> ClickHouse:
    """A server at `url` (of `cluster`, when named), else chdb at `embedded_path`."""
    if url:
        return Remote(url, CLUSTER_SETTINGS if cluster else None)
    return Embedded(embedded_path)
