"""What make run keeps private: PostgreSQL asks for a password (SCRAM), a
data directory made with trust auth is switched to it, and the stack's home
holds its secrets and certificates 0600 in 0700 directories."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncpg
import pytest

from deploy import embedded
from deploy.embedded import Postgres
from deploy.readiness import wait_postgres
from deploy.stack import kept_secret, private_directory, secure
from tests.conftest import Infra


async def test_postgres_refuses_a_connection_without_the_password(infra: Infra):
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{infra.postgres.port}/postgres")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(f"postgresql://postgres:wrong@127.0.0.1:{infra.postgres.port}/postgres")
    connection = await asyncpg.connect(infra.postgres.url())
    try:
        assert await connection.fetchval("SHOW password_encryption") == "scram-sha-256"
    finally:
        await connection.close()


def trust_data_directory(data: Path) -> None:
    """A data directory as bxb made them before it asked for passwords."""
    user = embedded.system_user()
    embedded.open_binaries(user)
    embedded.prepare_data_dir(data, user)
    initdb = [str(embedded._pg_bin() / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    subprocess.run(initdb, check=True, stdout=subprocess.DEVNULL, user=user)


async def test_a_data_directory_made_with_trust_auth_asks_for_the_password_from_its_next_start(tmp_path: Path):
    data = tmp_path / "pg"
    await asyncio.to_thread(trust_data_directory, data)
    postgres = Postgres(data, durable=False, password="it's a secret")
    await asyncio.to_thread(postgres.start)
    try:
        await wait_postgres(postgres.url(), timeout=30)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres")
        connection = await asyncpg.connect(postgres.url())
        await connection.close()
    finally:
        postgres.stop()
    hba = (data / "pg_hba.conf").read_text()
    assert "trust" not in hba
    postgres.init()  # asks for passwords already: left as it is
    assert (data / "pg_hba.conf").read_text() == hba
    assert (data / "server.log").stat().st_mode & 0o777 == 0o600


def test_the_home_keeps_its_secrets_and_certificates_private(tmp_path: Path):
    home = tmp_path / "home"
    private_directory(home)
    private_directory(home)  # again: already there
    env: dict[str, str] = {}
    password = kept_secret(home, env, "BXB_POSTGRES_PASSWORD")
    assert kept_secret(home, env, "BXB_POSTGRES_PASSWORD") == password
    secure(home, env)
    assert env["BXB_TLS_DIR"] == str(home / "tls")
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "postgres_password").stat().st_mode & 0o777 == 0o600
    assert (home / "tls").stat().st_mode & 0o777 == 0o700
    assert (home / "tls" / "tls.key").stat().st_mode & 0o777 == 0o600
    chosen = {"BXB_TLS_DIR": ""}  # the environment's choice stands: here, no TLS
    secure(home, chosen)
    assert chosen == {"BXB_TLS_DIR": ""}


def test_initdb_as_ourselves_is_given_the_password_file_and_it_is_gone_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Not root: initdb and the server run as ourselves (nothing to hand over)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    initdb = bin_dir / "initdb"  # records the password file it was given
    initdb.write_text('#!/bin/sh\nfor a; do case "$a" in --pwfile=*) cat "${a#--pwfile=}" > "$2.seen";; esac; done\n')
    initdb.chmod(0o755)
    (bin_dir / "postgres").write_text("")
    monkeypatch.setattr(embedded, "_pg_bin", lambda: bin_dir)
    monkeypatch.setattr(embedded, "system_user", lambda: None)
    postgres = Postgres(tmp_path / "data", password="secret pass")
    postgres.init()
    assert (tmp_path / "data.seen").read_text() == "secret pass\n"
    assert not (tmp_path / "data.pwfile").exists()
    postgres._reachable()  # ourselves: nothing to open
    assert postgres.url().startswith("postgresql://postgres:secret%20pass@")
