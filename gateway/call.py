"""What every /v1 endpoint shares: reading a JSON body within its size limit
and answering JSON."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.errors import ApiError, invalid
from gateway.json_body import parse_json


class Json(JSONResponse):
    """A JSON answer written by orjson: json.dumps cost a batch of 500 events
    a tenth of the gateway's time. What orjson refuses (an integer beyond 64
    bits, a non-string key) is written as JSONResponse writes it."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:  # orjson.JSONEncodeError is one
            return super().render(content)


def json(data: Any, status: int = 200) -> JSONResponse:
    return Json(data, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "INVALID_ARGUMENT", "BODY_TOO_LARGE", f"the body exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "INVALID_ARGUMENT", "BODY_TOO_LARGE", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, required: bool = True) -> Any:
    """The request's JSON body (bxb's limit on its size, BXB_MAX_BODY_BYTES);
    an empty one is MISSING_BODY when `required`, else reads as `{}`."""
    raw = await read_body(request, request.app.state.settings.max_body_bytes)
    if not raw.strip():
        if required:
            raise invalid("a JSON body is required", "", "MISSING_BODY")
        return {}
    return parse_json(raw)
