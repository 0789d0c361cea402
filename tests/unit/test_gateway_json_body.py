"""gateway/json_body.py: a request body read as JSON with exact decimals;
malformed JSON (a trailing comma, bytes that are no UTF-8, NaN, an integer of
thousands of digits, deep nesting, a lone surrogate) is a 400 saying so, and
a NUL character, in the body or in a path or query value, a 400 naming where
it is."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.errors import ApiError
from gateway.json_body import parse_json, refuse_nul


def test_parse_json_reads_numbers_as_exact_decimals():
    assert parse_json(b'{"a": 0.1, "b": 2, "c": [true, null, "x"]}') == {
        "a": Decimal("0.1"),
        "b": 2,
        "c": [True, None, "x"],
    }
    assert isinstance(parse_json(b"0.1"), Decimal)


def malformed(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_json(raw)
    error = caught.value
    assert (error.status, error.reason, error.field) == (400, "MALFORMED_JSON", "")
    return error


def test_parse_json_malformed_says_where():
    assert malformed(b'{"a": }').message == "malformed JSON: Expecting value at line 1 column 7"
    assert "line 2" in malformed(b'{"a": 1,\n}').message
    assert "malformed JSON" in malformed(b"").message


def test_parse_json_refuses_non_utf8():
    assert malformed(b'{"a": "\xff"}').message == "the body is not UTF-8"


@pytest.mark.parametrize(
    ("raw", "name"), [(b'{"a": NaN}', "NaN"), (b"[Infinity]", "Infinity"), (b"-Infinity", "-Infinity")]
)
def test_parse_json_refuses_non_finite_constants(raw, name):
    assert malformed(raw).message == f"malformed JSON: {name} is not a number"


def test_parse_json_refuses_an_integer_with_too_many_digits():
    assert "too many digits" in malformed(b'{"n": ' + b"9" * 5000 + b"}").message


def test_parse_json_refuses_deep_nesting():
    assert "nested too deeply" in malformed(b"[" * 50_000).message


def test_parse_json_refuses_an_unpaired_surrogate_escape():
    assert "unpaired UTF-16 surrogate" in malformed(b'{"name": "\\ud800"}').message


def test_parse_json_accepts_a_paired_surrogate_escape():
    assert parse_json(b'{"name": "\\ud83d\\ude00"}') == {"name": "\U0001f600"}


def test_parse_json_refuses_a_nul_escape_by_the_path_of_its_string_or_key():
    error = malformed_at(b'{"charges": [{"name": "a\\u0000b"}]}')
    assert (error.field, error.reason) == ("charges[0].name", "INVALID_VALUE")
    assert error.message == "charges[0].name must not contain the NUL character (\\u0000)"
    assert malformed_at(b'{"a": {"k\\u0000": 1}}').field == "a.k\\u0000"
    assert malformed_at(b'"\\u0000"').message == "the body must not contain the NUL character (\\u0000)"


def test_parse_json_takes_text_that_only_looks_like_a_nul_escape():
    assert parse_json(b'{"a": "\\\\u0000"}') == {"a": "\\u0000"}


def malformed_at(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_json(raw)
    assert caught.value.status == 400
    return caught.value


def test_refuse_nul_names_the_path_or_query_value():
    assert refuse_nul("plain é", "id") == "plain é"
    with pytest.raises(ApiError) as caught:
        refuse_nul("a\x00b", "customer_id")
    assert (caught.value.field, caught.value.reason) == ("customer_id", "INVALID_VALUE")
