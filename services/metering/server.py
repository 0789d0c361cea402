"""The metering service process: event ingestion and usage aggregation over
ClickHouse (chdb in-process by default, a server with BXB_CLICKHOUSE_URL)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bxb.metering.v1 import usage_events_pb2, usage_events_pb2_grpc, usage_pb2, usage_pb2_grpc
from services.common import bus, commands, config, grpc_server, logs, peers, tracing
from services.common.known_organizations import KnownOrganizations
from services.metering import clickhouse, tables
from services.metering.definitions import Definitions
from services.metering.events import EventServicer
from services.metering.intake import Intake
from services.metering.references import References
from services.metering.rejection_notices import RejectionNotices
from services.metering.rejections import Rejections
from services.metering.store import EventStore
from services.metering.usage import UsageServicer


@dataclass
class Settings:
    address: str
    clickhouse_url: str
    chdb_path: Path
    database: str
    nats_url: str
    # How long a usage query waits for the events queued before it.
    settle_timeout: float = 10.0
    # Where to check that events name a known metric and customer; empty: no check.
    catalog_address: str = ""
    # How long the queue's consumer waits for more events to join a small write.
    write_linger: float = 0.0
    # Seconds a call to the catalog may take: a slow catalog must hold neither the queue nor a query up for long.
    catalog_timeout: float = 5.0
    # The ClickHouse cluster of BXB_CLICKHOUSE_URL's server; empty: tables on that one server (tables.py).
    clickhouse_cluster: str = ""

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(config.env_str("BXB_HOME", ".bxb"))
        clickhouse_url = config.env_str("BXB_CLICKHOUSE_URL", "")
        return cls(
            address=config.listen_address("metering", config.DEFAULT_PORTS["metering"]),
            clickhouse_url=clickhouse_url,
            chdb_path=Path(config.env_str("BXB_CHDB_PATH", str(home / "clickhouse"))),
            database=config.env_str("BXB_CLICKHOUSE_DATABASE", "bxb"),
            nats_url=config.nats_url(),
            settle_timeout=config.env_float("BXB_USAGE_SETTLE_TIMEOUT_SECONDS", 10.0),
            catalog_address=config.grpc_address("catalog", config.DEFAULT_PORTS["catalog"]),
            write_linger=config.env_float("BXB_METERING_WRITE_LINGER_SECONDS", 0.05),
            clickhouse_cluster=tables.cluster_setting(config.env_str("BXB_CLICKHOUSE_CLUSTER", ""), clickhouse_url),
        )


def build(settings: Settings, ch: clickhouse.ClickHouse | None = None) -> grpc_server.Service:
    ch = ch or clickhouse.connect(settings.clickhouse_url, settings.chdb_path, settings.clickhouse_cluster)
    store = EventStore(ch, settings.database, settings.clickhouse_cluster)
    catalog = None
    if settings.catalog_address:
        catalog = peers.Catalog(settings.catalog_address, timeout=settings.catalog_timeout)
    queue = bus.Bus(settings.nats_url, "metering")
    notices = RejectionNotices(queue)
    intake = Intake(
        store,
        Rejections(ch, settings.database, notices),
        queue,
        References(catalog) if catalog is not None else None,
        settle_timeout=settings.settle_timeout,
        linger=settings.write_linger,
    )
    definitions = Definitions(catalog) if catalog is not None else None

    async def on_start() -> None:
        await queue.open()
        await queue.ensure_stream(bus.METERING)
        await intake.start()

    async def on_stop() -> None:
        await notices.settled()
        await queue.close()  # on_stop follows a successful on_start, which opened the bus
        if catalog is not None:
            await catalog.close()
        await ch.close()

    return grpc_server.Service(
        name="metering",
        registrars=[
            grpc_server.registrar(
                usage_events_pb2, usage_events_pb2_grpc, "EventService", EventServicer(store, intake)
            ),
            grpc_server.registrar(usage_pb2, usage_pb2_grpc, "UsageService", UsageServicer(store, intake, definitions)),
        ],
        migrate=store.create_schema,
        on_start=on_start,
        on_stop=on_stop,
        probes=[("ingestion", intake.backlog.measure)],
        organizations=KnownOrganizations(catalog.organization_exists) if catalog is not None else None,
    )


def main(argv: list[str] | None = None) -> None:
    logs.configure("metering")
    tracing.configure("metering")
    settings = Settings.from_env()
    commands.run("metering", lambda: build(settings), settings.address, argv)
