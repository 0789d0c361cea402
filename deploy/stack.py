"""`make run`: the whole bxb stack on one machine.

Starts embedded PostgreSQL and nats-server (unless BXB_*_DATABASE_URL and
BXB_NATS_URL point at real ones), the four services and the gateway, each
its own process under the supervisor (a process that exits is restarted);
prints the URL, an API key and each service's gRPC address; stops everything
on Ctrl-C or SIGTERM.
BXB_REPLICAS ("metering=2,invoicing=2,catalog=2,payments=2,gateway=2") runs
that many processes of a service ("metering-1", "metering-2"; each listens
on its own port, BXB_<SVC>_ADDRESS lists them all, and peers balance over
them) and that many gateways (BXB_GATEWAY_PORT, +1, ...); one of each by
default. Metering replicas share one ClickHouse server (BXB_CLICKHOUSE_URL):
embedded chdb belongs to one process.
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
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

from deploy import certificates
from deploy.embedded import NATS_USER, PRIVATE, Nats, Postgres, free_port, private
from deploy.readiness import wait_http, wait_postgres, wait_serving, wait_tcp
from deploy.supervisor import Child, Supervisor
from services.catalog.organizations import DEFAULT_ORGANIZATION
from services.common import config, tenancy

SERVICES = ("catalog", "metering", "invoicing", "payments")
DATABASES = ("catalog", "invoicing", "payments")
GATEWAY = "gateway"
MAX_REPLICAS = 16


def replicas(env: dict[str, str]) -> dict[str, int]:
    """How many processes of each service and of the gateway BXB_REPLICAS
    asks for (one each by default); exits naming what it cannot take."""
    counts = dict.fromkeys((*SERVICES, GATEWAY), 1)
    raw = env.get("BXB_REPLICAS", "")
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, _, count = item.partition("=")
        name = name.strip()
        if name not in counts:
            raise SystemExit(f"BXB_REPLICAS: unknown service {name!r} in {raw!r} (one of {', '.join(counts)})")
        if not count.strip().isdigit() or not 1 <= int(count) <= MAX_REPLICAS:
            raise SystemExit(f"BXB_REPLICAS: {name} must be a count from 1 to {MAX_REPLICAS}, got {count!r}")
        counts[name] = int(count)
    if counts["metering"] > 1 and not env.get("BXB_CLICKHOUSE_URL"):
        raise SystemExit("BXB_REPLICAS: metering replicas need BXB_CLICKHOUSE_URL, a ClickHouse server they share")
    return counts


def replica_names(name: str, count: int) -> list[str]:
    """The supervisor's names for a service's processes: its own name when
    it runs alone (as before replicas), else name-1, name-2, ..."""
    return [name] if count == 1 else [f"{name}-{i}" for i in range(1, count + 1)]


def kept_secret(home: Path, env: dict[str, str], variable: str, prefix: str = "") -> str:
    """The environment's `variable` (BXB_API_KEY, BXB_SECRET_KEY,
    BXB_NATS_PASSWORD), else the value this home was given on its first run,
    kept private in a file named after it (api_key, secret_key,
    nats_password), so that restarts keep keys and tokens."""
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


def banner(url: str, key: str, addresses: dict[str, str], stripe: bool = False, others: Sequence[str] = ()) -> str:
    """What `make run` prints once the stack is up: the gateway's URL (and
    the `others` gateways' when it runs several), the
    API key, the URL of the default organization's Stripe webhooks when
    BXB_STRIPE_API_KEY gives it an account (`stripe`), and where each
    service answers gRPC (called directly, a service takes the organization
    from metadata; see README)."""
    width = max(map(len, addresses))
    services = "".join(f"  {name:<{width}}  {address}\n" for name, address in addresses.items())
    also = f" (and {', '.join(others)})" if others else ""
    webhooks = f"Stripe webhooks: {url}/v1/webhooks/stripe/{DEFAULT_ORGANIZATION}\n\n" if stripe else ""
    return (
        f"\nbxb is running at {url}{also}\nAPI key: {key}\n\n  export BXB_API_KEY={key}\n\n{webhooks}"
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
        self.replicas = replicas(env)
        self.postgres: Postgres | None = None
        self.nats: Nats | None = None
        self.supervisor = Supervisor(home / "pids.json")
        self.listen: dict[str, str] = {}  # where each service process listens, by its name
        self.metrics: dict[str, str] = {}  # where each service process serves /metrics, by its name
        self.urls: list[str] = []  # each gateway's

    async def start(self) -> tuple[str, str]:
        """Starts everything; the first gateway's URL and the API key."""
        env = self.env
        await self.start_servers()
        private_directory(self.home / "logs")
        for name in SERVICES:
            self.place(name)
        env.setdefault("BXB_CHDB_PATH", str(self.home / "clickhouse"))
        key = env["BXB_API_KEY"] = kept_secret(self.home, env, "BXB_API_KEY", prefix="bxb_sk_")
        env["BXB_SECRET_KEY"] = kept_secret(self.home, env, "BXB_SECRET_KEY")
        await self.supervisor.start(*(self.service(process) for process in self.listen))
        port = int(env.setdefault("BXB_GATEWAY_PORT", "8080"))
        host = env.get("BXB_GATEWAY_HOST", "127.0.0.1")
        gateways = []
        for i, name in enumerate(replica_names(GATEWAY, self.replicas[GATEWAY])):
            url = f"http://{host}:{port + i}"
            self.urls.append(url)
            ready = partial(wait_http, url + "/health")
            gateways.append(self._process(name, "gateway", ready, BXB_GATEWAY_PORT=str(port + i)))
        await self.supervisor.start(*gateways)
        return self.urls[0], key

    def place(self, service: str) -> None:
        """Gives each process of `service` its listen address and the
        service its ADDRESS (the list of them): free ports on 127.0.0.1, or
        those a given ADDRESS lists, one per replica; and each its own
        /metrics port (BXB_<SVC>_METRICS_LISTEN when it runs alone)."""
        variable = f"BXB_{service.upper()}_ADDRESS"
        names = replica_names(service, self.replicas[service])
        given_metrics = self.env.get(f"BXB_{service.upper()}_METRICS_LISTEN") if len(names) == 1 else None
        for name in names:
            self.metrics[name] = given_metrics or f"127.0.0.1:{free_port()}"
        given = self.env.get(variable)
        if given and len(names) == 1:  # one process: where it is dialled, unless told where to listen
            own = self.env.get(f"BXB_{service.upper()}_LISTEN")
            self.listen[service] = own or config.listen_for(given, config.DEFAULT_PORTS[service])
            return
        addresses = given.split(",") if given else [f"127.0.0.1:{free_port()}" for _ in names]
        if len(addresses) != len(names) or not all(map(config.host_port, addresses)):
            raise SystemExit(f"{variable} must list {len(names)} host:port, one per replica, got {given!r}")
        self.listen.update(zip(names, addresses, strict=True))
        self.env[variable] = ",".join(addresses)

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
            # Only who has the password (kept in BXB_HOME) publishes, so no one forges payment_updated.
            port = int(env["BXB_NATS_PORT"]) if env.get("BXB_NATS_PORT") else None
            user, password = env.get("BXB_NATS_USER") or NATS_USER, kept_secret(self.home, env, "BXB_NATS_PASSWORD")
            # Over TLS too when the stack's processes have certificates (BXB_TLS_DIR).
            tls_dir = Path(env["BXB_TLS_DIR"]) if env.get("BXB_TLS_DIR") else None
            self.nats = nats = Nats(self.home / "nats", port=port, user=user, password=password, tls_dir=tls_dir)
            await self.supervisor.start(
                Child("nats", nats.spawn, partial(wait_tcp, nats.port), nats.data_dir / "server.log")
            )
            env.update(BXB_NATS_URL=nats.address, BXB_NATS_USER=user, BXB_NATS_PASSWORD=password)

    def addresses(self) -> dict[str, str]:
        """Each service's gRPC address (its replicas' listed), in start order."""
        return {name: self.env[f"BXB_{name.upper()}_ADDRESS"] for name in SERVICES}

    def metrics_addresses(self) -> dict[str, str]:
        """Where each service process serves /metrics, in start order."""
        return dict(self.metrics)

    def processes(self, name: str) -> list[str]:
        """The processes a name stands for: a service's (or the gateway's)
        replicas, or one replica ("metering-2")."""
        if name in self.replicas:
            return replica_names(name, self.replicas[name])
        if name in self.listen:
            return [name]
        raise KeyError(name)

    def service(self, process: str) -> Child:
        """A service's process, ready once its gRPC health says SERVING."""
        service = process.split("-")[0]
        listen = self.listen[process]
        ready = partial(wait_serving, listen, tls_dir=self.env.get("BXB_TLS_DIR", ""))
        own = {f"BXB_{service.upper()}_LISTEN": listen, f"BXB_{service.upper()}_METRICS_LISTEN": self.metrics[process]}
        return self._process(process, f"services.{service}", ready, **own)

    def _process(self, name: str, module: str, ready: Callable[[], Awaitable[None]], **own: str) -> Child:
        """A process of the stack: the stack's environment plus its `own`."""
        log = self.home / "logs" / f"{name}.log"

        def spawn() -> subprocess.Popen[bytes]:
            with open(log, "ab", opener=private) as output:  # the child writes to its own copy
                os.fchmod(output.fileno(), 0o600)  # one made before files were private
                return subprocess.Popen(
                    [sys.executable, "-m", module], env={**self.env, **own}, stdout=output, stderr=subprocess.STDOUT,
                    start_new_session=True, umask=PRIVATE,
                )  # fmt: skip

        return Child(name, spawn, ready, log)

    async def stop_service(self, name: str) -> None:
        """Stops a service (every replica) or one replica for good (SIGTERM,
        graceful), leaving the rest running."""
        processes = [process for process in self.processes(name) if process in self.supervisor.children]
        if not processes:
            raise KeyError(name)
        await self.supervisor.stop(*processes)

    async def start_service(self, name: str) -> None:
        """Starts a stopped service (or replica) again and waits until it serves."""
        await self.supervisor.start(*(self.service(process) for process in self.processes(name)))

    async def stop(self, timeout: float = 20) -> None:
        """Stops the gateways, then the services (SIGTERM, killed if still
        running after `timeout` seconds), then the embedded servers."""
        await self.supervisor.stop(*self.processes(GATEWAY), timeout=timeout)
        await self.supervisor.stop(*self.listen, timeout=timeout)
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
        stripe = bool(stack.env.get("BXB_STRIPE_API_KEY"))
        print(banner(url, key, stack.addresses(), stripe, others=stack.urls[1:]), flush=True)
        print(metrics_listing(url, stack.metrics_addresses()), flush=True)
        print(f"data in {home}, logs in {home / 'logs'}, PIDs in {stack.supervisor.pids_file}", flush=True)
        print("a process that exits is restarted; Ctrl-C stops everything\n", flush=True)
        await stopping.wait()
        return 0
    finally:
        await stack.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
