"""A webhook receiver for tests (and the README walkthrough:
`python -m tests.webhook_receiver --port 9000 --secret whsec_...` prints each
event as it arrives, verified or not): an HTTP/1.1 server on 127.0.0.1 (keep-alive,
as bxb's pooled client uses it) that verifies each request with the
`standardwebhooks` verifier under each secret it is given, records what
arrived, and can misbehave: answer `status` (500) to the first `fail_first`
requests, wait `delay` seconds before answering (past bxb's deadline, a
black hole), or hold each request until `release` is set."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: dict[str, bool]  # per secret: whether the signature verified with it
    time: float  # time.monotonic() when it arrived

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    secrets: list[str] = field(default_factory=list)
    fail_first: int = 0
    status: int = 500  # what the first `fail_first` requests are answered
    delay: float = 0.0
    answer: bytes = b"thanks"
    received: list[Received] = field(default_factory=list)
    release: asyncio.Event | None = None  # when set on creation, each request waits for it
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0  # where it listens; 0 for any free port

    async def __aenter__(self) -> Receiver:
        self._handlers: set[asyncio.Task[Any]] = set()
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hooks"

    def ids(self) -> list[str]:
        return [r.id for r in self.received]

    def verified(self, secret: str) -> bool:
        """Whether every request arrived verified with `secret`."""
        return bool(self.received) and all(r.verified[secret] for r in self.received)

    def _verify(self, body: bytes, headers: dict[str, str]) -> dict[str, bool]:
        outcome = {}
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                outcome[secret] = True
            except WebhookVerificationError:
                outcome[secret] = False
        return outcome

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                count = len(self.received)
                self.received.append(Received(headers, body, self._verify(body, headers), time.monotonic()))
                self.arrived.set()
                if self.release is not None:
                    await self.release.wait()
                if self.delay:
                    await asyncio.sleep(self.delay)
                status = self.status if count < self.fail_first else 200
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {len(self.answer)}\r\n\r\n".encode()
                    + self.answer
                )
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            with contextlib.suppress(Exception):
                writer.close()


async def _print_forever(port: int, secrets: list[str]) -> None:
    async with Receiver(secrets=secrets, port=port) as receiver:
        print(f"listening on {receiver.url}", flush=True)
        shown = 0
        while True:
            await receiver.arrived.wait()
            receiver.arrived.clear()
            for r in receiver.received[shown:]:
                verdict = "verified" if all(r.verified.values()) and r.verified else "NOT VERIFIED"
                print(f"{verdict} {r.json.get('type')} {r.id} {r.body.decode()[:300]}", flush=True)
            shown = len(receiver.received)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Prints the webhooks bxb sends, verified with the endpoint's secret.")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret", action="append", default=[], help="an endpoint's whsec_ secret (repeatable)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_print_forever(args.port, args.secret))
