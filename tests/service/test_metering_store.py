"""EventStore over both ClickHouse transports: the same tests run on the
session's chdb (Embedded) and through ClickHouse's HTTP interface (Remote)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

import pytest

from bxb.metering.v1 import usage_events_pb2 as pb
from services.common.decimals import canonical
from services.common.timestamps import from_proto, utcnow
from services.metering import histogram, rollups
from services.metering.clickhouse import ClickHouse
from services.metering.rejections import Rejections
from services.metering.store import Event, EventStore, ch_time
from tests.conftest import unique

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)
NOW = datetime(2026, 4, 2, 12, 0, 0, 123456, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def event(txn: str, at: datetime = START, customer: str = "cus_1", code: str = "api", **properties: str) -> Event:
    return Event(txn, customer, code, at, properties)


async def usage(
    store: EventStore,
    org: str,
    aggregation: str,
    field: str = "v",
    *,
    customer="cus_1",
    code="api",
    start=START,
    end=END,
) -> tuple[Decimal, int]:
    result = await store.aggregate(org, customer, code, aggregation, field, start, end)
    assert result.values == ()  # listed only when asked for
    return result.value, result.count


async def values(
    store: EventStore, org: str, aggregation: str = "sum", field: str = "v", *, customer="cus_1", code="api", end=END
) -> list[str]:
    """Each event's value, as exact text, with the aggregate checked to agree with them."""
    result = await store.aggregate(org, customer, code, aggregation, field, START, end, include_values=True)
    assert (result.value, result.count) == await usage(
        store, org, aggregation, field, customer=customer, code=code, end=end
    )
    assert len(result.values) == result.count
    if aggregation == "sum":
        with localcontext(prec=60):  # 38 digits fit a Decimal128; the default context keeps 28
            assert sum(result.values) == result.value
    assert all(isinstance(v, Decimal) for v in result.values)
    return [canonical(v) for v in result.values]


async def test_schema_creation_is_idempotent_and_keeps_data(clickhouse: ClickHouse, org: str):
    db = unique("bxb_schema")
    store = EventStore(clickhouse, db)
    await store.create_schema()
    await store.ingest(org, [event("t1", v="4")], NOW)
    await store.create_schema()
    await EventStore(clickhouse, db).create_schema()
    tables = await clickhouse.query(
        "SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name", {"db": db}
    )
    names = ["event_copies", "event_copies_mv", "events", "rejected_events", "usage_daily_v2", "usage_daily_v2_mv"]
    assert tables == [[name] for name in names]
    assert await usage(store, org, "sum") == (Decimal(4), 1)


async def test_events_stored_before_the_rollups_existed_are_rolled_up_once(clickhouse: ClickHouse, org: str):
    db = unique("bxb_rollup")
    store = EventStore(clickhouse, db)
    await store.create_schema()
    await store.ingest(org, [event("t1", v="4"), event("t2", START + timedelta(days=2), v="6")], NOW)
    for table in ("usage_daily_v2_mv", "usage_daily_v2"):  # as before rollups were introduced
        await clickhouse.execute(f"DROP TABLE {db}.{table}")
    await store.create_schema()
    await store.create_schema()  # a second start rolls up nothing again
    summary = rollups.Summary("cus_1", "api", "sum", "v", START, START + timedelta(days=31))
    assert await store.summarize(org, summary) == (Decimal(10), 2)


async def test_a_duplicate_in_one_batch_counts_once(store: EventStore, org: str):
    fresh = await store.ingest(org, [event("t1", v="1"), event("t2", v="10"), event("t1", v="100")], NOW)
    assert fresh == [True, True, False]
    assert await usage(store, org, "sum") == (Decimal(11), 2)


async def test_a_duplicate_in_a_later_batch_is_skipped(store: EventStore, org: str):
    assert await store.ingest(org, [event("t1", v="1")], NOW) == [True]
    assert await store.ingest(org, [event("t2", v="10"), event("t1", START + MS, v="100")], NOW) == [True, False]
    assert await usage(store, org, "sum") == (Decimal(11), 2)
    assert (await store.get(org, "t1")).properties == {"v": "1"}


async def test_a_duplicate_after_a_restart_is_skipped(store: EventStore, org: str):
    assert await store.ingest(org, [event("t1", v="1")], NOW) == [True]
    restarted = EventStore(store.ch, store.db)
    assert await restarted.ingest(org, [event("t1", v="100")], NOW + timedelta(days=365)) == [False]
    assert await usage(restarted, org, "sum") == (Decimal(1), 1)


