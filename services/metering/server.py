"""The metering service process: event ingestion and usage aggregation over
ClickHouse (chdb in-process by default, a server with BXB_CLICKHOUSE_URL)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from bxb.metering.v1 import usage_events_pb2, usage_events_pb2_grpc, usage_pb2, usage_pb2_grpc
from services.common import config, grpc_server
from services.metering import clickhouse
from services.metering.events import EventServicer
from services.metering.store import EventStore
from services.metering.usage import UsageServicer


@dataclass
class Settings:
    address: str
    clickhouse_url: str
    chdb_path: Path
    database: str

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(config.env_str("BXB_HOME", ".bxb"))
        return cls(
            address=config.grpc_address("metering", config.DEFAULT_PORTS["metering"]),
            clickhouse_url=config.env_str("BXB_CLICKHOUSE_URL", ""),
            chdb_path=Path(config.env_str("BXB_CHDB_PATH", str(home / "clickhouse"))),
            database=config.env_str("BXB_CLICKHOUSE_DATABASE", "bxb"),
        )


def build(settings: Settings, ch: clickhouse.ClickHouse | None = None) -> grpc_server.Service:
    ch = ch or clickhouse.connect(settings.clickhouse_url, settings.chdb_path)
    store = EventStore(ch, settings.database)

    async def on_stop() -> None:
        await ch.close()

    return grpc_server.Service(
        name="metering",
        registrars=[
            grpc_server.registrar(usage_events_pb2, usage_events_pb2_grpc, "EventService", EventServicer(store)),
            grpc_server.registrar(usage_pb2, usage_pb2_grpc, "UsageService", UsageServicer(store)),
        ],
        on_start=store.create_schema,
        on_stop=on_stop,
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s metering %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    asyncio.run(grpc_server.run(build(settings), settings.address))
