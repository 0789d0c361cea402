"""NATS refuses whoever lacks its credentials (so no one can forge
`payment_updated`): the nats-server `make run` starts, with the password it
keeps in BXB_HOME; the bus logging in with BXB_NATS_USER/BXB_NATS_PASSWORD or
the URL's userinfo; and TLS with client certificates for a tls:// URL."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deploy.embedded import NATS_USER, Nats, NatsCluster
from deploy.stack import Stack
from services.common import bus, nats_connection
from tests.conftest import eventually, unique


async def refused(url: str, **options: object) -> str:
    """Why a client connecting to `url` (with `options`) was turned away."""
    with pytest.raises((nats.errors.Error, ssl.SSLError, OSError)) as turned_away:
        connection = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, **options)
        await connection.close()  # not reached: the server refused
    return str(turned_away.value)


async def round_trip(connected: bus.Bus) -> None:
    """A message published and stored by JetStream through `connected`."""
    stream = bus.Stream(unique("CREDS").upper(), (f"{unique('creds')}.>",))
    await connected.ensure_stream(stream)
    await connected.publish(stream.subjects[0].replace(">", "payment_updated"), b"paid", unique("msg"))
    assert (await connected.js.stream_info(stream.name)).state.messages == 1


@pytest.fixture
async def make_run_nats(tmp_path: Path) -> AsyncIterator[Stack]:
    """The NATS `make run` starts (the databases said to be elsewhere, so only it starts)."""
    env = {f"BXB_{db.upper()}_DATABASE_URL": "postgresql://elsewhere/db" for db in ("catalog", "invoicing", "payments")}
    home = tmp_path / "home"
    home.mkdir()
    stack = Stack(home, env)
    await stack.start_servers()
    yield stack
    await stack.stop()


async def test_make_run_nats_keeps_its_password_private_and_refuses_a_client_without_it(
    make_run_nats: Stack, monkeypatch: pytest.MonkeyPatch
):
    env, home = make_run_nats.env, make_run_nats.home
    assert make_run_nats.nats is not None and env["BXB_NATS_URL"] == make_run_nats.nats.address
    assert env["BXB_NATS_USER"] == NATS_USER
    kept = home / "nats_password"
    assert kept.read_text().strip() == env["BXB_NATS_PASSWORD"] and kept.stat().st_mode & 0o777 == 0o600
    assert (home / "nats" / "nats.conf").stat().st_mode & 0o777 == 0o600

    assert "Authorization Violation" in await refused(env["BXB_NATS_URL"])
    assert "Authorization Violation" in await refused(env["BXB_NATS_URL"], user=NATS_USER, password="guessed")

    for name in ("BXB_NATS_USER", "BXB_NATS_PASSWORD"):
        monkeypatch.setenv(name, env[name])
    connected = await bus.Bus.connect(env["BXB_NATS_URL"], "with-credentials")
    try:
        await round_trip(connected)
    finally:
        await connected.close()


async def test_the_url_may_carry_the_credentials_percent_encoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("BXB_NATS_USER", raising=False)
    monkeypatch.delenv("BXB_NATS_PASSWORD", raising=False)
    server = Nats(tmp_path / "nats", durable=False, user="ops@bxb", password="p:w/d@%")
    server.start()
    try:
        url = f"nats://ops%40bxb:p%3Aw%2Fd%40%25@127.0.0.1:{server.port}"
        connected = await bus.Bus.connect(url, "url-credentials")
        try:
            await round_trip(connected)
        finally:
            await connected.close()
        assert "Authorization Violation" in await refused(server.address)
    finally:
        server.stop()


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


def write_tls_dir(directory: Path, subject: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> Path:
    """`directory` holding ca.crt and a tls.crt/tls.key for `subject` that `ca` signed."""
    directory.mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(subject, key, ca[0], ca[1])
    (directory / "ca.crt").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return directory


def new_ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return _certificate(name, key, None, key), key


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[tuple[Nats, Path]]:
    """A nats-server asking clients for a certificate of its CA; and a client's BXB_TLS_DIR."""
    ca = new_ca("bxb test CA")
    server = Nats(tmp_path / "nats", durable=False, tls_dir=write_tls_dir(tmp_path / "server", "nats", ca))
    server.start()
    yield server, write_tls_dir(tmp_path / "client", "catalog", ca)
    server.stop()


async def test_a_tls_url_connects_with_the_certificate_of_bxb_tls_dir(
    tls_nats: tuple[Nats, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    server, client_dir = tls_nats
    assert server.url.startswith("tls://")
    monkeypatch.setenv("BXB_TLS_DIR", str(client_dir))
    connected = await bus.Bus.connect(server.url, "over-tls")
    try:
        await round_trip(connected)
    finally:
        await connected.close()

    # The server turns away a client that trusts it but shows no certificate, or one another CA signed.
    without_certificate = ssl.create_default_context(cafile=str(client_dir / "ca.crt"))
    await refused(server.url, tls=without_certificate)
    stranger_dir = write_tls_dir(tmp_path / "stranger", "catalog", new_ca("someone else's CA"))
    stranger = ssl.create_default_context(cafile=str(client_dir / "ca.crt"))
    stranger.load_cert_chain(stranger_dir / "tls.crt", stranger_dir / "tls.key")
    await refused(server.url, tls=stranger)

    async def logged() -> None:
        log = (server.data_dir / "server.log").read_text()
        assert "client didn't provide a certificate" in log and "certificate signed by unknown authority" in log

    await eventually(logged)


def test_a_tls_url_without_bxb_tls_dir_names_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("BXB_TLS_DIR", raising=False)
    with pytest.raises(SystemExit, match=r"BXB_TLS_DIR holding ca\.crt, tls\.crt and tls\.key"):
        nats_connection.connection("tls://nats:4222")
    monkeypatch.setenv("BXB_TLS_DIR", str(tmp_path))  # there, but empty
    with pytest.raises(SystemExit, match="BXB_TLS_DIR"):
        nats_connection.connection("nats://a:4222,tls://b:4222")


async def test_a_cluster_with_a_ca_routes_and_serves_over_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ca = new_ca("bxb test CA")
    cluster = NatsCluster(tmp_path / "cluster", durable=False, tls_dir=write_tls_dir(tmp_path / "server", "nats", ca))
    cluster.start()  # ready: its nodes reached each other over TLS
    try:
        assert all(url.startswith("tls://") for url in cluster.url.split(","))
        monkeypatch.setenv("BXB_TLS_DIR", str(write_tls_dir(tmp_path / "client", "catalog", ca)))
        connected = await bus.Bus.connect(cluster.url, "cluster-over-tls", replicas=3)
        try:
            await round_trip(connected)
        finally:
            await connected.close()
    finally:
        cluster.stop()