async def test_a_full_batch_of_long_ids_is_deduplicated(store: EventStore, org: str):
    # 500 ids of 200 characters: over HTTP the bound ids travel as a form field.
    events = [event(f"{i:03d}".ljust(200, "x"), v="1") for i in range(500)]
    assert await store.ingest(org, events, NOW) == [True] * 500
    assert await store.ingest(org, events, NOW) == [False] * 500
    assert await usage(store, org, "count") == (Decimal(500), 500)


async def test_concurrent_ingests_accept_each_id_once_per_organization(store: EventStore, org: str):
    other = unique("org")
    # Six calls per organization at once; t0..t2 are each sent by two calls.
    calls = [(o, [event(f"t{i % 3}", v="1"), event(f"u{i}", v="10")]) for i in range(6) for o in (org, other)]
    results = await asyncio.gather(*(store.ingest(o, batch, NOW) for o, batch in calls))
    for who in (org, other):
        outcomes = [result for (o, _), result in zip(calls, results, strict=True) if o == who]
        assert sum(first for first, _ in outcomes) == 3
        assert all(second for _, second in outcomes)
        assert await usage(store, who, "sum") == (Decimal(63), 9)


def give_up(store: EventStore, org: str, events: list[Event]) -> asyncio.Task:
    """An ingest call whose caller gives up after it is queued."""
    task = asyncio.create_task(store.ingest(org, events, NOW))
    asyncio.get_running_loop().call_soon(task.cancel)
    return task


async def test_a_caller_giving_up_does_not_disturb_the_others(store: EventStore, org: str):
    abandoned = give_up(store, org, [event("t1", v="1")])
    assert await store.ingest(org, [event("t2", v="10")], NOW) == [True]
    assert abandoned.cancelled()
    # Its write was already queued, so it happened: a retry is a duplicate.
    assert await store.ingest(org, [event("t1", v="1")], NOW) == [False]
    assert await usage(store, org, "sum") == (Decimal(11), 2)


async def test_a_failed_write_fails_its_callers_stores_nothing_and_a_retry_works(clickhouse: ClickHouse, org: str):
    store = EventStore(clickhouse, unique("bxb_unready"))  # its tables do not exist yet
    abandoned = give_up(store, org, [event("t0", v="1")])
    calls = [store.ingest(org, [event(f"t{i}", v="10")], NOW) for i in (1, 2)]
    failures = await asyncio.gather(*calls, return_exceptions=True)
    assert abandoned.cancelled()
    assert all("UNKNOWN_DATABASE" in str(failure) for failure in failures), failures
    await store.create_schema()
    assert await store.ingest(org, [event(f"t{i}", v="10") for i in range(3)], NOW) == [True] * 3


async def test_the_window_includes_its_start_and_excludes_its_end(store: EventStore, org: str):
    at = {"before": START - MS, "start": START, "last": END - MS, "end": END}
    values = {"before": "1", "start": "10", "last": "100", "end": "1000"}
    await store.ingest(org, [event(name, at[name], v=values[name]) for name in at], NOW)
    assert await usage(store, org, "count") == (Decimal(2), 2)
    assert await usage(store, org, "sum") == (Decimal(110), 2)
    assert await usage(store, org, "sum", start=END, end=END + MS) == (Decimal(1000), 1)
    assert await usage(store, org, "sum", start=START, end=START) == (Decimal(0), 0)


async def test_only_the_customer_and_metric_asked_for_count(store: EventStore, org: str):
    await store.ingest(
        org, [event("t1", v="1"), event("t2", customer="cus_2", v="10"), event("t3", code="other", v="100")], NOW
    )
    assert await usage(store, org, "sum") == (Decimal(1), 1)
    assert await usage(store, org, "sum", customer="cus_2") == (Decimal(10), 1)
    assert await usage(store, org, "sum", code="other") == (Decimal(100), 1)


async def test_sums_are_exact_decimals(store: EventStore, org: str):
    await store.ingest(org, [event("t1", v="0.1"), event("t2", v="0.2")], NOW)
    assert await usage(store, org, "sum") == (Decimal("0.3"), 2)
    await store.ingest(
        org,
        [event("t3", customer="big", v="12345678901234567890.123456789012"), event("t4", customer="big", v="1e-12")],
        NOW,
    )
    assert await usage(store, org, "sum", customer="big") == (Decimal("12345678901234567890.123456789013"), 2)


