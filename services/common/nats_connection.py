"""How a service connects to NATS: BXB_NATS_URL (one server or several,
comma-separated), credentials, and TLS, turned into nats-py's options.

Credentials come from BXB_NATS_USER/BXB_NATS_PASSWORD, or from the URL's
userinfo (`nats://user:password@host:4222`, percent-encoded like any URL);
they are sent to every server, including the cluster's other nodes that the
servers announce. A `tls://` server is reached over TLS that trusts
BXB_TLS_DIR's ca.crt and presents its tls.crt/tls.key (nats-server with
`verify: true` asks for that client certificate).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from services.common import config

# BXB_TLS_DIR's files, named as Kubernetes TLS secrets name them.
CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"


@dataclass(frozen=True)
class Connection:
    """Where and as whom to connect: nats-py's `servers`, `user`, `password`, `tls`."""

    servers: list[str]
    user: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None


def connection(url: str) -> Connection:
    """The servers of `url` without their userinfo, the credentials (the
    URL's, else BXB_NATS_USER/BXB_NATS_PASSWORD's), and the TLS context when a
    server is `tls://`."""
    servers: list[str] = []
    user, password = config.env_str("BXB_NATS_USER", ""), config.env_str("BXB_NATS_PASSWORD", "")
    for server in filter(None, (part.strip() for part in url.split(","))):
        parts = urlsplit(server)
        if parts.username is not None:
            user, password = unquote(parts.username), unquote(parts.password or "")
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        servers.append(urlunsplit(parts))
    if not servers:
        raise ValueError(f"no NATS server in {url!r}")
    tls = None
    if any(server.startswith("tls://") for server in servers):
        tls = client_tls(Path(config.env_str("BXB_TLS_DIR", "")))
    return Connection(servers, user or None, password or None, tls)


def client_tls(directory: Path) -> ssl.SSLContext:
    """A client context trusting `directory`'s CA and presenting its
    certificate and key; an error naming BXB_TLS_DIR when they are missing."""
    files = [directory / name for name in (CA_FILE, CERT_FILE, KEY_FILE)]
    if not directory.name or not all(path.is_file() for path in files):
        raise SystemExit(f"a tls:// NATS server needs BXB_TLS_DIR holding {CA_FILE}, {CERT_FILE} and {KEY_FILE}")
    context = ssl.create_default_context(cafile=str(files[0]))
    context.load_cert_chain(str(files[1]), str(files[2]))
    return context
