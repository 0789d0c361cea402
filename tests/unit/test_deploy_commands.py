"""The service command line (services/common/commands.py), where a serving
process runs its migration (before on_start, unless told not to), and the
plaintext health-only port probes read (services/common/health_port.py)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import commands, grpc_server, health_port


def test_serve_is_the_default_and_migrate_the_other_command():
    assert commands.parse("catalog", []) == "serve"
    assert commands.parse("catalog", ["serve"]) == "serve"
    assert commands.parse("catalog", ["migrate"]) == "migrate"


def test_help_names_the_commands_and_an_unknown_one_is_refused(capsys):
    with pytest.raises(SystemExit) as helped:
        commands.parse("payments", ["--help"])
    assert helped.value.code == 0
    out = capsys.readouterr().out
    assert "python -m services.payments" in out and "migrate" in out and "BXB_MIGRATE_ON_START" in out
    with pytest.raises(SystemExit) as refused:
        commands.parse("payments", ["migrat"])
    assert refused.value.code == 2
    assert "invalid choice: 'migrat'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("raw", "expected"), [("", True), ("1", True), ("true", True), (" Yes ", True), ("0", False), ("no", False)]
)
def test_migrate_on_start_reads_a_flag(monkeypatch, raw, expected):
    monkeypatch.setenv("BXB_MIGRATE_ON_START", raw)
    assert commands.migrate_on_start() is expected


def test_a_migrate_on_start_that_is_no_flag_names_the_variable(monkeypatch):
    monkeypatch.setenv("BXB_MIGRATE_ON_START", "sometimes")
    with pytest.raises(SystemExit, match="BXB_MIGRATE_ON_START must be 1 or 0, got 'sometimes'"):
        commands.migrate_on_start()


def test_migrate_on_a_service_without_a_schema_says_so():
    with pytest.raises(SystemExit, match="gateway-like has no schema to migrate"):
        commands.run("gateway-like", lambda: grpc_server.Service(name="x", registrars=[]), "127.0.0.1:0", ["migrate"])


def test_migrate_runs_the_services_migration_and_returns():
    ran: list[str] = []

    async def migrate() -> None:
        ran.append("migrate")

    commands.run("probe", lambda: grpc_server.Service(name="probe", registrars=[], migrate=migrate), "", ["migrate"])
    assert ran == ["migrate"]


@pytest.mark.parametrize("migrate_on_start", [True, False])
async def test_a_starting_server_migrates_before_on_start_only_when_asked(migrate_on_start):
    ran: list[str] = []

    async def migrate() -> None:
        ran.append("migrate")

    async def on_start() -> None:
        ran.append("on_start")

    service = grpc_server.Service(
        name="probe", registrars=[], migrate=migrate, on_start=on_start, migrate_on_start=migrate_on_start
    )
    server, port = await grpc_server.start(service, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await grpc_server.stop(service, server, grace=0)
    assert ran == (["migrate", "on_start"] if migrate_on_start else ["on_start"])


async def health_of(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status


async def test_the_health_port_tells_the_services_health_from_before_its_start_to_its_drain():
    started = asyncio.Event()
    release = asyncio.Event()

    async def on_start() -> None:
        started.set()
        await release.wait()

    service = grpc_server.Service(name="probe", registrars=[], on_start=on_start)
    probes, health_port_number = await health_port.start(service, "127.0.0.1:0")
    try:
        starting = asyncio.create_task(grpc_server.start(service, "127.0.0.1:0"))
        await started.wait()
        assert await health_of(health_port_number) == health_pb2.HealthCheckResponse.NOT_SERVING
        release.set()
        server, _ = await starting
        assert await health_of(health_port_number) == health_pb2.HealthCheckResponse.SERVING
        await grpc_server.stop(service, server, grace=0)
        assert await health_of(health_port_number) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await probes.stop(0)


def test_the_health_port_is_named_per_service(monkeypatch):
    monkeypatch.setenv("BXB_METERING_HEALTH_LISTEN", "0.0.0.0:9091")
    assert health_port.listen_address("metering") == "0.0.0.0:9091"
    assert health_port.listen_address("catalog") == ""
