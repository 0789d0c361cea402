"""Webhook URLs a tenant may give, against SSRF: bxb must not be made to call
its own network (loopback, private ranges, cloud metadata at 169.254.169.254).

A URL is checked when an endpoint is created or changed (`checked_url`), and
again each time a connection is opened (`GuardedBackend`, under the sender's
HTTP client): a name that resolved to a public address then may resolve to an
internal one now (DNS rebinding), and the connection goes to the very
address just checked. Unless the operator allows private addresses
(BXB_WEBHOOKS_ALLOW_PRIVATE=1, for development and tests), every address a
host resolves to must be public. Lookups have a deadline."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import httpcore

from services.common.errors import InvalidArgument

FIELD = "webhook_endpoint.url"
RESOLVE_TIMEOUT = 5.0  # seconds for one DNS lookup
CGNAT = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: shared, not public

type Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """A host that is not called: it resolves to an address that is not public, or not at all."""


def refusal(address: Address) -> str:
    """Why an address is not called, or "" when it is public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    kinds = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("carrier-grade NAT", address in CGNAT),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),
    )
    return next((f"{kind} address {address}" for kind, bad in kinds if bad), "")


async def resolve(host: str, port: int, timeout: float = RESOLVE_TIMEOUT) -> list[Address]:
    """The addresses `host` names (itself, when it is a literal address), looked up within `timeout`."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass  # a name
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise Refused(f"{host} could not be resolved within {timeout:g} s") from None
    except OSError as error:
        raise Refused(f"{host} could not be resolved: {error.strerror or error}") from None
    # The scope of a link-local IPv6 address ("fe80::1%eth0") is not part of it.
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found))


def first_public(host: str, addresses: Iterable[Address]) -> Address:
    """The first address, when every one is public; Refused otherwise."""
    listed = list(addresses)
    for address in listed:
        reason = refusal(address)
        if reason:
            raise Refused(f"{host} resolves to a {reason}: internal addresses are not called")
    return listed[0]


async def checked_url(url: str, allow_private: bool, timeout: float = RESOLVE_TIMEOUT) -> str:
    """`url`, when bxb may POST to it; InvalidArgument naming webhook_endpoint.url otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument("url must be an http or https URL", field=FIELD)
    if not parts.hostname:
        raise InvalidArgument("url must name a host", field=FIELD)
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument("url must not carry credentials (user:password@)", field=FIELD)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidArgument("url has an invalid port", field=FIELD) from None
    if not allow_private:
        try:
            first_public(parts.hostname, await resolve(parts.hostname, port, timeout))
        except Refused as error:
            raise InvalidArgument(f"url is refused: {error}", field=FIELD) from None
    return url


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend that checks each host's addresses as a
    connection is opened, then connects to the address it checked: what was
    looked up is what is called (no second lookup to rebind). Unix sockets
    are not offered (the base refuses them); httpcore sleeps only between
    connection retries, which the sender's client makes none of."""

    def __init__(self, allow_private: bool, timeout: float = RESOLVE_TIMEOUT):
        self.allow_private = allow_private
        self.timeout = timeout
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if not self.allow_private:
            host = str(first_public(host, await resolve(host, port, self.timeout)))
        return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
