"""The DDL and mutations metering generates for one server and for a
cluster (BXB_CLICKHOUSE_CLUSTER): the statements' text. That ClickHouse
parses them, and the single-server path running, are in
tests/service/test_metering_cluster.py; what needs a real cluster is in
deploy/clickhouse-cluster.md."""

from __future__ import annotations

import pytest

from services.metering import rollups, store
from services.metering.tables import BY_CUSTOMER, BY_KEY, Layout, canaries, cluster_setting

ONE = Layout("bxb")
CLUSTER = Layout("bxb", "prod-1")
REPLICATED = "('/clickhouse/tables/{shard}/{database}/%s', '{replica}')"


def cluster_schema(layout: Layout) -> list[str]:
    return [*store.schema(layout), *store.copies_schema(layout), *rollups.schema(layout)]


def test_one_server_keeps_todays_tables_and_upgrades():
    statements = cluster_schema(ONE)
    assert not [s for s in statements if "ON CLUSTER" in s or "Replicated" in s or "Distributed" in s]
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS bxb"
    assert statements[1].startswith("CREATE TABLE IF NOT EXISTS bxb.events (")
    assert "ENGINE = ReplacingMergeTree\nPARTITION BY toYYYYMM(timestamp)" in statements[1]
    assert "ALTER TABLE bxb.events ADD COLUMN IF NOT EXISTS value Nullable(String)" in statements
    assert "DROP TABLE IF EXISTS bxb.usage_daily" in statements
    assert (
        "CREATE MATERIALIZED VIEW IF NOT EXISTS bxb.event_copies_mv TO bxb.event_copies AS "
        f"SELECT {store.COPY_COLUMNS} FROM bxb.events"
    ) in statements
    assert ONE.delete("events", "x = 1") == "DELETE FROM bxb.events WHERE x = 1"
    assert ONE.local("events") == "bxb.events"


def test_a_cluster_table_is_replicated_locally_with_a_distributed_table_over_it():
    local, distributed = CLUSTER.table("t", "a String", "ReplacingMergeTree", "ORDER BY a", "cityHash64(a)")
    assert local == (
        "CREATE TABLE IF NOT EXISTS bxb.t_local ON CLUSTER 'prod-1' (a String) "
        f"ENGINE = ReplicatedReplacingMergeTree{REPLICATED % 't_local'}\nORDER BY a"
    )
    assert distributed == (
        "CREATE TABLE IF NOT EXISTS bxb.t ON CLUSTER 'prod-1' AS bxb.t_local "
        "ENGINE = Distributed('prod-1', 'bxb', 't_local', cityHash64(a))"
    )
    assert CLUSTER.database() == "CREATE DATABASE IF NOT EXISTS bxb ON CLUSTER 'prod-1'"


def test_every_cluster_statement_runs_on_every_host_and_nothing_upgrades():
    statements = cluster_schema(CLUSTER) + rollups.redo(CLUSTER)
    ddl = [s for s in statements if not s.startswith("INSERT")]
    assert all(" ON CLUSTER 'prod-1'" in s for s in ddl)
    assert not [s for s in statements if s.startswith(("ALTER", "DROP"))]  # a cluster's tables are new


def engine_of(statements: list[str], table: str) -> str:
    [created] = [s for s in statements if s.startswith(f"CREATE TABLE IF NOT EXISTS bxb.{table} ")]
    return created.split("ENGINE = ")[1].split("\n")[0]


def test_engines_keep_their_family_and_rows_that_can_duplicate_share_a_shard():
    statements = cluster_schema(CLUSTER)  # rejected_events too
    for table, family, sharding in [
        ("events", "ReplacingMergeTree", BY_KEY),
        ("event_copies", "ReplacingMergeTree", BY_KEY),
        (rollups.TABLE, "AggregatingMergeTree", BY_CUSTOMER),
        ("rejected_events", "MergeTree", BY_CUSTOMER),
    ]:
        assert engine_of(statements, f"{table}_local") == f"Replicated{family}{REPLICATED % f'{table}_local'}"
        assert engine_of(statements, table) == f"Distributed('prod-1', 'bxb', '{table}_local', {sharding})"
    # the ReplacingMergeTree keys hold both sharding columns: equal rows are on one shard
    assert BY_KEY == "cityHash64(organization_id, transaction_id)"
    assert "ORDER BY (organization_id, customer_id, code, timestamp, transaction_id)" in store.schema(CLUSTER)[1]


def test_views_fill_each_hosts_local_tables_from_its_local_events():
    statements = cluster_schema(CLUSTER)
    copies = next(s for s in statements if "event_copies_mv" in s)
    assert copies == (
        "CREATE MATERIALIZED VIEW IF NOT EXISTS bxb.event_copies_mv ON CLUSTER 'prod-1' TO bxb.event_copies_local "
        f"AS SELECT {store.COPY_COLUMNS} FROM bxb.events_local"
    )
    daily = next(s for s in statements if f"{rollups.TABLE}_mv" in s)
    assert f"TO bxb.{rollups.TABLE}_local AS SELECT" in daily
    assert daily.endswith("FROM bxb.events_local GROUP BY organization_id, customer_id, code, day")


def test_mutations_go_to_the_local_tables_of_every_shard_and_rollups_are_derived_from_all():
    assert CLUSTER.delete("events", "organization_id = {org:String}") == (
        "DELETE FROM bxb.events_local ON CLUSTER 'prod-1' WHERE organization_id = {org:String}"
    )
    delete, insert = rollups.redo(CLUSTER)
    assert delete.startswith(f"DELETE FROM bxb.{rollups.TABLE}_local ON CLUSTER 'prod-1' WHERE ")
    assert insert.startswith(f"INSERT INTO bxb.{rollups.TABLE} SELECT ")
    assert " FROM bxb.events FINAL WHERE " in insert
    # the first start's fill reads and writes the Distributed tables, as on one server
    assert rollups.fill("bxb").startswith(f"INSERT INTO bxb.{rollups.TABLE} SELECT ")
    assert rollups.fill("bxb").endswith("FROM bxb.events FINAL GROUP BY organization_id, customer_id, code, day")


def test_a_canary_key_lands_on_each_weighted_shard():
    # the Distributed table's slots: hash % 3; slot 0 is shard 0's, slots 1 and 2 shard 1's
    hashes = [("a", 4), ("b", 7), ("c", 3), ("d", 5)]  # slots 1, 1, 0, 2
    assert canaries([1, 2], hashes) == ["c", "a"]
    assert canaries([1], hashes) == ["a"]
    assert canaries([0, 1], hashes) == ["a"]  # a shard of weight 0 gets no rows
    with pytest.raises(RuntimeError, match="no canary key for each shard"):
        canaries([1, 1], [("a", 2), ("b", 4)])  # none lands on shard 1
    with pytest.raises(RuntimeError, match="is the cluster defined"):
        canaries([], hashes)


def test_the_cluster_setting_needs_a_plain_name_and_a_server():
    assert cluster_setting("", "") == ""
    assert cluster_setting("prod-1.eu_west", "http://ch:8123") == "prod-1.eu_west"
    with pytest.raises(SystemExit, match="must be a cluster name"):
        cluster_setting("x' ON CLUSTER y", "http://ch:8123")
    with pytest.raises(SystemExit, match="needs BXB_CLICKHOUSE_URL"):
        cluster_setting("prod", "")
