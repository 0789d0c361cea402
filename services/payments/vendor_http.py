"""What the Baremetrics and ProfitWell clients share: one JSON request
within the account client's deadline, its failures as typed exceptions that
tell a retryable failure (5xx, 429, no answer in time, no connection) from a
refusal retrying cannot help (4xx), and an attempt's outcome as a `Sent`."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from services.common.timestamps import parse_rfc3339
from services.payments.sinks import Sent

SNIPPET = 200  # characters of an answer kept with an attempt


class VendorError(Exception):
    """A request a tool did not carry out."""

    retryable = False

    def __init__(self, message: str, status_code: int = 0, snippet: str = ""):
        super().__init__(message)
        self.message = message
        self.status_code = status_code  # 0 when no answer came
        self.snippet = snippet


class Retryable(VendorError):
    """The tool failed on its side, throttled us or did not answer in time:
    the same request may succeed later."""

    retryable = True


class Refused(VendorError):
    """The tool refused the request (4xx): sending it again cannot help."""


class Unauthorized(Refused):
    """The key was refused (401/403)."""


class Missing(Refused):
    """What the request names does not exist at the tool (404)."""


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: Any  # the parsed JSON, None when the answer is not JSON
    text: str


class JsonApi:
    """One account at one tool: `call` sends a JSON request through `http`
    (whose base URL, auth header and timeout the client set) and returns the
    answer, or raises a VendorError; `last` is the last answer received."""

    def __init__(self, http: httpx.AsyncClient, describe: Callable[[Any], str]):
        self.http = http
        self.describe = describe  # the tool's error message in an error answer's JSON
        self.last: Answer | None = None

    async def call(
        self, method: str, path: str, *, body: dict[str, Any] | None = None, params: dict[str, Any] | None = None
    ) -> Answer:
        try:
            response = await self.http.request(method, path, json=body, params=params)
        except httpx.TransportError as exc:  # timeouts included
            raise Retryable(f"{method} {path}: no answer ({type(exc).__name__}: {exc})") from exc
        text = response.text
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        answer = self.last = Answer(response.status_code, parsed, text)
        status = response.status_code
        if status < 400:
            return answer
        message = f"{method} {path}: {status} {self.describe(parsed) or text[:SNIPPET] or response.reason_phrase}"
        if status == 429 or status >= 500:
            raise Retryable(message, status, text[:SNIPPET])
        if status in (401, 403):
            raise Unauthorized(message, status, text[:SNIPPET])
        if status == 404:
            raise Missing(message, status, text[:SNIPPET])
        raise Refused(message, status, text[:SNIPPET])


async def made_or_found(make: Callable[[], Awaitable[object]], found: Callable[[], Awaitable[bool]]) -> None:
    """Makes something named by our id at a tool, idempotently: when the tool
    refuses, `found` says whether it holds it already (made by an earlier
    attempt whose answer was lost, or before a resync), which is a success;
    otherwise the refusal stands."""
    try:
        await make()
    except Refused as refused:
        try:
            there = await found()
        except Missing:
            there = False
        if not there:
            raise refused


def unix(rfc3339: str) -> int:
    """An RFC 3339 time of the public JSON as Unix seconds, as both tools take times."""
    return int(parse_rfc3339(rfc3339).timestamp())


def seconds(value: datetime) -> int:
    return int(value.timestamp())


async def attempt(api: JsonApi, work: Callable[[], Awaitable[str]]) -> Sent:
    """Runs one delivery's requests and says what they got: the last answer
    on success (or `work`'s note when nothing was sent), the failure
    otherwise (permanent for a refusal, or an announcement or answer that
    cannot be read; retryable for the rest)."""
    start = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - start) * 1000)

    try:
        note = await work()
    except VendorError as exc:
        return Sent(False, exc.status_code, elapsed(), exc.snippet, exc.message, permanent=not exc.retryable)
    except (KeyError, TypeError, ValueError) as exc:
        return Sent(False, 0, elapsed(), "", f"unreadable announcement or answer: {exc!r}", permanent=True)
    if api.last is None:
        return Sent(True, 0, elapsed(), note)
    return Sent(True, api.last.status_code, elapsed(), api.last.text[:SNIPPET])
