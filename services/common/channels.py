"""Channels between bxb processes: every call has a deadline, and messages
up to MESSAGE_BYTES pass both ways.

A call that names no timeout gets the channel's (`DefaultDeadline`), so no
remote call can wait forever on a peer that hangs. Every server and channel
takes messages of MESSAGE_BYTES, far above what a request or a page may
hold (the gateway caps bodies at 5 MiB, pages stop at 4 MiB: pagination.py),
so no accepted request or reply meets gRPC's own 4 MiB default.

Every call carries the service token (trust.py) that tells the peer a bxb
process is calling, and with BXB_TLS_DIR set every channel is mutual TLS
(tls.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from services.common import request_ids, tls, tracing, trust

MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0  # seconds, for a call that names none
OPTIONS = [("grpc.max_send_message_length", MESSAGE_BYTES), ("grpc.max_receive_message_length", MESSAGE_BYTES)]


class DefaultDeadline(grpc.aio.UnaryUnaryClientInterceptor):
    """Gives a call without a timeout the channel's."""

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
        if client_call_details.timeout is None:
            details = client_call_details
            client_call_details = grpc.aio.ClientCallDetails(
                details.method, self.timeout, details.metadata, details.credentials, details.wait_for_ready
            )
        return await continuation(client_call_details, request)


class ServiceToken(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the service token to a call's metadata, unless it carries one."""

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
            client_call_details = grpc.aio.ClientCallDetails(
                details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
            )
        return await continuation(client_call_details, request)


def open_channel(
    address: str, timeout: float = DEFAULT_TIMEOUT, receive_bytes: int = MESSAGE_BYTES
) -> grpc.aio.Channel:
    """A channel to a bxb service at `address` (see the module docstring);
    `receive_bytes` lets a caller expecting larger replies take them."""
    options = [*OPTIONS[:1], ("grpc.max_receive_message_length", receive_bytes)]
    interceptors = [DefaultDeadline(timeout), ServiceToken(), request_ids.Forward(), *tracing.client_interceptors()]
    material = tls.material()
    if material is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    credentials = material.channel_credentials()
    return grpc.aio.secure_channel(
        address, credentials, options=[*options, *tls.channel_options(address)], interceptors=interceptors
    )
