"""A local certificate authority for mutual TLS between bxb processes.

`make run` (deploy/stack.py) makes one on first start and issues one
certificate and key that every process of the stack presents, as server and
as client; tests make their own. The directory holds what BXB_TLS_DIR names
(services/common/tls.py): ca.crt, tls.crt and tls.key, the names of a
Kubernetes TLS secret. Keys are ECDSA P-256: quick to make and to handshake.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The names a stack process may be dialled by: here, and as its service's
# name on a container network or a Kubernetes namespace.
STACK_NAMES = ("localhost", "127.0.0.1", "catalog", "metering", "invoicing", "payments", "gateway")
CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"
VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class Authority:
    """A CA's certificate and private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bxb"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def authority(common_name: str = "bxb local CA") -> Authority:
    """A new self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(ca: Authority, names: tuple[str, ...] = STACK_NAMES) -> tuple[bytes, bytes]:
    """A certificate signed by `ca` for `names` (DNS names or IP addresses),
    good for serving and for calling: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(name) for name in names]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def write(directory: Path, ca: Authority, names: tuple[str, ...] = STACK_NAMES) -> Path:
    """Writes ca.crt and a new tls.crt and tls.key for `names` into
    `directory` (made 0700; files 0600); returns `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    certificate, key = issue(ca, names)
    for name, content in ((CA_FILE, ca.pem), (CERT_FILE, certificate), (KEY_FILE, key)):
        _write_private(directory / name, content)
    return directory


def ensure(directory: Path, names: tuple[str, ...] = STACK_NAMES) -> Path:
    """`directory` holding a CA, its key (ca.key, which stays there to issue
    more) and a certificate for `names`: made on first call, kept after."""
    if not all((directory / name).exists() for name in (CA_FILE, CERT_FILE, KEY_FILE)):
        ca = authority()
        write(directory, ca, names)
        _write_private(directory / "ca.key", _key_pem(ca.key))
    return directory


def _write_private(path: Path, content: bytes) -> None:
    """Writes `content` to `path`, readable by its owner only from its creation."""
    path.unlink(missing_ok=True)
    with open(path, "xb", opener=private) as out:
        out.write(content)


def private(path: str, flags: int) -> int:
    """An opener (for `open`) that creates files 0600."""
    return os.open(path, flags, 0o600)
