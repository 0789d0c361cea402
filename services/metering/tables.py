"""Where metering's tables live: one ClickHouse (chdb or a server), or a
cluster named by BXB_CLICKHOUSE_CLUSTER.

On a cluster each table is a replicated local table `<name>_local` on every
host (the Replicated engine of today's family, under the usual
'/clickhouse/tables/{shard}/{database}/<table>' path and '{replica}' macro),
and a Distributed table `<name>` over them, created ON CLUSTER. Everything
reads and inserts through `<name>`, so queries are the same text in both
layouts; materialized views run on each host from local table to local
table, and mutations (DELETE) go to the local tables ON CLUSTER.

A table's Distributed sharding key keeps every row that can duplicate
another on one shard: events and their copies by (organization, key), so
ReplacingMergeTree's FINAL, which collapses per shard, stays exact, and
every aggregate merged across shards (count, sums, max, uniqExact, argMax)
is exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# A cluster name as `remote_servers` defines it; checked so it can be quoted as is.
CLUSTER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
LOCAL = "_local"
# Sharding keys of the Distributed tables: rows that can duplicate one another
# (the same organization and idempotency key) land on one shard.
BY_KEY = "cityHash64(organization_id, transaction_id)"
BY_CUSTOMER = "cityHash64(organization_id, customer_id)"

# Settings of every request on a cluster (Remote):
# - an insert into a Distributed table returns once each shard stored its rows
#   (not when they are queued on the host the client reached), so the queue's
#   message is acknowledged only for stored events, and the writer's checks
#   read what it just wrote;
# - every host reads and writes each shard through its first live replica in
#   the cluster's order (not a local or random one), so a read follows the
#   writes before it; replicas are copies for failover, not for reads;
# - a DELETE returns once every replica applied it;
# - an insert is never dropped for repeating an earlier block, as Replicated
#   tables do by default and one server never does: rolling a day up again
#   (rollups.redo) after its rows were deleted can repeat the block that
#   rolled it up before, and must not be lost. Repeated events still
#   collapse (ReplacingMergeTree, read with FINAL).
CLUSTER_SETTINGS: dict[str, Any] = {
    "insert_distributed_sync": 1,
    "load_balancing": "in_order",
    "prefer_localhost_replica": 0,
    "mutations_sync": 2,
    "insert_deduplicate": 0,
}


def cluster_setting(cluster: str, url: str) -> str:
    """BXB_CLICKHOUSE_CLUSTER checked: empty (one server), or a plain name
    with BXB_CLICKHOUSE_URL set (chdb is one engine, not a cluster)."""
    if cluster and not CLUSTER_NAME.fullmatch(cluster):
        raise SystemExit(f"BXB_CLICKHOUSE_CLUSTER must be a cluster name (letters, digits, _ . -), got {cluster!r}")
    if cluster and not url:
        raise SystemExit("BXB_CLICKHOUSE_CLUSTER needs BXB_CLICKHOUSE_URL: a server of that cluster")
    return cluster


def canaries(weights: list[int], hashes: list[tuple[str, int]]) -> list[str]:
    """One canary key per shard with a weight: the first of `hashes` (key,
    its sharding hash) the Distributed table sends to each shard, as it does:
    slot hash % total weight, slots given to shards in order, `weight` each."""
    slots = [shard for shard, weight in enumerate(weights) for _ in range(weight)]
    found: dict[int, str] = {}
    for key, hashed in hashes if slots else []:
        found.setdefault(slots[hashed % len(slots)], key)
    wanted = {shard for shard, weight in enumerate(weights) if weight}
    if not slots or found.keys() != wanted:
        raise RuntimeError(f"no canary key for each shard; shard weights {weights} (is the cluster defined?)")
    return [found[shard] for shard in sorted(found)]


@dataclass(frozen=True)
class Layout:
    """The DDL and mutations of database `db`, on one server (cluster "") or
    on a cluster."""

    db: str
    cluster: str = ""

    def _on(self) -> str:
        return f" ON CLUSTER '{self.cluster}'" if self.cluster else ""

    def local(self, name: str) -> str:
        """The table holding this host's rows of `name` (itself on one server)."""
        return f"{self.db}.{name}{LOCAL if self.cluster else ''}"

    def database(self) -> str:
        return f"CREATE DATABASE IF NOT EXISTS {self.db}{self._on()}"

    def table(self, name: str, columns: str, engine: str, clauses: str, sharding: str) -> list[str]:
        """CREATE TABLE statements of `name`: the table itself on one server;
        on a cluster, its replicated local table and the Distributed table
        over it, sharded by `sharding`. `engine` is a MergeTree family name
        without parameters; `clauses` follow ENGINE (PARTITION BY, ORDER BY, ...)."""
        if not self.cluster:
            return [f"CREATE TABLE IF NOT EXISTS {self.db}.{name} ({columns}) ENGINE = {engine}\n{clauses}"]
        local = f"{name}{LOCAL}"
        replicated = f"Replicated{engine}('/clickhouse/tables/{{shard}}/{{database}}/{local}', '{{replica}}')"
        return [
            f"CREATE TABLE IF NOT EXISTS {self.db}.{local}{self._on()} ({columns}) ENGINE = {replicated}\n{clauses}",
            f"CREATE TABLE IF NOT EXISTS {self.db}.{name}{self._on()} AS {self.db}.{local} "
            f"ENGINE = Distributed('{self.cluster}', '{self.db}', '{local}', {sharding})",
        ]

    def view(self, name: str, target: str, select: str) -> str:
        """A materialized view filling table `target` from each insert into
        the table `select` reads (`select` names tables through `local`):
        on a cluster, on every host from its local rows to its local table."""
        return (
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.db}.{name}{self._on()} TO {self.local(target)} AS {select}"
        )

    def delete(self, name: str, where: str) -> str:
        """A lightweight DELETE of table `name`'s rows matching `where`: on a
        cluster, from the local tables of every shard."""
        return f"DELETE FROM {self.local(name)}{self._on()} WHERE {where}"
