"""Mutual TLS on every internal gRPC port, when BXB_TLS_DIR names a directory.

It holds ca.crt, tls.crt and tls.key (PEM; a Kubernetes TLS secret's names).
A server then takes only clients presenting a certificate signed by that CA,
and every channel presents the process's own and takes only servers whose
certificate that CA signed and which names the host dialled: `catalog` for
`dns:///catalog:50051`, 127.0.0.1 for `127.0.0.1:50051`. An address list
(`h1:p1,h2:p2`, `ipv4:...`) is checked against its first host. A certificate
naming none of these (one name for a whole fleet) is checked against
BXB_TLS_SERVER_NAME instead, which overrides the name for every channel.
Unset or empty BXB_TLS_DIR: plaintext, callers authenticated by a service
token (trust.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"
LIST_SCHEMES = ("ipv4:", "ipv6:")


@dataclass(frozen=True)
class Material:
    """The CA's certificate and this process's certificate and key, PEM."""

    ca: bytes
    certificate: bytes
    key: bytes

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.certificate)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca, self.key, self.certificate)


def material(directory: str | None = None) -> Material | None:
    """What `directory` (by default BXB_TLS_DIR) holds; None when TLS is off."""
    directory = os.environ.get("BXB_TLS_DIR", "") if directory is None else directory
    if not directory:
        return None
    path = Path(directory)
    return Material(*((path / name).read_bytes() for name in (CA_FILE, CERT_FILE, KEY_FILE)))


def server_name(target: str) -> str:
    """The name a channel to `target` must find in the server's certificate
    when gRPC would not check the dialled host itself ("" when it does):
    BXB_TLS_SERVER_NAME, else the first host of an address list."""
    override = os.environ.get("BXB_TLS_SERVER_NAME", "")
    if override:
        return override
    listed = target.removeprefix(LIST_SCHEMES[0]).removeprefix(LIST_SCHEMES[1])
    if listed == target and "," not in target:
        return ""
    return listed.split(",")[0].rsplit(":", 1)[0].strip("[]")  # host:port, [v6]:port


def channel_options(target: str) -> list[tuple[str, str]]:
    """The channel options that make a TLS channel to `target` check the name above."""
    name = server_name(target)
    return [("grpc.ssl_target_name_override", name)] if name else []
