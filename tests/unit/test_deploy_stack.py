"""deploy/stack.py at function level: the API key a home keeps, and waiting
for a gRPC service and an HTTP endpoint to come up."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from deploy.embedded import free_port
from deploy.stack import api_key, wait_http, wait_serving

# api_key


def test_api_key_from_the_environment_wins_and_is_not_stored(tmp_path: Path):
    assert api_key(tmp_path, {"BXB_API_KEY": "bxb_sk_given"}) == "bxb_sk_given"
    assert not (tmp_path / "api_key").exists()


def test_api_key_is_made_on_the_first_run_and_kept_private(tmp_path: Path):
    key = api_key(tmp_path, {"BXB_API_KEY": ""})
    assert key.startswith("bxb_sk_") and len(key) > 40
    assert stat.S_IMODE((tmp_path / "api_key").stat().st_mode) == 0o600
    assert api_key(tmp_path, {}) == key  # the next run gets the same key


def test_api_key_already_in_the_home_is_reused(tmp_path: Path):
    (tmp_path / "api_key").write_text("bxb_sk_from_an_earlier_run\n")
    assert api_key(tmp_path, {}) == "bxb_sk_from_an_earlier_run"
    assert (tmp_path / "api_key").read_text() == "bxb_sk_from_an_earlier_run\n"


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


async def test_wait_serving_times_out_when_nothing_answers():
    address = f"127.0.0.1:{free_port()}"
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError, match=f"service at {address} not serving after 0.5s"):
        await wait_serving(address, timeout=0.5)
    assert 0.5 <= asyncio.get_running_loop().time() - started < 5


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


async def test_wait_http_times_out_when_nothing_answers():
    url = f"http://127.0.0.1:{free_port()}/health"
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError, match=f"{url} not answering after 0.5s"):
        await wait_http(url, timeout=0.5)
    assert 0.5 <= asyncio.get_running_loop().time() - started < 5
