"""JSON answers are written by orjson, byte for byte as JSONResponse would."""

from __future__ import annotations

import pytest
from starlette.responses import JSONResponse

from gateway.call import json


@pytest.mark.parametrize(
    "content",
    [
        {"results": [{"status": 202, "transaction_id": "évt_1"}], "total": "127.50", "ok": True, "none": None},
        [1, "two", {"three": [3.5]}],
        {"beyond_64_bits": 2**70},  # orjson refuses: written the standard way
        {1: "a non-string key"},  # likewise
    ],
)
def test_an_answer_is_written_as_jsonresponse_writes_it(content):
    answer = json(content, 207)
    assert (answer.status_code, answer.body) == (207, JSONResponse(content).body)
    assert answer.headers["content-type"] == "application/json"
