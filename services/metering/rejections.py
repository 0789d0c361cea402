"""Refused events, kept 90 days so a client can see why billing missed them.

A row per refusal: the filter columns (customer, code) and the whole
RejectedEvent as protobuf (base64, since inserts are JSON text). Shape errors
(a bad value, a timestamp in the future, oversized properties) mean the event
was not stored; an unknown metric or customer is recorded with `stored` set,
because the event is kept and counts once they exist. Once recorded, they
are told to the other services (rejection_notices.py).
"""

from __future__ import annotations

import base64
from datetime import datetime

from bxb.metering.v1 import usage_events_pb2 as pb
from services.common.timestamps import to_proto
from services.metering.aggregation import ch_time
from services.metering.clickhouse import ClickHouse
from services.metering.rejection_notices import RejectionNotices
from services.metering.tables import BY_CUSTOMER, Layout

KEPT_DAYS = 90


def schema(layout: Layout) -> list[str]:
    """No row duplicates another, so any sharding reads exactly: by customer."""
    return layout.table(
        "rejected_events",
        """
            organization_id LowCardinality(String),
            reject_time DateTime64(3, 'UTC'),
            customer_id String,
            code String,
            reason LowCardinality(String),
            record String
        """,
        "MergeTree",
        f"""PARTITION BY toYYYYMM(reject_time)
        ORDER BY (organization_id, reject_time)
        TTL toDateTime(reject_time) + INTERVAL {KEPT_DAYS} DAY""",
        BY_CUSTOMER,
    )


class Rejections:
    def __init__(self, ch: ClickHouse, db: str, notices: RejectionNotices | None = None):
        self.ch = ch
        self.db = db
        self.notices = notices  # None: no one is told

    async def record(self, org: str, rejected: list[pb.RejectedEvent], now: datetime) -> None:
        if not rejected:
            return
        rows = []
        for r in rejected:
            r.reject_time.CopyFrom(to_proto(now))
            rows.append(
                {
                    "organization_id": org,
                    "reject_time": ch_time(now),
                    "customer_id": r.event.customer_id,
                    "code": r.event.code,
                    "reason": r.error.reason,
                    "record": base64.b64encode(r.SerializeToString()).decode(),
                }
            )
        await self.ch.insert(f"{self.db}.rejected_events", rows)
        if self.notices is not None:
            self.notices.tell(org, rejected, now)

    async def list(self, org: str, customer_id: str, code: str, offset: int, limit: int) -> list[pb.RejectedEvent]:
        where = ["organization_id = {org:String}"]
        if customer_id:
            where.append("customer_id = {customer:String}")
        if code:
            where.append("code = {code:String}")
        rows = await self.ch.query(
            f"SELECT record FROM {self.db}.rejected_events WHERE {' AND '.join(where)} "
            "ORDER BY reject_time DESC, record LIMIT {limit:UInt32} OFFSET {offset:UInt64}",
            {"org": org, "customer": customer_id, "code": code, "limit": limit, "offset": offset},
        )
        return [pb.RejectedEvent.FromString(base64.b64decode(record)) for [record] in rows]
