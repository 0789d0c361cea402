"""deploy/readiness.py: waiting for a gRPC service, an HTTP endpoint, a
TCP port and PostgreSQL to come up, and giving up after a timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from deploy.embedded import Postgres, free_port
from deploy.readiness import wait_http, wait_postgres, wait_serving, wait_tcp
from tests.conftest import Infra

# wait_serving


async def test_wait_serving_waits_until_the_service_reports_serving():
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    became_serving = asyncio.Event()

    async def serve_later() -> None:
        await asyncio.sleep(0.4)
        became_serving.set()
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    serving = asyncio.create_task(serve_later())
    try:
        await wait_serving(f"127.0.0.1:{port}", timeout=10)
        assert became_serving.is_set()
    finally:
        await serving
        await server.stop(None)


# wait_http


async def test_wait_http_waits_for_a_200():
    """A server that answers 503 to the first requests, then 200."""
    statuses = ["503 Service Unavailable", "503 Service Unavailable", "200 OK"]
    served: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        served.append(statuses[min(len(served), len(statuses) - 1)])
        writer.write(f"HTTP/1.1 {served[-1]}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await wait_http(f"http://127.0.0.1:{port}/health", timeout=10)
        assert served == statuses
    finally:
        server.close()


# wait_tcp


async def test_wait_tcp_waits_until_something_listens():
    port = free_port()
    servers: list[asyncio.Server] = []

    async def listen_later() -> None:
        await asyncio.sleep(0.4)
        servers.append(await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port))

    listening = asyncio.create_task(listen_later())
    try:
        await wait_tcp(port, timeout=10)
        assert servers
    finally:
        await listening
        servers[0].close()


# wait_postgres


async def test_wait_postgres_returns_once_the_server_takes_connections(infra: Infra):
    await wait_postgres(infra.postgres.url(), timeout=10)


async def test_wait_postgres_waits_for_a_server_starting_up(tmp_path: Path):
    postgres = Postgres(tmp_path / "pg", durable=False)
    await asyncio.to_thread(postgres.init)
    postgres.spawn()  # not waited for: its port opens before it takes connections
    try:
        await wait_postgres(postgres.url(), timeout=30)
        assert postgres.process.poll() is None
    finally:
        await asyncio.to_thread(postgres.stop)


# Every check gives up after its timeout with a message naming what it waited for.


@pytest.mark.parametrize(
    ("wait", "target", "failure"),
    [
        (wait_serving, "127.0.0.1:{port}", "service at 127.0.0.1:{port} not serving"),
        (wait_http, "http://127.0.0.1:{port}/health", "http://127.0.0.1:{port}/health not answering"),
        (wait_tcp, None, "nothing listens on 127.0.0.1:{port}"),
        (wait_postgres, "postgresql://postgres@127.0.0.1:{port}/postgres", "not taking connections"),
    ],
    ids=["wait_serving", "wait_http", "wait_tcp", "wait_postgres"],
)
async def test_each_check_times_out_when_nothing_answers(wait, target, failure):
    port = free_port()  # nothing listens there
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError) as timed_out:
        await wait(target.format(port=port) if target else port, timeout=0.5)
    assert failure.format(port=port) in str(timed_out.value) and str(timed_out.value).endswith("after 0.5s")
    assert 0.5 <= asyncio.get_running_loop().time() - started < 5
