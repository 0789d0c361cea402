"""A webhook endpoint as a sink: the announcement's payload POSTed (the very
bytes stored) with the Standard Webhooks headers, through one HTTP client
per process (its connections pooled), within the endpoint deadline, never
following a redirect. Every connection it opens goes to an address checked
as it is opened (webhook_urls.GuardedBackend).

A 2xx answer is a success. A 410 Gone is a permanent failure: the receiver
says the URL is gone for good, so the delivery is not retried (the endpoint
stays enabled; failing on, it is disabled like any other)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import httpcore
import httpx

from services.common.timestamps import utcnow
from services.payments.sinks import Outgoing, Sent
from services.payments.webhook_signing import signature
from services.payments.webhook_urls import GuardedBackend, Refused

USER_AGENT = "bxb-webhooks/1.0 (+https://github.com/bxb-billing/bxb)"
SNIPPET_CHARS = 500  # of the answer's body, kept with the attempt
SNIPPET_BYTES = 4 * SNIPPET_CHARS  # read at most: a receiver's large answer is not read whole
GONE = 410


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a pool whose connections GuardedBackend opens
    (httpx takes no network backend of its own, so the pool is replaced)."""

    def __init__(self, backend: GuardedBackend, limits: httpx.Limits):
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def client(allow_private: bool, timeout: float, connections: int) -> httpx.AsyncClient:
    """The process's client for webhooks: `connections` at most (the sender's requests in flight)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        transport=GuardedTransport(GuardedBackend(allow_private), limits),
        timeout=timeout,
        follow_redirects=False,
        headers={"user-agent": USER_AGENT},
        trust_env=False,
    )


class WebhookSink:
    """One endpoint: its URL and the secrets signing now (the current one, and the previous during an overlap)."""

    def __init__(self, http: httpx.AsyncClient, url: str, secrets: Sequence[str], timeout: float):
        self.http = http
        self.url = url
        self.secrets = secrets
        self.timeout = timeout  # the whole attempt's deadline, besides the client's per-phase ones

    async def send(self, outgoing: Outgoing) -> Sent:
        body = outgoing.payload.encode()
        now = utcnow()
        headers = {
            "content-type": "application/json",
            "webhook-id": outgoing.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature(self.secrets, outgoing.event_id, now, body),
        }
        start = time.monotonic()

        def latency() -> int:
            return round((time.monotonic() - start) * 1000)

        try:
            async with (
                asyncio.timeout(self.timeout),
                self.http.stream("POST", self.url, content=body, headers=headers) as answer,
            ):
                head = b""
                async for chunk in answer.aiter_bytes():
                    head += chunk
                    if len(head) >= SNIPPET_BYTES:
                        break
        except Refused as error:
            return Sent(False, latency_ms=latency(), error=f"not sent: {error}")
        except (TimeoutError, httpx.TimeoutException):
            return Sent(False, latency_ms=latency(), error=f"no answer within {self.timeout:g} s")
        except httpx.HTTPError as error:
            return Sent(False, latency_ms=latency(), error=f"{type(error).__name__}: {error}"[:1000])
        status = answer.status_code
        return Sent(
            200 <= status < 300,
            status_code=status,
            latency_ms=latency(),
            response_snippet=head.decode("utf-8", "replace")[:SNIPPET_CHARS],
            error="" if 200 <= status < 300 else f"the receiver answered {status}",
            permanent=status == GONE,
        )
