"""AIP-158 paging: page size defaults and caps, tokens no client can forge
(bound to their listing and organization), replies bounded in bytes."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from services.common import pagination, tenancy
from services.common.errors import InvalidArgument


@pytest.fixture(autouse=True)
def org() -> Iterator[str]:
    token = tenancy.bind("org_a")
    yield "org_a"
    tenancy.reset(token)


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
    assert pagination.decode_token("ListThings", "") == 0


@pytest.mark.parametrize("offset", [0, 1, 50, 2**63 - 1])
def test_issued_tokens_round_trip(offset):
    token = pagination.encode_token("ListThings", offset)
    assert str(offset) not in token
    assert pagination.decode_token("ListThings", token) == offset


def refused(listing: str, token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        pagination.decode_token(listing, token)
    assert caught.value.field == "page_token"


def test_a_token_of_another_listing_or_organization_is_refused():
    token = pagination.encode_token("ListThings", 100)
    refused("ListOtherThings", token)
    other = tenancy.bind("org_b")
    try:
        refused("ListThings", token)
    finally:
        tenancy.reset(other)


@pytest.mark.parametrize(
    "token",
    [
        "not base64!",
        base64.urlsafe_b64encode(b"o:100").decode(),  # this API's old, unsigned form
        base64.urlsafe_b64encode((10**12).to_bytes(8, "big") + b"\x00" * pagination.TAG_BYTES).decode(),
        "",  # replaced below by an issued token with its offset edited
    ],
)
def test_made_up_or_edited_tokens_are_refused(token):
    if not token:
        raw = bytearray(base64.urlsafe_b64decode(pagination.encode_token("ListThings", 100) + "=="))
        raw[7] = 200  # the offset's last byte
        token = base64.urlsafe_b64encode(bytes(raw)).decode()
    refused("ListThings", token)


def items(*texts: str) -> list[StringValue]:
    return [StringValue(value=t) for t in texts]


def test_a_page_answers_its_size_and_the_next_token_only_when_more_was_fetched():
    page = pagination.Page("ListThings", 100, 2)
    kept, token = pagination.answer(page, items("a", "b", "c"))
    assert [k.value for k in kept] == ["a", "b"] and pagination.decode_token("ListThings", token) == 102
    assert pagination.answer(page, items("a", "b")) == (items("a", "b"), "")


def test_a_page_stops_at_its_byte_budget_but_answers_at_least_one(monkeypatch):
    monkeypatch.setattr(pagination, "REPLY_BYTES", 10)
    page = pagination.Page("ListThings", 0, 50)
    kept, token = pagination.answer(page, items("x" * 6, "y" * 6, "z"))  # 8 bytes each serialized
    assert [k.value for k in kept] == ["x" * 6] and pagination.decode_token("ListThings", token) == 1
    kept, _ = pagination.answer(page, items("w" * 40))
    assert len(kept) == 1  # alone above the budget: still answered
