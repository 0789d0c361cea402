"""A minimal HTTP/1.1 keep-alive client for load generation.

httpx spends about 3 ms of client CPU per request on this machine, which on
2 shared cores is taken from the stack being measured and shows up in its
latency. The benchmarks only send prepared bodies and read back status and
body, so they use this instead: one request at a time per connection, and
responses with a Content-Length (what the gateway sends).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, key: str):
        self._reader = reader
        self._writer = writer
        self._head = f"Host: {host}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"

    @classmethod
    async def open(cls, url: str, key: str) -> Connection:
        parts = urlparse(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, parts.netloc, key)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """The status and body of a POST answered on this connection."""
        return await self.request("POST", path, body)

    async def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[int, bytes]:
        """The status and body of a request answered on this connection;
        `headers` are more header lines, each ending with CRLF."""
        head = f"{method} {path} HTTP/1.1\r\n{self._head}{headers}Content-Length: {len(body)}\r\n\r\n"
        self._writer.write(head.encode() + body)
        reply = await self._reader.readuntil(b"\r\n\r\n")
        lines = reply.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()
