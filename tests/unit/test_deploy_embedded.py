"""deploy/embedded.py at function level: waiting for ports, stopping child
processes, the postgres system user and data directory, connecting to a
PostgreSQL that is still coming up, finding nats-server."""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncpg
import nats
import pytest

from deploy import embedded
from deploy.embedded import (
    MAX_PAYLOAD,
    Nats,
    Postgres,
    _connect_retrying,
    free_port,
    nats_server_binary,
    open_binaries,
    prepare_data_dir,
    stop_processes,
    system_user,
    wait_for_port,
)
from tests.conftest import Infra

SLEEPER = "import time; time.sleep(60)"
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)


def python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def ignoring_sigterm() -> subprocess.Popen:
    process = python(IGNORES_SIGTERM)
    assert process.stdout.readline().strip() == "ready"  # the handler is in place
    return process


@pytest.fixture
def new_user():
    """A fresh system user name; the user is deleted afterwards if a test created it."""
    name = f"bxb_t{secrets.token_hex(4)}"
    yield name
    subprocess.run(["userdel", name], stderr=subprocess.DEVNULL, check=False)


# free_port


def test_free_port_is_below_the_ephemeral_range_and_skips_a_taken_one(monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        draws = iter([busy, 20001, 20002, 20003])
        monkeypatch.setattr(embedded._draw, "choice", lambda ports: next(draws))
        monkeypatch.setattr(embedded, "_handed", set())
        port = free_port()
    assert port in (20001, 20002, 20003)  # one of them may be in use on a busy machine
    assert embedded.PORTS.stop <= 32768


def test_free_port_never_hands_out_a_port_twice(monkeypatch: pytest.MonkeyPatch):
    # A stack draws all its ports before its servers bind them: a second draw
    # of one not bound yet would give two servers the same port.
    draws = iter([20001, 20001, 20002, 20001, 20003])
    monkeypatch.setattr(embedded._draw, "choice", lambda ports: next(draws))
    monkeypatch.setattr(embedded, "_handed", set())
    first, second = free_port(), free_port()
    assert first != second
    assert {first, second} <= {20001, 20002, 20003}  # one may be in use on a busy machine


# wait_for_port


def test_wait_for_port_returns_once_a_server_listens():
    port = free_port()
    listener = socket.socket()

    def listen() -> None:
        listener.bind(("127.0.0.1", port))
        listener.listen()

    timer = threading.Timer(0.3, listen)
    timer.start()
    try:
        started = time.monotonic()
        wait_for_port(port, 10)
        assert time.monotonic() - started >= 0.25
    finally:
        timer.join()
        listener.close()


def test_wait_for_port_fails_as_soon_as_the_process_exits():
    process = python("raise SystemExit(3)")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"exited with 3"):
        wait_for_port(free_port(), 30, process)
    assert time.monotonic() - started < 20


def test_wait_for_port_times_out_when_nothing_listens():
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"nothing listens on 127\.0\.0\.1:\d+ after 0\.3s"):
        wait_for_port(free_port(), 0.3)
    assert 0.3 <= time.monotonic() - started < 5


# stop_processes


def test_stop_processes_signals_running_processes_and_leaves_exited_ones_alone():
    exited = python("raise SystemExit(7)")
    exited.wait(30)
    running = python(SLEEPER)
    stop_processes([(None, signal.SIGTERM), (exited, signal.SIGTERM), (running, signal.SIGTERM)], 30)
    assert (exited.returncode, running.returncode) == (7, -signal.SIGTERM)


def test_stop_processes_kills_processes_that_ignore_the_signal_after_one_shared_timeout():
    stubborn = [ignoring_sigterm(), ignoring_sigterm()]
    obedient = python(SLEEPER)
    started = time.monotonic()
    stop_processes([(p, signal.SIGTERM) for p in [*stubborn, obedient]], 1)
    elapsed = time.monotonic() - started
    assert [p.returncode for p in stubborn] == [-signal.SIGKILL, -signal.SIGKILL]
    assert obedient.returncode == -signal.SIGTERM
    assert 1 <= elapsed < 1.9  # one timeout for all, not one each


def test_nats_stop_kills_a_server_that_does_not_answer_sigterm(tmp_path: Path):
    nats = Nats(tmp_path / "nats")
    nats.start()
    process = nats.process
    process.send_signal(signal.SIGSTOP)  # hung: SIGTERM stays pending
    nats.stop(timeout=0.5)
    assert process.returncode == -signal.SIGKILL and nats.process is None


def test_nats_stop_when_the_server_already_died(tmp_path: Path):
    nats = Nats(tmp_path / "nats")
    nats.start()
    process = nats.process
    process.kill()
    process.wait(30)
    nats.stop()
    assert process.returncode == -signal.SIGKILL and nats.process is None
    nats.stop()  # and again, with nothing left to stop


async def test_nats_takes_messages_up_to_its_set_limit_and_syncs_every_write(tmp_path: Path):
    durable, fast = Nats(tmp_path / "durable"), Nats(tmp_path / "fast", durable=False)
    assert "sync_interval: always" in durable.config() and "sync_interval" not in fast.config()
    durable.start()
    try:
        connection = await nats.connect(durable.url)
        try:
            assert connection.max_payload == MAX_PAYLOAD  # the server's own answer: its default is 1 MB
            await connection.publish("big", b"x" * (2 * 1024 * 1024))
            await connection.flush()
        finally:
            await connection.close()
    finally:
        durable.stop()


