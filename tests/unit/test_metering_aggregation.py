"""How usage queries become one ClickHouse statement: which queries share a
scan, and client values travelling only as query parameters."""

from datetime import UTC, datetime, timedelta

from services.metering.aggregation import Statement, UsageQuery, scans

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)


def query(code: str = "api", aggregation: str = "sum", **fields) -> UsageQuery:
    spec = {"customer_id": "cus_1", "code": code, "aggregation": aggregation, "field": "tokens"}
    spec.update(start=START, end=END)
    spec.update(fields)
    return UsageQuery(**spec)


def test_queries_reading_the_same_events_share_one_scan():
    plan = [query(f"code_{i}", ("sum", "count", "unique_count", "latest")[i % 4]) for i in range(20)]
    assert scans(plan) == [list(range(20))]


def test_a_second_query_of_a_code_shares_the_scan():
    assert scans([query(), query(buckets=((("region", ("us",)),),)), query(group_by=("region",))]) == [[0, 1, 2]]


def test_another_customer_window_scope_or_weighted_sum_reads_other_events():
    plan = [
        query(),
        query(customer_id="cus_2"),
        query(end=END + timedelta(days=1)),
        query(subscription_id="sub_1"),
        query(subscription_id="sub_1", windows=((START, END),)),
        query("seats", "weighted_sum"),
        query("calls", "count"),
        query("storage", "weighted_sum"),
        query(subscription_id="sub_1", windows=((START, START + timedelta(days=1)),)),
    ]
    # A subscription reading none (3) or all (4) of the unassigned events shares the subscriptions' scan.
    assert scans(plan) == [[0, 6], [1], [2], [3, 4], [5, 7], [8]]


def test_subscriptions_of_any_customers_over_one_range_share_one_scan():
    whole = ((START - timedelta(days=1), END),)
    plan = [query(customer_id=f"cus_{n}", subscription_id=f"sub_{n}", windows=whole if n % 2 else ()) for n in range(4)]
    plan.append(query(customer_id="cus_9", subscription_id="sub_9", end=END + timedelta(days=1)))
    plan.append(query("seats", "weighted_sum", subscription_id="sub_1"))
    assert scans(plan) == [[0, 1, 2, 3], [4], [5]]


def test_one_subscriptions_scan_routes_by_code_and_several_by_their_ids():
    whole = ((START, END),)
    one = Statement("db", "org", [query(f"m{n}", subscription_id="sub_1", windows=whole) for n in range(3)])
    assert "transform(code," in one.sql
    assert "customer_id = {" in one.sql and "length(customer_id)" not in one.sql
    page = Statement(
        "db", "org", [query(customer_id=f"cus_{n}", subscription_id=f"sub_{n}", windows=whole) for n in range(2)]
    )
    assert "length(customer_id)" in page.sql and "transform(code," not in page.sql


def test_client_values_are_parameters_never_sql_text():
    tricky = "x') OR 1=1 -- {org:String} \\'"
    plan = [
        query(tricky, customer_id=tricky, field=tricky, subscription_id=tricky, windows=((START, END),)),
        query(tricky, "unique_count", buckets=(((tricky, (tricky, "b")),),), group_by=(tricky,)),
        query("seats", "weighted_sum", field=""),
    ]
    statement = Statement("db", tricky, plan)
    assert tricky not in statement.sql
    assert "OR 1=1" not in statement.sql
    assert statement.params["org"] == tricky
    assert sorted(v for v in statement.params.values() if v == tricky) == [tricky] * 2  # org, and one for the rest
    assert [tricky] in statement.params.values()  # the codes of a scan
    assert [tricky, "b"] in statement.params.values()  # a filter's values


def test_a_value_used_twice_is_bound_once():
    statement = Statement("db", "org", [query("a"), query("b", "max"), query("c", group_by=("tokens",))])
    assert list(statement.params.values()).count("tokens") == 1


def test_a_window_covering_the_period_needs_no_time_test():
    # Cut to the period, the window is the period: only its two times are bound.
    covering = Statement("db", "org", [query(subscription_id="s", windows=((START - timedelta(days=1), END),))])
    assert sorted(v for v in covering.params.values() if str(v).startswith("2026")) == [
        "2026-03-01 00:00:00.000",
        "2026-04-01 00:00:00.000",
    ]
    assert ["", "s"] in covering.params.values()  # its own events and the unassigned ones
    # weighted_sum reads the level from before the period, so the window's start matters.
    weighted = Statement("db", "org", [query(aggregation="weighted_sum", subscription_id="s", windows=((START, END),))])
    assert "subscription_id IN" not in weighted.sql
    assert "2026-03-01 00:00:00.000" in weighted.params.values()
