"""`python -m services.catalog` as a real process: configured from the
environment, it registers the operator's BXB_API_KEY and stops on a signal."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bxb.catalog.v1 import organizations_pb2, organizations_pb2_grpc
from deploy.embedded import Nats, free_port
from services.catalog.organizations import DEFAULT_ORGANIZATION
from services.common import trust
from tests.conftest import Infra, unique

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory):
    """A NATS of its own, so this process's events stay out of the stack's streams."""
    server = Nats(tmp_path_factory.mktemp("catalog-nats"))
    server.start()
    yield server
    server.stop()


async def spawn(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.catalog", cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=out
        )


async def wait_serving(address: str, process: asyncio.subprocess.Process, log: Path, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            assert process.returncode is None, f"exited with {process.returncode}:\n{log.read_text()}"
            try:
                response = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert asyncio.get_running_loop().time() < deadline, log.read_text()
            await asyncio.sleep(0.1)


async def test_the_catalog_process_serves_the_operator_key_and_stops_on_sigint(infra: Infra, own_nats: Nats, tmp_path):
    database = unique("catalog_proc")
    await infra.postgres.create_database(database)
    port = free_port()
    secret = "operator-" + secrets.token_hex(16)
    log = tmp_path / "catalog.log"
    process = await spawn(
        {
            "BXB_CATALOG_ADDRESS": f"127.0.0.1:{port}",
            "BXB_CATALOG_DATABASE_URL": infra.postgres.url(database).replace("postgresql://", "postgresql+asyncpg://"),
            "BXB_NATS_URL": own_nats.url,
            "BXB_API_KEY": secret,
        },
        log,
    )
    try:
        await wait_serving(f"127.0.0.1:{port}", process, log)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = organizations_pb2_grpc.OrganizationServiceStub(channel)
            auth = await stub.AuthenticateApiKey(
                organizations_pb2.AuthenticateApiKeyRequest(secret=secret), metadata=trust.service_metadata()
            )
        assert auth.organization_id == DEFAULT_ORGANIZATION
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = log.read_text()
    assert f"catalog listening on port {port}" in text
    assert "catalog shutting down" in text


async def test_the_catalog_process_refuses_a_database_url_that_is_not_postgres(tmp_path):
    log = tmp_path / "catalog.log"
    process = await spawn({"BXB_CATALOG_DATABASE_URL": "mysql://root@127.0.0.1/bxb"}, log)
    assert await asyncio.wait_for(process.wait(), 60) != 0
    assert "not a PostgreSQL URL: 'mysql://root@127.0.0.1/bxb'" in log.read_text()
