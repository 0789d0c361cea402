"""Waiting for a process of the stack to serve: a gRPC service's health, the
gateway's /health, nats-server's port, PostgreSQL taking connections.

Each check retries every `INTERVAL` seconds and raises TimeoutError after
`timeout`; the supervisor stops waiting earlier when the process exits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import tls

INTERVAL = 0.1  # seconds between two looks
# A channel waits longer and longer between connection attempts to a server
# that is not up yet (1 s growing to 2 min by default), which would hide for
# seconds a service that came up meanwhile.
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]


async def _until(ready: Callable[[], Awaitable[bool]], timeout: float, failure: str) -> None:
    """Asks `ready` every INTERVAL seconds until it says yes; TimeoutError
    with `failure` once `timeout` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await ready():
        if loop.time() > deadline:
            raise TimeoutError(f"{failure} after {timeout}s")
        await asyncio.sleep(INTERVAL)


def _channel(address: str, tls_dir: str) -> grpc.aio.Channel:
    """A channel to `address`: mutual TLS with what `tls_dir` holds, if given."""
    material = tls.material(tls_dir)
    if material is None:
        return grpc.aio.insecure_channel(address, options=RECONNECT)
    options = [*RECONNECT, *tls.channel_options(address)]
    return grpc.aio.secure_channel(address, material.channel_credentials(), options=options)


async def wait_serving(address: str, timeout: float = 60, tls_dir: str = "") -> None:
    """Returns once the gRPC service at `address` reports SERVING; over
    mutual TLS with the certificates in `tls_dir` when given (tls.py)."""
    async with _channel(address, tls_dir) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            try:
                # typeshed's HealthStub declares no methods.
                reply: health_pb2.HealthCheckResponse = await stub.Check(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.aio.AioRpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        await _until(serving, timeout, f"service at {address} not serving")


async def wait_http(url: str, timeout: float = 60) -> None:
    """Returns once GET `url` answers 200."""
    async with httpx.AsyncClient() as client:

        async def answering() -> bool:
            try:
                return (await client.get(url, timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

        await _until(answering, timeout, f"{url} not answering")


async def wait_tcp(port: int, timeout: float = 60) -> None:
    """Returns once something accepts connections on 127.0.0.1:`port`."""

    async def listening() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    await _until(listening, timeout, f"nothing listens on 127.0.0.1:{port}")


async def wait_postgres(url: str, timeout: float = 60) -> None:
    """Returns once PostgreSQL at `url` takes a connection: its port opens
    before crash recovery ends, while it still answers "the database system
    is starting up"."""

    async def taking() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=1)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    await _until(taking, timeout, f"PostgreSQL at {url} not taking connections")