async def test_each_aggregation_over_numeric_non_numeric_and_missing_values(store: EventStore, org: str):
    hour = timedelta(hours=1)
    values = ["5", "7.5", "2", "3", "abc", None]
    events = [event(f"t{i}", START + i * hour, **({"v": v} if v else {})) for i, v in enumerate(values)]
    # The latest event with a numeric value arrives first: latest goes by timestamp.
    await store.ingest(org, [events[3]], NOW)
    await store.ingest(org, events[:3] + events[4:], NOW + hour)
    assert await usage(store, org, "count") == (Decimal(6), 6)
    assert await usage(store, org, "sum") == (Decimal("17.5"), 6)
    assert await usage(store, org, "max") == (Decimal("7.5"), 6)
    assert await usage(store, org, "unique_count") == (Decimal(5), 6)  # "abc" is a value; a missing one is not
    assert await usage(store, org, "latest") == (Decimal(3), 6)


async def test_latest_breaks_a_timestamp_tie_by_ingest_time(store: EventStore, org: str):
    await store.ingest(org, [event("b", v="1")], NOW)
    await store.ingest(org, [event("a", v="2")], NOW + MS)
    assert await usage(store, org, "latest") == (Decimal(2), 2)


@pytest.mark.parametrize("aggregation", ["sum", "max", "unique_count", "latest"])
async def test_a_property_no_event_has_aggregates_to_zero(store: EventStore, org: str, aggregation: str):
    await store.ingest(org, [event("t1", v="5"), event("t2", v="6")], NOW)
    assert await usage(store, org, aggregation, field="absent") == (Decimal(0), 2)


@pytest.mark.parametrize("aggregation", ["sum", "max", "latest"])
async def test_non_numeric_values_aggregate_to_zero(store: EventStore, org: str, aggregation: str):
    await store.ingest(org, [event("t1", v="abc"), event("t2", v="1,5"), event("t3", v="")], NOW)
    assert await usage(store, org, aggregation) == (Decimal(0), 3)


async def test_organizations_are_isolated(store: EventStore, org: str):
    other = unique("org")
    assert await store.ingest(org, [event("t1", v="1")], NOW) == [True]
    assert await store.ingest(other, [event("t1", v="10"), event("t2", v="100")], NOW) == [True, True]
    assert await usage(store, org, "sum") == (Decimal(1), 1)
    assert await usage(store, other, "sum") == (Decimal(110), 2)
    assert (await store.get(other, "t1")).properties == {"v": "10"}
    assert await store.get(org, "t2") is None


async def test_get_returns_the_stored_event(store: EventStore, org: str):
    at = datetime(2026, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)
    stored = Event("t1", "cus_1", "api", at, {"v": "2340", "region": "eu"}, subscription_id="sub_1")
    await store.ingest(org, [stored], NOW)
    got = await store.get(org, "t1")
    assert (got.transaction_id, got.customer_id, got.code, got.subscription_id) == ("t1", "cus_1", "api", "sub_1")
    assert got.properties == {"v": "2340", "region": "eu"}
    assert got.timestamp == at.replace(microsecond=535000)  # stored to the millisecond
    assert got.ingest_time == NOW.replace(microsecond=123000)
    assert await store.get(org, "t2") is None


async def test_quotes_and_backslashes_round_trip(store: EventStore, org: str):
    tricky = 'it\'s "quoted" \\ back\\slash \\N \t tab\nnewline {v:String} é'
    stored = Event(tricky, tricky, tricky, START, {tricky: "2", "v": tricky}, subscription_id=tricky)
    assert await store.ingest(org, [stored], NOW) == [True]
    assert await store.ingest(org, [stored], NOW) == [False]
    got = await store.get(org, tricky)
    assert (got.transaction_id, got.customer_id, got.code, got.subscription_id) == (tricky,) * 4
    assert got.properties == {tricky: "2", "v": tricky}
    assert await usage(store, org, "sum", field=tricky, customer=tricky, code=tricky) == (Decimal(2), 1)
    assert await usage(store, org, "unique_count", customer=tricky, code=tricky) == (Decimal(1), 1)
    assert await values(store, org, field=tricky, customer=tricky, code=tricky) == ["2"]


