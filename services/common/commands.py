"""The command line of a service process: `python -m services.<name>` serves;
`python -m services.<name> migrate` applies the service's schema (Alembic on
PostgreSQL, DDL on ClickHouse) and exits, which a deployment runs once, as a
Job, before it rolls out replicas started with BXB_MIGRATE_ON_START=0."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from services.common import config, grpc_server, health_port

FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def migrate_on_start() -> bool:
    """BXB_MIGRATE_ON_START: whether a serving process migrates first (default yes)."""
    raw = config.env_str("BXB_MIGRATE_ON_START", "1").strip().lower()
    if raw not in FLAGS:
        raise SystemExit(f"BXB_MIGRATE_ON_START must be 1 or 0, got {raw!r}")
    return FLAGS[raw]


def parse(name: str, argv: list[str] | None = None) -> str:
    """The command asked for: `serve` (the default) or `migrate`; --help explains both."""
    parser = argparse.ArgumentParser(
        prog=f"python -m services.{name}",
        description=f"The bxb {name} service, configured from BXB_* environment variables.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "migrate"],
        help="serve gRPC until SIGTERM (migrating first unless BXB_MIGRATE_ON_START=0), "
        "or apply the service's schema migrations and exit",
    )
    command: str = parser.parse_args(argv).command
    return command


def run(name: str, build: Callable[[], grpc_server.Service], address: str, argv: list[str] | None = None) -> None:
    """Runs the command `argv` asks for on the service `build` makes (built only once the command is known)."""
    command = parse(name, argv)
    service = build()
    if command == "migrate":
        if service.migrate is None:
            raise SystemExit(f"{name} has no schema to migrate")
        asyncio.run(service.migrate())
        return
    service.migrate_on_start = migrate_on_start()
    asyncio.run(serve(service, address))


async def serve(service: grpc_server.Service, address: str) -> None:
    """Serves until SIGTERM or SIGINT, with a health-only port beside when one is configured (health_port.py)."""
    health = health_port.listen_address(service.name)
    probes = (await health_port.start(service, health))[0] if health else None
    try:
        await grpc_server.run(service, address)
    finally:
        if probes is not None:
            await probes.stop(0)
