"""`make run`: the whole bxb stack on one machine.

Starts embedded PostgreSQL and nats-server (unless BXB_*_DATABASE_URL and
BXB_NATS_URL point at real ones), the four services and the gateway, each
its own process; prints the URL and an API key; stops everything on Ctrl-C.
Data lives in BXB_HOME (default ./.bxb) and survives restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.embedded import Nats, Postgres, free_port, stop_processes
from services.common import config

SERVICES = ("catalog", "metering", "invoicing", "payments")
DATABASES = ("catalog", "invoicing", "payments")


def api_key(home: Path, env: dict[str, str]) -> str:
    """BXB_API_KEY, else the key this home was given on its first run."""
    if env.get("BXB_API_KEY"):
        return env["BXB_API_KEY"]
    path = home / "api_key"
    if not path.exists():
        path.write_text("bxb_sk_" + secrets.token_urlsafe(32) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


async def wait_serving(address: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"service at {address} not serving after {timeout}s")
            await asyncio.sleep(0.1)


async def wait_http(url: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(url, timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{url} not answering after {timeout}s")
            await asyncio.sleep(0.1)


class Stack:
    def __init__(self, home: Path, env: dict[str, str]):
        self.home = home
        self.env = env
        self.postgres: Postgres | None = None
        self.nats: Nats | None = None
        self.children: list[tuple[str, subprocess.Popen]] = []

    async def start(self) -> tuple[str, str]:
        env = self.env
        self.home.mkdir(parents=True, exist_ok=True)
        await self.start_servers()
        for name in SERVICES:
            env.setdefault(f"BXB_{name.upper()}_ADDRESS", f"127.0.0.1:{free_port()}")
        env.setdefault("BXB_CHDB_PATH", str(self.home / "clickhouse"))
        key = api_key(self.home, env)
        env["BXB_API_KEY"] = key
        (self.home / "logs").mkdir(exist_ok=True)
        for name in SERVICES:
            self._spawn(name)
        for name in SERVICES:
            await wait_serving(env[f"BXB_{name.upper()}_ADDRESS"])
        env.setdefault("BXB_GATEWAY_PORT", "8080")
        self._spawn("gateway")
        url = f"http://{env.get('BXB_GATEWAY_HOST', '127.0.0.1')}:{env['BXB_GATEWAY_PORT']}"
        await wait_http(url + "/health")
        return url, key

    async def start_servers(self) -> None:
        """Starts embedded PostgreSQL for the databases without a
        BXB_*_DATABASE_URL and embedded NATS without BXB_NATS_URL."""
        env = self.env
        missing = [db for db in DATABASES if not env.get(f"BXB_{db.upper()}_DATABASE_URL")]
        if missing:
            port = int(env["BXB_POSTGRES_PORT"]) if env.get("BXB_POSTGRES_PORT") else None
            self.postgres = Postgres(self.home / "postgres", port=port)
            self.postgres.start()
            for db in missing:
                await self.postgres.create_database(f"bxb_{db}")
                env[f"BXB_{db.upper()}_DATABASE_URL"] = self.postgres.url(f"bxb_{db}")
        if not env.get("BXB_NATS_URL"):
            port = int(env["BXB_NATS_PORT"]) if env.get("BXB_NATS_PORT") else None
            self.nats = Nats(self.home / "nats", port=port)
            self.nats.start()
            env["BXB_NATS_URL"] = self.nats.url

    def _spawn(self, name: str) -> None:
        module = "gateway" if name == "gateway" else f"services.{name}"
        log = open(self.home / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        process = subprocess.Popen(
            [sys.executable, "-m", module], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children.append((name, process))

    def stop_service(self, name: str) -> None:
        """Stops one service (SIGTERM, graceful), leaving the rest running."""
        for index, (child, process) in enumerate(self.children):
            if child == name:
                process.send_signal(signal.SIGTERM)
                process.wait(20)
                del self.children[index]
                return
        raise KeyError(name)

    async def start_service(self, name: str) -> None:
        """Starts a stopped service again and waits until it serves."""
        self._spawn(name)
        await wait_serving(self.env[f"BXB_{name.upper()}_ADDRESS"])

    def exited(self) -> str:
        """The name of a child that died, or ""."""
        return next((name for name, process in self.children if process.poll() is not None), "")

    def stop(self, timeout: float = 20) -> None:
        """Stops the gateway and the services (SIGTERM, killed if still running
        after `timeout` seconds), then the embedded servers."""
        stop_processes((process for _, process in reversed(self.children)), signal.SIGTERM, timeout)
        self.children.clear()
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()


async def main() -> int:
    home = Path(config.env_str("BXB_HOME", ".bxb")).resolve()
    stack = Stack(home, dict(os.environ, BXB_HOME=str(home)))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        url, key = await stack.start()
        print(f"\nbxb is running at {url}\nAPI key: {key}\n\n  export BXB_API_KEY={key}\n", flush=True)
        print(f"data in {home}, logs in {home / 'logs'}; Ctrl-C stops everything\n", flush=True)
        while not stopping.is_set():
            died = stack.exited()
            if died:
                print(f"{died} exited; see {home / 'logs' / (died + '.log')}; stopping", file=sys.stderr)
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.5)
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