def test_postgres_stop_before_start_does_nothing(tmp_path: Path):
    postgres = Postgres(tmp_path / "pg")
    postgres.stop()
    assert postgres.process is None and not (tmp_path / "pg").exists()


# system_user and prepare_data_dir


def test_system_user_is_ourselves_when_not_root(monkeypatch: pytest.MonkeyPatch, new_user: str):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert system_user(new_user) is None
    with pytest.raises(KeyError):
        pwd.getpwnam(new_user)  # nothing was created


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user")
def test_system_user_as_root_creates_the_user_once(new_user: str):
    with pytest.raises(KeyError):
        pwd.getpwnam(new_user)
    assert system_user(new_user) == new_user
    uid = pwd.getpwnam(new_user).pw_uid
    assert system_user(new_user) == new_user  # already there: reused
    assert pwd.getpwnam(new_user).pw_uid == uid


def test_prepare_data_dir_for_ourselves(tmp_path: Path):
    path = tmp_path / "a" / "data"
    prepare_data_dir(path, None)
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user")
def test_prepare_data_dir_for_another_user_lets_only_that_user_in(tmp_path: Path, new_user: str):
    system_user(new_user)
    (tmp_path / "a").mkdir(mode=0o700)
    path = tmp_path / "a" / "data"
    prepare_data_dir(path, new_user)
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == pwd.getpwnam(new_user).pw_uid
    # The user can reach and write the directory through every parent.
    assert subprocess.run(["touch", str(path / "probe")], user=new_user, check=False).returncode == 0
    assert (path / "probe").stat().st_uid == pwd.getpwnam(new_user).pw_uid


def fake_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A server binary inside a private (0700) directory, as in a checkout made by mktemp -d."""
    (tmp_path / "private").mkdir(mode=0o700)
    bin_dir = tmp_path / "private" / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "postgres").write_text("")
    (bin_dir / "postgres").chmod(0o755)
    monkeypatch.setattr(embedded, "_pg_bin", lambda: bin_dir)
    return bin_dir / "postgres"


def test_open_binaries_for_ourselves_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake_binaries(tmp_path, monkeypatch)
    open_binaries(None)
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user")
def test_open_binaries_lets_the_postgres_user_reach_binaries_in_a_private_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_user: str
):
    binary = fake_binaries(tmp_path, monkeypatch)
    system_user(new_user)
    assert subprocess.run(["test", "-x", str(binary)], user=new_user, check=False).returncode != 0
    open_binaries(new_user)
    assert subprocess.run(["test", "-x", str(binary)], user=new_user, check=False).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user")
def test_initdb_runs_from_a_private_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_user: str):
    """initdb, run as the server's user, is reached before the server is ever
    started (a fresh clone in a mktemp -d directory failed here)."""
    initdb = fake_binaries(tmp_path, monkeypatch).parent / "initdb"
    initdb.write_text('#!/bin/sh\ntouch "$2/PG_VERSION"\n')  # initdb -D <dir> ...
    initdb.chmod(0o755)
    system_user(new_user)
    monkeypatch.setattr(embedded, "system_user", lambda: new_user)
    postgres = Postgres(tmp_path / "data")
    postgres.init()
    assert (tmp_path / "data" / "PG_VERSION").exists()


# _connect_retrying


async def test_connect_retrying_gives_up_after_its_attempts():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    started = asyncio.get_running_loop().time()
    with pytest.raises(OSError):
        await _connect_retrying(url, attempts=3, delay=0.2)
    assert asyncio.get_running_loop().time() - started >= 0.4  # two pauses between three attempts


async def test_connect_retrying_connects_once_the_server_is_up(infra: Infra):
    """A proxy to the test PostgreSQL that starts listening only after a while."""
    port = free_port()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", infra.postgres.port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def listen_later() -> asyncio.Server:
        await asyncio.sleep(0.5)
        return await asyncio.start_server(proxy, "127.0.0.1", port)

    listening = asyncio.create_task(listen_later())
    conn: asyncpg.Connection = await _connect_retrying(
        f"postgresql://postgres:{infra.postgres.password}@127.0.0.1:{port}/postgres", attempts=100, delay=0.05
    )
    server = await listening
    try:
        assert await conn.fetchval("SELECT inet_server_port()") == infra.postgres.port
    finally:
        await conn.close()
        server.close()


# nats_server_binary


def test_nats_server_binary_is_the_one_installed_with_this_python():
    found = Path(nats_server_binary())
    assert found.name == "nats-server" and os.access(found, os.X_OK)
    assert found.parent == Path(sys.executable).parent


def test_nats_server_binary_searches_the_given_path(tmp_path: Path):
    binary = tmp_path / "nats-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert nats_server_binary(str(tmp_path)) == str(binary)


def test_nats_server_binary_missing_says_how_to_install_it(tmp_path: Path):
    with pytest.raises(RuntimeError, match=r"nats-server not found; run `make install`"):
        nats_server_binary(str(tmp_path))