async def test_timestamps_before_year_1000_keep_their_year(store: EventStore, org: str):
    year1, year2001 = datetime(1, 1, 1, tzinfo=UTC), datetime(2001, 1, 1, tzinfo=UTC)
    await store.ingest(org, [event("t1", year1, v="1"), event("t2", year2001, v="10")], NOW)
    assert (await store.get(org, "t1")).timestamp == year1
    assert await usage(store, org, "sum", start=year1, end=datetime(2, 1, 1, tzinfo=UTC)) == (Decimal(1), 1)
    assert await usage(store, org, "sum", start=year2001, end=datetime(2002, 1, 1, tzinfo=UTC)) == (Decimal(10), 1)


# Each event's value (include_values)


async def test_values_are_each_events_exact_value_in_time_order(store: EventStore, org: str):
    hour = timedelta(hours=1)
    # Sent newest first, across two batches.
    await store.ingest(org, [event("t3", START + 2 * hour, v="0.2"), event("t2", START + hour, v="7.5")], NOW)
    await store.ingest(org, [event("t1", START, v="0.1"), event("t4", END, v="1000")], NOW + MS)
    assert await values(store, org) == ["0.1", "7.5", "0.2"]
    for aggregation in ("max", "latest", "unique_count"):
        assert await values(store, org, aggregation) == ["0.1", "7.5", "0.2"]


async def test_values_keep_every_digit(store: EventStore, org: str):
    big, tiny = "12345678901234567890.123456789012", "0.000000000001"
    await store.ingest(
        org, [event("t1", v=big), event("t2", START + MS, v=tiny), event("t3", START + 2 * MS, v="-3")], NOW
    )
    assert await values(store, org) == [big, tiny, "-3"]


async def test_a_missing_or_non_numeric_value_is_zero(store: EventStore, org: str):
    sent = [
        event("t1", v="abc"),
        event("t2", START + MS),
        event("t3", START + 2 * MS, v=""),
        event("t4", START + 3 * MS, v="1,5"),
    ]
    await store.ingest(org, [*sent, event("t5", START + 4 * MS, v="2")], NOW)
    assert await values(store, org) == ["0", "0", "0", "0", "2"]
    assert await values(store, org, field="absent") == ["0"] * 5


async def test_values_order_a_timestamp_tie_by_ingest_time_then_transaction_id(store: EventStore, org: str):
    await store.ingest(org, [event("d", START + MS, v="4")], NOW)  # the latest event is ingested first
    await store.ingest(org, [event("c", v="2"), event("b", v="3")], NOW + MS)  # one ingest time: by transaction_id
    await store.ingest(org, [event("a", v="1")], NOW + 2 * MS)  # the lowest id, ingested last
    assert await values(store, org) == ["3", "2", "1", "4"]


async def test_a_duplicate_value_appears_once(store: EventStore, org: str):
    await store.ingest(org, [event("t1", v="1"), event("t2", START + MS, v="10"), event("t1", v="100")], NOW)
    await store.ingest(org, [event("t2", v="1000")], NOW + MS)
    # A crash between the two inserts of a write leaves the event without its
    # key, so the retry inserts an identical row again.
    row = {
        "organization_id": org,
        "customer_id": "cus_1",
        "code": "api",
        "transaction_id": "t3",
        "timestamp": ch_time(START + 2 * MS),
        "properties": {"v": "5"},
        "subscription_id": "",
        "ingest_time": ch_time(NOW),
    }
    await store.ch.insert(f"{store.db}.events", [row])
    await store.ch.insert(f"{store.db}.events", [row])
    assert await values(store, org) == ["1", "10", "5"]


async def test_values_are_of_the_window_customer_and_metric_asked_for(store: EventStore, org: str):
    other = unique("org")
    sent = [
        event("t1", START - MS, v="1"),
        event("t2", v="2"),
        event("t3", customer="cus_2", v="3"),
        event("t4", code="other", v="4"),
        event("t5", END - MS, v="5"),
        event("t6", END, v="6"),
    ]
    await store.ingest(org, sent, NOW)
    await store.ingest(other, [event("t7", v="7")], NOW)
    assert await values(store, org) == ["2", "5"]
    assert await values(store, org, customer="cus_2") == ["3"]
    assert await values(store, org, code="other") == ["4"]
    assert await values(store, org, end=START) == []


