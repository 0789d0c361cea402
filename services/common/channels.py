"""Channels between bxb processes: balanced over a service's replicas, idempotent
calls retried, every call with a deadline, messages up to MESSAGE_BYTES.

An address (BXB_<SVC>_ADDRESS, config.grpc_address) is one host:port, a comma
list of them (one per replica: made a static ipv4:/ipv6: target, names
resolved once when the channel opens) or any gRPC target; `dns:///name:port`
(a Kubernetes headless Service) is re-resolved by gRPC when a connection
drops (at most every 30 s), and servers close connections older than
CONNECTION_AGE, so replicas that come and go are followed. Calls go round
robin over every address that answers.

Calls that change nothing (`idempotent`: the RPCs the protos bind to HTTP GET,
plus the reads in SAFE) are retried on UNAVAILABLE, a replica that died or
went away, up to RETRY_ATTEMPTS within the call's own deadline; writes are not
(gRPC still retries, transparently, a call that never reached a server).

A call that names no timeout gets the channel's (`CallDefaults`), so no
remote call can wait forever on a peer that hangs. Every server and channel
takes messages of MESSAGE_BYTES, far above what a request or a page may
hold (the gateway caps bodies at 5 MiB, pages stop at 4 MiB: pagination.py),
so no accepted request or reply meets gRPC's own 4 MiB default.

Every call carries the service token (trust.py) that tells the peer a bxb
process is calling, and with BXB_TLS_DIR set every channel is mutual TLS
(tls.py).
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import json
import logging
import pkgutil
import socket
from collections.abc import Awaitable, Callable

import grpc
from google.api import annotations_pb2

import bxb
from services.common import config, request_ids, tls, tracing, trust

log = logging.getLogger("bxb.channels")

MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0  # seconds, for a call that names none
OPTIONS = [("grpc.max_send_message_length", MESSAGE_BYTES), ("grpc.max_receive_message_length", MESSAGE_BYTES)]
# A server closes each connection after CONNECTION_AGE (calls in flight get
# CONNECTION_GRACE to finish), so clients reconnect and re-resolve a dns:///
# target: replicas added behind a headless Service are found within minutes.
CONNECTION_AGE_MS, CONNECTION_GRACE_MS = 5 * 60_000, 2 * 60_000
SERVER_OPTIONS = [
    *OPTIONS,
    ("grpc.max_connection_age_ms", CONNECTION_AGE_MS),
    ("grpc.max_connection_age_grace_ms", CONNECTION_GRACE_MS),
]
RETRY_ATTEMPTS = 4  # the first try included
# Reads without an HTTP GET binding (internal, or POST for a body): safe to send twice.
SAFE = frozenset(
    {
        "bxb.catalog.v1.OrganizationService/AuthenticateApiKey",
        "bxb.catalog.v1.OrganizationService/GetOrganization",
        "bxb.catalog.v1.EventReferenceService/ResolveEventReferences",
        "bxb.catalog.v1.TaxService/BatchResolveTaxes",
        "bxb.metering.v1.UsageService/AggregateUsage",
        "bxb.metering.v1.UsageService/BatchAggregateUsage",
        "bxb.metering.v1.UsageService/ComputeUsage",
        "bxb.metering.v1.EventService/ListRejectedEvents",
        "bxb.invoicing.v1.CalculationService/PreviewInvoice",
        "grpc.health.v1.Health/Check",
    }
)


@functools.cache
def idempotent() -> frozenset[str]:
    """Every bxb RPC ("package.Service/Method") safe to retry: bound to
    HTTP GET in its proto, or listed in SAFE."""
    found = set(SAFE)
    for module in pkgutil.walk_packages(bxb.__path__, "bxb."):
        if not module.name.endswith("_pb2"):
            continue
        for service in importlib.import_module(module.name).DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                rule = options.Extensions[annotations_pb2.http] if options.HasExtension(annotations_pb2.http) else None
                if rule is not None and rule.WhichOneof("pattern") == "get":
                    found.add(f"{service.full_name}/{method.name}")
    return frozenset(found)


@functools.cache
def service_config() -> str:
    """The gRPC service config of every channel (JSON): round robin, and
    idempotent calls retried on UNAVAILABLE."""
    names = [dict(zip(("service", "method"), name.split("/"), strict=True)) for name in sorted(idempotent())]
    retry = {
        "maxAttempts": RETRY_ATTEMPTS,
        "initialBackoff": "0.1s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps(
        {"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [{"name": names, "retryPolicy": retry}]}
    )


def target(address: str) -> str:
    """The gRPC target of an address (see the module docstring): a comma
    list of host:port becomes ipv4:a:p,b:p (or ipv6:[a]:p,... when no item
    has an IPv4 address); a name that does not resolve is left out, and when
    none resolves the first item is dialled as it is (UNAVAILABLE until it does)."""
    items = address.split(",")
    if len(items) == 1 or address.startswith(("ipv4:", "ipv6:")):
        return address
    v4: list[str] = []
    v6: list[str] = []
    for item in items:
        host, port = config.host_port(item) or ("", 0)  # config.grpc_address checked each
        try:
            found = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
        except OSError as error:
            log.warning("%s does not resolve (%s); left out of %s", item, error, address)
            continue
        for ip in sorted(found):
            kept = v6 if isinstance(ipaddress.ip_address(ip), ipaddress.IPv6Address) else v4
            kept.append(f"[{ip}]:{port}" if kept is v6 else f"{ip}:{port}")
    if v4:
        return "ipv4:" + ",".join(v4)
    if v6:
        return "ipv6:" + ",".join(v6)
    return items[0]


class CallDefaults(grpc.aio.UnaryUnaryClientInterceptor):
    """What every call of a bxb channel carries unless it says otherwise:
    the channel's timeout, the service token (trust.py) and the request id
    being served (request_ids.py), so logs follow a request across services."""

    def __init__(self, timeout: float):
        self.timeout = timeout

    async def intercept_unary_unary[Request, Response](
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Request], Awaitable[grpc.aio.UnaryUnaryCall[Request, Response]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Request,
    ) -> grpc.aio.UnaryUnaryCall[Request, Response]:
        details = client_call_details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if not metadata.get_all(trust.SERVICE_METADATA_KEY):
            metadata.add(*trust.service_metadata()[0])
        request_id = request_ids.REQUEST_ID.get()
        if request_id:
            metadata.add(request_ids.METADATA_KEY, request_id)
        timeout = self.timeout if details.timeout is None else details.timeout
        defaults = grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )
        return await continuation(defaults, request)


def open_channel(
    address: str, timeout: float = DEFAULT_TIMEOUT, receive_bytes: int = MESSAGE_BYTES
) -> grpc.aio.Channel:
    """A channel to a bxb service at `address` (see the module docstring);
    `receive_bytes` lets a caller expecting larger replies take them."""
    options = [
        *OPTIONS[:1],
        ("grpc.max_receive_message_length", receive_bytes),
        ("grpc.service_config", service_config()),
        ("grpc.service_config_disable_resolution", 1),  # ours, not one from DNS TXT records
        ("grpc.enable_retries", 1),
    ]
    interceptors = [CallDefaults(timeout), *tracing.client_interceptors()]
    material = tls.material()
    if material is None:
        return grpc.aio.insecure_channel(target(address), options=options, interceptors=interceptors)
    options += tls.channel_options(address)
    return grpc.aio.secure_channel(target(address), material.channel_credentials(), options, interceptors=interceptors)
