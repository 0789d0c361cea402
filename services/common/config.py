"""Reading configuration from the environment, with working defaults."""

from __future__ import annotations

import os


def env_str(name: str, default: str) -> str:
    return os.environ.get(name) or default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


def env_floats(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """A comma-separated list of numbers, for example "5,300,1800"."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return tuple(float(item) for item in raw.split(","))
    except ValueError:
        raise SystemExit(f"{name} must be numbers separated by commas, got {raw!r}") from None


def grpc_address(service: str, default_port: int) -> str:
    """Where peers and the gateway dial a service: BXB_<SERVICE>_ADDRESS,
    default 127.0.0.1:<port>. One host:port, a comma list of them (one per
    replica, balanced round robin by channels.open_channel) or any gRPC
    target (dns:///catalog:50051, ipv4:10.0.0.1:50051,10.0.0.2:50051); a
    list of anything but host:port exits naming the variable."""
    name = f"BXB_{service.upper()}_ADDRESS"
    address = env_str(name, f"127.0.0.1:{default_port}")
    listed = "," in address and not address.startswith(("ipv4:", "ipv6:"))  # those two schemes take lists
    if listed and not all(host_port(item) for item in address.split(",")):
        raise SystemExit(f"{name} must be host:port or host:port items separated by commas, got {address!r}")
    return address


def host_port(address: str) -> tuple[str, int] | None:
    """`address` as (host, port) when it is host:port ([v6]:port for an IPv6
    address), else None (a gRPC target with a scheme, a port missing)."""
    host, colon, port = address.strip().rpartition(":")
    if (
        not colon
        or not host
        or not port.isdigit()
        or "/" in host
        or host.startswith(("dns:", "ipv4:", "ipv6:", "unix:"))
    ):
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # an IPv6 address without brackets, or scheme:name
        return None
    return host, int(port)


def listen_address(service: str, default_port: int) -> str:
    """Where this process of a service listens: BXB_<SERVICE>_LISTEN, else
    BXB_<SERVICE>_ADDRESS when that is one host:port, else every interface
    at the port its ADDRESS names (dns:///catalog:50051, a replica list),
    or at `default_port`."""
    listen = os.environ.get(f"BXB_{service.upper()}_LISTEN")
    return listen or listen_for(grpc_address(service, default_port), default_port)


def listen_for(address: str, default_port: int) -> str:
    """Where a process dialled at `address` listens (see listen_address)."""
    if host_port(address):
        return address
    _, _, port = address.split(",")[0].rpartition(":")
    return f"[::]:{port if port.isdigit() else default_port}"


DEFAULT_PORTS = {"catalog": 50051, "metering": 50052, "invoicing": 50053, "payments": 50054}
NATS_URL = "nats://127.0.0.1:4222"


def nats_url() -> str:
    return env_str("BXB_NATS_URL", NATS_URL)


def nats_replicas() -> int:
    """BXB_NATS_REPLICAS: how many NATS nodes keep each stream (1, or 3 in a cluster)."""
    raw = env_str("BXB_NATS_REPLICAS", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= 5:
        raise SystemExit(f"BXB_NATS_REPLICAS must be a whole number from 1 to 5, got {raw!r}")
    return int(raw)


def database_url(service: str) -> str:
    return env_str(f"BXB_{service.upper()}_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/bxb_{service}")


# Signs page tokens when BXB_SECRET_KEY is unset: fine on one laptop, forgeable
# by anyone who reads this line; `make run` sets a key of its own.
DEVELOPMENT_SECRET = "bxb development secret: set BXB_SECRET_KEY"


def secret_key() -> bytes:
    """BXB_SECRET_KEY, the key every replica of every service shares (it
    signs page tokens)."""
    return env_str("BXB_SECRET_KEY", DEVELOPMENT_SECRET).encode()