# The views (rollups, histograms, listings, refusals) on both transports.


async def test_summaries_merge_rollups_and_edges_like_the_exact_aggregation(store: EventStore, org: str):
    days = [START + timedelta(days=d, hours=h) for d, h in ((0, 1), (0, 23), (1, 0), (3, 12))]
    values = ["1.5", "x", "2", "7"]
    await store.ingest(
        org, [event(f"t{n}", at, v=v, r=v) for n, (at, v) in enumerate(zip(days, values, strict=True))], NOW
    )
    windows = [(START, END), (START + timedelta(hours=2), START + timedelta(days=3, hours=13)), (START, START + MS)]
    for start, end in windows:
        for aggregation in ("count", "sum", "max", "unique_count"):
            summary = rollups.Summary("cus_1", "api", aggregation, "v", start, end)
            exact = await store.aggregate(org, "cus_1", "api", aggregation, "v", start, end)
            assert await store.summarize(org, summary) == (exact.value, exact.count), (aggregation, start, end)


async def test_histograms_bucket_the_exact_usage(store: EventStore, org: str):
    await store.ingest(
        org,
        [event("a", START, v="2"), event("b", START + timedelta(minutes=59), v="3"), event("c", END - MS, v="5")],
        NOW,
    )
    request = histogram.Histogram("cus_1", "api", "sum", "v", START, END, "hour")
    assert [(bar.start, bar.value, bar.count) for bar in await store.histogram(org, request)] == [
        (START, Decimal(5), 2),
        (END - timedelta(hours=1), Decimal(5), 1),
    ]


async def test_listings_go_newest_first_and_page(store: EventStore, org: str):
    await store.ingest(org, [event(f"t{n}", START + n * MS) for n in range(3)] + [event("x", code="other")], NOW)
    assert [e.transaction_id for e in await store.list(org, code="api", limit=2)] == ["t2", "t1"]
    assert [e.transaction_id for e in await store.list(org, code="api", offset=2, limit=2)] == ["t0"]
    assert (await store.get(org, "x")).code == "other"
    assert await store.get(org, "missing") is None


async def test_refusals_are_kept_and_listed_newest_first(clickhouse: ClickHouse, store: EventStore, org: str):
    refusals = Rejections(clickhouse, store.db)
    now = utcnow()  # refusals older than 90 days are dropped
    await refusals.record(org, [], now)  # nothing to record
    for n in range(2):
        refused = pb.RejectedEvent(
            event=pb.UsageEvent(transaction_id=f"r{n}", customer_id="cus_1", code="api"),
            error=pb.EventError(reason="INVALID_VALUE", field="value", message="bad"),
        )
        await refusals.record(org, [refused], now + n * MS)
    listed = await refusals.list(org, "cus_1", "api", 0, 10)
    assert [(r.event.transaction_id, from_proto(r.reject_time)) for r in listed] == [
        ("r1", now + MS),
        ("r0", now),
    ]
    assert await refusals.list(org, "cus_2", "", 0, 10) == []


# Two processes storing copies of one key at the same moment: each passed its
# duplicate check before the other wrote. The first accepted copy is kept.


class Gated:
    """A ClickHouse whose inserts wait at a gate, as a slower process's would."""

    def __init__(self, ch: ClickHouse):
        self.ch = ch
        self.arrived = asyncio.Event()
        self.gate = asyncio.Event()

    async def execute(self, sql, params=None):
        await self.ch.execute(sql, params)

    async def query(self, sql, params=None, *, write=False):
        return await self.ch.query(sql, params, write=write)

    async def insert(self, table, rows):
        self.arrived.set()
        await self.gate.wait()
        await self.ch.insert(table, rows)


