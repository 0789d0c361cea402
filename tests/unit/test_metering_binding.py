"""Query parameters are written exactly as clickhouse-connect writes them."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.binding import format_bind_value

from services.metering.clickhouse import bound, insert_statement


@pytest.mark.parametrize(
    "value",
    [
        ["evt_1", "evt_2"],
        ["it's", "back\\slash", "tick`", "tab\there", "line\nbreak", "é ü 日本"],
        [""],
        [],
        ["a", 1],
        "a'b",
        42,
        None,
        [("cus", "code", "2026-01-01", "x'y")],
    ],
)
def test_bound_matches_clickhouse_connect(value):
    assert bound(value) == format_bind_value(value)


def test_insert_statement_writes_one_json_object_per_line():
    statement = insert_statement("db.t", [{"a": "x\ny", "m": {"k": "é"}, "v": None}, {"a": "z", "m": {}, "v": "1"}])
    assert (
        statement
        == 'INSERT INTO db.t FORMAT JSONEachRow\n{"a":"x\\ny","m":{"k":"é"},"v":null}\n{"a":"z","m":{},"v":"1"}'
    )
