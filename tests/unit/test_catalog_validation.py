"""Codes, external ids and free text of catalog resources."""

from __future__ import annotations

import pytest

from services.catalog import validation
from services.common.errors import InvalidArgument


@pytest.mark.parametrize("value", ["a", "api_calls", "Plan-2026.v1:gold", "9lives", "a" * 100])
def test_valid_codes_are_returned(value):
    assert validation.code(value, "code") == value


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", "is required"),
        ("_leading", "starting with a letter or digit"),
        ("has space", "letters, digits"),
        ("a@b", "letters, digits"),
        ("a" * 101, "1-100"),
        ("gold\n", "letters, digits"),  # `$` alone would accept a trailing newline
        ("gold\nplatinum", "letters, digits"),
    ],
)
def test_invalid_codes_are_refused_naming_the_field(value, words):
    with pytest.raises(InvalidArgument) as caught:
        validation.code(value, "billable_metric.code")
    assert caught.value.field == "billable_metric.code"
    assert words in caught.value.message


@pytest.mark.parametrize("value", ["cust_1", "alice@example.com", "A:B.C-D_E", "x" * 200])
def test_valid_external_ids_are_returned(value):
    assert validation.external_id(value, "external_id") == value


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", "is required"),
        ("@alice", "starting with a letter or digit"),
        ("alice smith", "1-200"),
        ("x" * 201, "1-200"),
        ("alice\n", "1-200"),
    ],
)
def test_invalid_external_ids_are_refused_naming_the_field(value, words):
    with pytest.raises(InvalidArgument) as caught:
        validation.external_id(value, "customer.external_id")
    assert caught.value.field == "customer.external_id"
    assert words in caught.value.message


def test_text_up_to_the_limit_is_returned():
    assert validation.text("x" * 200, "name") == "x" * 200
    assert validation.text("", "name") == ""
    assert validation.text("abcde", "name", max_length=5) == "abcde"


def test_text_over_the_limit_is_refused_naming_the_field():
    with pytest.raises(InvalidArgument) as caught:
        validation.text("x" * 201, "plan.name")
    assert caught.value.field == "plan.name"
    assert "at most 200 characters" in caught.value.message
    with pytest.raises(InvalidArgument):
        validation.text("abcdef", "name", max_length=5)