@pytest.mark.parametrize("slow_accepted_first", [True, False])
async def test_copies_of_a_key_stored_at_once_by_two_processes_count_once(
    clickhouse: ClickHouse, store: EventStore, org: str, slow_accepted_first: bool
):
    gated = Gated(clickhouse)
    slow, fast = EventStore(gated, store.db), EventStore(clickhouse, store.db)
    early, late = NOW, NOW + timedelta(seconds=1)
    slow_copies = [event("k", START, v="1"), event("k2", START, v="2")]
    fast_copies = [event(key, START + timedelta(hours=1), v="100") for key in ("k", "k2")]
    writing = asyncio.create_task(slow.ingest(org, slow_copies, early if slow_accepted_first else late))
    await gated.arrived.wait()  # checked (no copy yet), now writing
    assert await fast.ingest(org, fast_copies, late if slow_accepted_first else early) == [True, True]
    gated.gate.set()
    # The slow writer sees both copies of each key; the later accepted are deleted.
    assert await writing == [slow_accepted_first] * 2
    assert await usage(store, org, "sum") == ((Decimal(3), 2) if slow_accepted_first else (Decimal(200), 2))
    # The daily rollups dropped the deleted copies too: the summary agrees.
    summary = rollups.Summary("cus_1", "api", "sum", "v", START, END)
    assert await store.summarize(org, summary) == await usage(store, org, "sum")
    assert await store.ingest(org, [event("k", START, v="5")], late) == [False]  # and it stays a duplicate


async def test_identical_copies_stored_at_once_stay_one_row(clickhouse: ClickHouse, store: EventStore, org: str):
    gated = Gated(clickhouse)
    slow = EventStore(gated, store.db)
    writing = asyncio.create_task(slow.ingest(org, [event("k", v="7")], NOW))
    await gated.arrived.wait()
    assert await store.ingest(org, [event("k", v="7")], NOW + MS) == [True]
    gated.gate.set()
    assert await writing == [True]  # one place in the table: FINAL keeps one row, nothing is deleted
    assert await usage(store, org, "sum") == (Decimal(7), 1)


async def test_a_write_settles_another_organizations_copies_of_a_key_it_holds(
    clickhouse: ClickHouse, store: EventStore, org: str
):
    other = f"{org}_b"
    # Two copies of key k for `other`, in two places, as two racing processes would leave them.
    for hours, ingested in ((0, NOW), (1, NOW + MS)):
        row = {
            "organization_id": other,
            "customer_id": "cus_1",
            "code": "api",
            "transaction_id": "k",
            "timestamp": ch_time(START + timedelta(hours=hours)),
            "properties": {"v": str(hours + 1)},
            "subscription_id": "",
            "ingest_time": ch_time(ingested),
            "value": None,
        }
        await clickhouse.insert(f"{store.db}.events", [row])
    # Both calls join one write (group commit), whose key lookups span both organizations.
    ours, theirs = await asyncio.gather(
        store.ingest(org, [event("k", v="5")], NOW), store.ingest(other, [event("j", v="10")], NOW)
    )
    assert (ours, theirs) == ([True], [True])  # k of `other` was not written here: not reported as lost
    assert await usage(store, org, "sum") == (Decimal(5), 1)
    assert await usage(store, other, "sum") == (Decimal(11), 2)  # its first k, and j


async def test_keys_of_an_install_before_event_copies_are_derived_from_its_events(clickhouse: ClickHouse, org: str):
    db = unique("bxb_keys")
    store = EventStore(clickhouse, db)
    await store.create_schema()
    await store.ingest(org, [event("old", v="3")], NOW)
    for statement in (f"DROP TABLE {db}.event_copies_mv", f"DROP TABLE {db}.event_copies"):
        await clickhouse.execute(statement)
    await clickhouse.execute(
        f"CREATE TABLE {db}.event_keys (organization_id String) ENGINE = MergeTree ORDER BY tuple()"
    )
    await store.create_schema()
    assert await clickhouse.query("EXISTS TABLE " + db + ".event_keys") == [[0]]
    assert await store.ingest(org, [event("old", v="30")], NOW) == [False]
    assert await usage(store, org, "sum") == (Decimal(3), 1)


async def test_what_billing_reads_is_fsynced_before_an_insert_returns(clickhouse: ClickHouse):
    db = unique("bxb_durable")
    await clickhouse.execute(f"CREATE DATABASE {db}")
    await clickhouse.execute(  # an events table of an older version, not fsynced
        f"CREATE TABLE {db}.events (organization_id String, customer_id String, code String, transaction_id String, "
        "timestamp DateTime64(3, 'UTC'), properties Map(String, String), subscription_id String, "
        "ingest_time DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree ORDER BY (organization_id, transaction_id)"
    )
    await EventStore(clickhouse, db).create_schema()
    for table in ("events", "event_copies", rollups.TABLE):
        [[created]] = await clickhouse.query(f"SHOW CREATE TABLE {db}.{table}")
        assert "fsync_after_insert = 1" in created and "fsync_part_directory = 1" in created, table
