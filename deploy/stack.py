"""`make run`: the whole bxb stack on one machine.

Starts embedded PostgreSQL and nats-server (unless BXB_*_DATABASE_URL and
BXB_NATS_URL point at real ones), the four services and the gateway, each
its own process under the supervisor (a process that exits is restarted);
prints the URL, an API key and each service's gRPC address; stops everything
on Ctrl-C or SIGTERM.
Data lives in BXB_HOME (default ./.bxb) and survives restarts, its owner's
only: directories 0700, files 0600 (the processes run with umask 077).
The internal gRPC ports take mutual TLS: on first start `make run` makes a
local CA and one certificate for the stack's processes in BXB_HOME/tls
(deploy/certificates.py) and sets BXB_TLS_DIR to it, unless the environment
sets BXB_TLS_DIR (empty: plaintext with the service token, services/common/trust.py).
The embedded PostgreSQL asks for a password, kept in BXB_HOME/postgres_password.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from deploy import certificates
from deploy.embedded import PRIVATE, Nats, Postgres, free_port, private
from deploy.readiness import wait_http, wait_postgres, wait_serving, wait_tcp
from deploy.supervisor import Child, Supervisor
from services.catalog.organizations import DEFAULT_ORGANIZATION
from services.common import config, tenancy

SERVICES = ("catalog", "metering", "invoicing", "payments")
DATABASES = ("catalog", "invoicing", "payments")


def kept_secret(home: Path, env: dict[str, str], variable: str, prefix: str = "") -> str:
    """The environment's `variable` (BXB_API_KEY, BXB_SECRET_KEY), else the
    value this home was given on its first run, kept private in a file named
    after it (api_key, secret_key), so that restarts keep keys and tokens."""
    if env.get(variable):
        return env[variable]
    path = home / variable.removeprefix("BXB_").lower()
    if not path.exists():
        with open(path, "w", opener=private) as out:
            out.write(prefix + secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def secure(home: Path, env: dict[str, str]) -> None:
    """Sets BXB_TLS_DIR to the home's certificates (made on first call),
    unless `env` sets it (empty: no TLS)."""
    if "BXB_TLS_DIR" not in env:
        env["BXB_TLS_DIR"] = str(certificates.ensure(home / "tls"))


def private_directory(path: Path) -> None:
    """Creates `path` if missing; its owner's only."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def banner(url: str, key: str, addresses: dict[str, str], stripe: bool = False) -> str:
    """What `make run` prints once the stack is up: the gateway's URL, the
    API key, the URL of the default organization's Stripe webhooks when
    BXB_STRIPE_API_KEY gives it an account (`stripe`), and where each
    service answers gRPC (called directly, a service takes the organization
    from metadata; see README)."""
    width = max(map(len, addresses))
    services = "".join(f"  {name:<{width}}  {address}\n" for name, address in addresses.items())
    webhooks = f"Stripe webhooks: {url}/v1/webhooks/stripe/{DEFAULT_ORGANIZATION}\n\n" if stripe else ""
    return (
        f"\nbxb is running at {url}\nAPI key: {key}\n\n  export BXB_API_KEY={key}\n\n{webhooks}"
        f"gRPC services (metadata {tenancy.METADATA_KEY}: <organization id>):\n{services}"
    )


def metrics_listing(url: str, addresses: dict[str, str]) -> str:
    """Where each process serves Prometheus metrics: the gateway on its own
    port, each service at its BXB_<SVC>_METRICS_LISTEN."""
    width = max(map(len, ["gateway", *addresses]))
    services = "".join(f"  {name:<{width}}  http://{address}/metrics\n" for name, address in addresses.items())
    return f"Prometheus metrics (GET /metrics):\n  {'gateway':<{width}}  {url}/metrics\n{services}"


