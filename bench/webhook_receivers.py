"""Webhook receivers for the bench, in a process of their own: a fast one
(answers 204 at once, keeps each `webhook-id`'s arrival time, and by the
customer name an event carries, serves them at GET /stats) and a black hole (takes the request, never answers: the sender
gives up at its deadline).

Usage: python -m bench.webhook_receivers FAST_PORT HOLE_PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


class Fast:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}  # webhook-id: wall-clock time of its first arrival
        self.named: dict[str, float] = {}  # data.customer.name: the same (the bench's marker of a change)
        self.requests = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.time()
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if lines[0].startswith("GET /stats"):
                    stats = {"requests": self.requests, "arrivals": self.arrivals, "named": self.named}
                    body = json.dumps(stats).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
                else:
                    self.requests += 1
                    self.arrivals.setdefault(headers.get("webhook-id", ""), now)
                    name = json.loads(body).get("data", {}).get("customer", {}).get("name")
                    if name:
                        self.named.setdefault(name, now)
                    writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.read()  # until the sender hangs up at its deadline
    finally:
        writer.close()


async def main(fast_port: int, hole_port: int) -> None:
    fast = Fast()
    servers = [
        await asyncio.start_server(fast.serve, "127.0.0.1", fast_port),
        await asyncio.start_server(hole, "127.0.0.1", hole_port),
    ]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
