"""Waiting for a process of the stack to serve: a gRPC service's health, the
gateway's /health, nats-server's port, PostgreSQL taking connections.

Each check retries every `INTERVAL` seconds and raises TimeoutError after
`timeout`; the supervisor stops waiting earlier when the process exits.
"""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

INTERVAL = 0.1  # seconds between two looks
# A channel waits longer and longer between connection attempts to a server
# that is not up yet (1 s growing to 2 min by default), which would hide for
# seconds a service that came up meanwhile.
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]


def _deadline(timeout: float) -> float:
    return asyncio.get_running_loop().time() + timeout


def _past(deadline: float) -> bool:
    return asyncio.get_running_loop().time() > deadline


async def wait_serving(address: str, timeout: float = 60) -> None:
    """Returns once the gRPC service at `address` reports SERVING."""
    deadline = _deadline(timeout)
    async with grpc.aio.insecure_channel(address, options=RECONNECT) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if _past(deadline):
                raise TimeoutError(f"service at {address} not serving after {timeout}s")
            await asyncio.sleep(INTERVAL)


async def wait_http(url: str, timeout: float = 60) -> None:
    """Returns once GET `url` answers 200."""
    deadline = _deadline(timeout)
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(url, timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if _past(deadline):
                raise TimeoutError(f"{url} not answering after {timeout}s")
            await asyncio.sleep(INTERVAL)


async def wait_tcp(port: int, timeout: float = 60) -> None:
    """Returns once something accepts connections on 127.0.0.1:`port`."""
    deadline = _deadline(timeout)
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            pass
        else:
            writer.close()
            await writer.wait_closed()
            return
        if _past(deadline):
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")
        await asyncio.sleep(INTERVAL)


async def wait_postgres(url: str, timeout: float = 60) -> None:
    """Returns once PostgreSQL at `url` takes a connection: its port opens
    before crash recovery ends, while it still answers "the database system
    is starting up"."""
    deadline = _deadline(timeout)
    while True:
        try:
            conn = await asyncpg.connect(url, timeout=1)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            pass
        else:
            await conn.close()
            return
        if _past(deadline):
            raise TimeoutError(f"PostgreSQL at {url} not taking connections after {timeout}s")
        await asyncio.sleep(INTERVAL)