class Stack:
    """The stack's processes under one supervisor (deploy/supervisor.py)."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home = home
        self.env = env
        self.postgres: Postgres | None = None
        self.nats: Nats | None = None
        self.supervisor = Supervisor(home / "pids.json")

    async def start(self) -> tuple[str, str]:
        env = self.env
        await self.start_servers()
        private_directory(self.home / "logs")
        for name in SERVICES:
            env.setdefault(f"BXB_{name.upper()}_ADDRESS", f"127.0.0.1:{free_port()}")
            env.setdefault(f"BXB_{name.upper()}_METRICS_LISTEN", f"127.0.0.1:{free_port()}")
        env.setdefault("BXB_CHDB_PATH", str(self.home / "clickhouse"))
        key = env["BXB_API_KEY"] = kept_secret(self.home, env, "BXB_API_KEY", prefix="bxb_sk_")
        env["BXB_SECRET_KEY"] = kept_secret(self.home, env, "BXB_SECRET_KEY")
        await self.supervisor.start(*(self.service(name) for name in SERVICES))
        env.setdefault("BXB_GATEWAY_PORT", "8080")
        url = f"http://{env.get('BXB_GATEWAY_HOST', '127.0.0.1')}:{env['BXB_GATEWAY_PORT']}"
        await self.supervisor.start(self._process("gateway", "gateway", partial(wait_http, url + "/health")))
        return url, key

    async def start_servers(self) -> None:
        """Starts embedded PostgreSQL for the databases without a
        BXB_*_DATABASE_URL and embedded NATS without BXB_NATS_URL."""
        env = self.env
        private_directory(self.home)
        missing = [db for db in DATABASES if not env.get(f"BXB_{db.upper()}_DATABASE_URL")]
        if missing:
            port = int(env["BXB_POSTGRES_PORT"]) if env.get("BXB_POSTGRES_PORT") else None
            password = kept_secret(self.home, env, "BXB_POSTGRES_PASSWORD")
            self.postgres = postgres = Postgres(self.home / "postgres", port=port, password=password)
            await asyncio.to_thread(postgres.init)
            ready = partial(wait_postgres, postgres.url())
            log = postgres.data_dir / "server.log"
            await self.supervisor.start(Child("postgres", postgres.spawn, ready, log, signal.SIGINT))  # fast shutdown
            for db in missing:
                await postgres.create_database(f"bxb_{db}")
                env[f"BXB_{db.upper()}_DATABASE_URL"] = postgres.url(f"bxb_{db}")
        if not env.get("BXB_NATS_URL"):
            port = int(env["BXB_NATS_PORT"]) if env.get("BXB_NATS_PORT") else None
            self.nats = nats = Nats(self.home / "nats", port=port)
            await self.supervisor.start(
                Child("nats", nats.spawn, partial(wait_tcp, nats.port), nats.data_dir / "server.log")
            )
            env["BXB_NATS_URL"] = nats.url

    def addresses(self) -> dict[str, str]:
        """Each service's gRPC address, in start order."""
        return {name: self.env[f"BXB_{name.upper()}_ADDRESS"] for name in SERVICES}

    def metrics_addresses(self) -> dict[str, str]:
        """Where each service serves /metrics, in start order."""
        return {name: self.env[f"BXB_{name.upper()}_METRICS_LISTEN"] for name in SERVICES}

    def service(self, name: str) -> Child:
        """A service's process, ready once its gRPC health says SERVING."""
        address, tls_dir = self.env[f"BXB_{name.upper()}_ADDRESS"], self.env.get("BXB_TLS_DIR", "")
        return self._process(name, f"services.{name}", partial(wait_serving, address, tls_dir=tls_dir))

    def _process(self, name: str, module: str, ready: Callable[[], Awaitable[None]]) -> Child:
        log = self.home / "logs" / f"{name}.log"

        def spawn() -> subprocess.Popen[bytes]:
            with open(log, "ab", opener=private) as output:  # the child writes to its own copy
                os.fchmod(output.fileno(), 0o600)  # one made before files were private
                return subprocess.Popen(
                    [sys.executable, "-m", module], env=self.env, stdout=output, stderr=subprocess.STDOUT,
                    start_new_session=True, umask=PRIVATE,
                )  # fmt: skip

        return Child(name, spawn, ready, log)

    async def stop_service(self, name: str) -> None:
        """Stops one service for good (SIGTERM, graceful), leaving the rest running."""
        if name not in self.supervisor.children:
            raise KeyError(name)
        await self.supervisor.stop(name)

    async def start_service(self, name: str) -> None:
        """Starts a stopped service again and waits until it serves."""
        await self.supervisor.start(self.service(name))

    async def stop(self, timeout: float = 20) -> None:
        """Stops the gateway, then the services (SIGTERM, killed if still
        running after `timeout` seconds), then the embedded servers."""
        await self.supervisor.stop("gateway", timeout=timeout)
        await self.supervisor.stop(*SERVICES, timeout=timeout)
        await self.supervisor.stop("nats", "postgres", timeout=timeout)


async def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s stack %(levelname)s: %(message)s")
    home = Path(config.env_str("BXB_HOME", ".bxb")).resolve()
    env = dict(os.environ, BXB_HOME=str(home))
    private_directory(home)
    secure(home, env)
    stack = Stack(home, env)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        url, key = await stack.start()
        print(banner(url, key, stack.addresses(), stripe=bool(stack.env.get("BXB_STRIPE_API_KEY"))), flush=True)
        print(metrics_listing(url, stack.metrics_addresses()), flush=True)
        print(f"data in {home}, logs in {home / 'logs'}, PIDs in {stack.supervisor.pids_file}", flush=True)
        print("a process that exits is restarted; Ctrl-C stops everything\n", flush=True)
        await stopping.wait()
        return 0
    finally:
        await stack.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
