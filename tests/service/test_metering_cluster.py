"""Metering on a ClickHouse cluster, as far as one engine without Keeper or a
cluster definition can show it: ClickHouse parses every statement generated
for a cluster; a cluster's DDL is refused where the cluster is not defined;
a cluster's tables are left alone once they exist; the canary keys hash as
the events' sharding key does; the cluster's request settings are ones a
server knows. What needs a real cluster is in deploy/clickhouse-cluster.md."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.metering import clickhouse as ch_module
from services.metering import rollups
from services.metering import store as store_module
from services.metering.clickhouse import ClickHouse, Remote
from services.metering.store import CANARY_HASHES, CLUSTER_TABLES, CLUSTER_VIEWS, Event, EventStore, Unstorable
from services.metering.tables import BY_KEY, Layout
from tests import clickhouse_http
from tests.conftest import unique

NOW = datetime(2026, 4, 2, tzinfo=UTC)
CLUSTER = Layout("bxb", "bxb_cluster")


def event(txn: str, customer: str = "cus_1") -> Event:
    return Event(txn, customer, "api", datetime(2026, 3, 1, tzinfo=UTC), {"v": "1"})


async def test_clickhouse_parses_every_statement_generated_for_a_cluster(clickhouse: ClickHouse):
    statements = [
        *store_module.schema(CLUSTER),
        *store_module.copies_schema(CLUSTER),
        *rollups.schema(CLUSTER),
        *rollups.redo(CLUSTER),
        CLUSTER.delete("events", "organization_id = {org:String}"),
    ]
    for statement in statements:
        [[formatted]] = await clickhouse.query("SELECT formatQuery({q:String})", {"q": statement})
        assert ("ON CLUSTER bxb_cluster" in formatted) == (not statement.startswith("INSERT"))
        if "_local ON CLUSTER" in statement and statement.startswith("CREATE TABLE"):
            assert "ENGINE = Replicated" in formatted and "'{replica}'" in formatted


async def test_a_cluster_s_ddl_is_refused_where_that_cluster_is_not_defined(clickhouse: ClickHouse):
    db = unique("bxb_nocluster")
    with pytest.raises(Exception, match="CLUSTER_DOESNT_EXIST"):
        await EventStore(clickhouse, db, "bxb_cluster").create_schema()
    assert await clickhouse.query("EXISTS DATABASE " + db) == [[0]]


async def clustered_store(clickhouse: ClickHouse) -> EventStore:
    """A store of cluster "bxb_cluster" over tables that exist: today's
    tables (one server's), refusing customer "poison", and stand-ins of the
    local tables, so that create_schema finds everything and runs no DDL."""
    db = unique("bxb_clustered")
    await EventStore(clickhouse, db).create_schema()
    await clickhouse.execute(f"ALTER TABLE {db}.events ADD CONSTRAINT no_poison CHECK customer_id != 'poison'")
    for table in CLUSTER_TABLES:
        await clickhouse.execute(f"CREATE TABLE {db}.{table}_local (x UInt8) ENGINE = MergeTree ORDER BY x")
    store = EventStore(clickhouse, db, "bxb_cluster")
    await store.create_schema()  # everything is there: no ON CLUSTER statement (which would be refused)
    return store


@pytest.fixture
async def clustered(clickhouse: ClickHouse) -> EventStore:
    return await clustered_store(clickhouse)


# Two shards, of weights 1 and 2, at ports where nothing listens: metering only reads their definition.
CLUSTER_CONFIG = """<clickhouse><remote_servers><bxb_cluster>
<shard><weight>1</weight><replica><host>127.0.0.1</host><port>1</port></replica></shard>
<shard><weight>2</weight><replica><host>127.0.0.1</host><port>2</port></replica></shard>
</bxb_cluster></remote_servers></clickhouse>"""


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """ClickHouse's HTTP interface over a chdb that defines "bxb_cluster"."""
    root = tmp_path_factory.mktemp("clickhouse_cluster")
    (root / "config.xml").write_text(CLUSTER_CONFIG)
    with clickhouse_http.serve(root / "data", root / "config.xml") as url:
        yield url


async def test_a_cluster_s_tables_once_made_are_left_alone_and_used(clustered: EventStore, org: str):
    [[count]] = await clustered.ch.query(
        "SELECT count() FROM system.tables WHERE database = {db:String}", {"db": clustered.db}
    )
    assert int(count) == 2 * len(CLUSTER_TABLES) + len(CLUSTER_VIEWS)
    assert await clustered.ingest(org, [event("a"), event("a")], NOW) == [True, False]
    assert (await clustered.get(org, "a")) is not None


async def test_the_canary_needs_the_cluster_s_shards(clustered: EventStore, org: str):
    """An event ClickHouse refuses sends a canary to every shard first; with
    no such cluster on the server there is no shard to send to, and the
    write fails for everyone (retried), rather than calling the event bad."""
    with pytest.raises(RuntimeError, match="is the cluster defined"):
        await clustered.ingest(org, [event("bad", customer="poison")], NOW)


async def test_a_refused_event_first_sends_a_canary_to_each_shard(cluster_url: str, tmp_path: Path, org: str):
    """With every shard taking its canary, the refusal lies in the event:
    it alone is left out. Where each canary lands is ClickHouse's hash of the
    stored columns, the Distributed table's slot (hash % 3: slot 0 is the
    first shard's, slots 1 and 2 the second's)."""
    ch = ch_module.connect(cluster_url, tmp_path, "bxb_cluster")
    try:
        store = await clustered_store(ch)
        good, bad = await store.ingest(org, [event("good"), event("bad", customer="poison")], NOW)
        assert good is True and isinstance(bad, Unstorable) and "no_poison" in bad.reason
        slots = await ch.query(
            f"SELECT DISTINCT transaction_id, toUInt8({BY_KEY} % 3) AS slot FROM {store.db}.events "
            "WHERE organization_id = '' ORDER BY slot"
        )
        assert [slot for _, slot in slots][:1] == [0] and [slot for _, slot in slots][1:] in ([1], [2])
    finally:
        await ch.close()


async def test_canary_keys_hash_as_the_events_sharding_key(clickhouse: ClickHouse, store: EventStore):
    hashed = dict(await clickhouse.query(CANARY_HASHES, {"org": store_module.CANARY_ORGANIZATION}))
    assert len(hashed) == 4096
    rows = [
        {"organization_id": "", "customer_id": "", "code": "", "transaction_id": key, "timestamp": "1970-01-01"}
        | {"properties": {}, "subscription_id": "", "ingest_time": "1970-01-01", "value": None}
        for key in ("canary-0", "canary-7", "canary-4095")
    ]
    await clickhouse.insert(f"{store.db}.events", rows)  # canary rows: no tenant reads organization ""
    stored = await clickhouse.query(
        f"SELECT DISTINCT transaction_id, toString({BY_KEY}) FROM {store.db}.events "
        "WHERE organization_id = '' AND transaction_id IN ('canary-0', 'canary-7', 'canary-4095')"
    )
    assert {key: hashed[key] for key, _ in stored} == dict(stored) and len(stored) == 3


async def test_a_cluster_s_request_settings_are_known_to_the_server(clickhouse_url: str, tmp_path: Path):
    plain = ch_module.connect(clickhouse_url, tmp_path)
    clustered = ch_module.connect(clickhouse_url, tmp_path, "bxb_cluster")
    try:
        assert isinstance(clustered, Remote) and isinstance(plain, Remote)
        asked = (
            "SELECT getSetting('load_balancing'), toString(getSetting('insert_distributed_sync')), "
            "toString(getSetting('insert_deduplicate'))"
        )
        assert await clustered.query(asked) == [["in_order", "true", "false"]]
        assert await plain.query(asked) == [["random", "false", "true"]]
    finally:
        await clustered.close()
        await plain.close()
