"""AIP-158 paging helpers: page size defaults and caps, opaque offset tokens."""

from __future__ import annotations

import base64

import pytest

from services.common import pagination
from services.common.errors import InvalidArgument


def test_page_size_zero_means_the_default():
    assert pagination.page_size(0) == 50


@pytest.mark.parametrize(("requested", "granted"), [(1, 1), (499, 499), (500, 500), (501, 500), (10**9, 500)])
def test_page_size_is_capped_at_500(requested, granted):
    assert pagination.page_size(requested) == granted


def test_negative_page_size_is_refused_naming_the_field():
    with pytest.raises(InvalidArgument) as caught:
        pagination.page_size(-1)
    assert caught.value.field == "page_size"


def test_empty_token_is_the_first_page():
    assert pagination.decode_token("") == 0


@pytest.mark.parametrize("offset", [0, 1, 50, 2**63 - 1])
def test_issued_tokens_round_trip(offset):
    token = pagination.encode_token(offset)
    assert token != str(offset)
    assert pagination.decode_token(token) == offset


@pytest.mark.parametrize(
    "token",
    [
        "not base64!",  # base64 padding error
        base64.urlsafe_b64encode(b"o:abc").decode(),  # not a number
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # not UTF-8
        base64.urlsafe_b64encode(b"o:-5").decode(),  # negative offset
        pagination.encode_token(2**63),  # beyond what a SQL OFFSET holds
    ],
)
def test_forged_tokens_are_refused_naming_page_token(token):
    with pytest.raises(InvalidArgument) as caught:
        pagination.decode_token(token)
    assert caught.value.field == "page_token"


def test_next_token_only_when_an_extra_row_was_fetched():
    assert pagination.next_token(offset=100, size=50, fetched=50) == ""
    assert pagination.next_token(offset=100, size=50, fetched=10) == ""
    assert pagination.decode_token(pagination.next_token(offset=100, size=50, fetched=51)) == 150
