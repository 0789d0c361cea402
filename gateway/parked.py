"""/v1/parked_messages: the events a service gave up on, kept where an
operator sees and retries them (services/common/parking.py).

Every service that consumes or publishes events (catalog, invoicing,
payments) serves ParkedMessageService for its own; these routes ask them
all. The listing gathers every service's (newest first); `service` lists
one, page by page. A retry runs the message through its service's handler
again: 200 with the message when it went through (it is gone then), 409
STILL_FAILING when not.
"""

from __future__ import annotations

import asyncio

import grpc
from starlette.responses import Response

from bxb.common.v1 import parked_messages_pb2 as pb
from gateway.call import json
from gateway.errors import invalid
from gateway.transcoder import Exchange, Handler, Spelling, options


def listing(spelling: Spelling) -> Handler:
    async def handle(exchange: Exchange) -> Response:
        params = exchange.http.query_params.multi_items()
        stubs = exchange.http.app.state.clients.parked
        service = dict(params).get("service")
        if service is not None and service not in stubs:
            raise invalid(f"service must be one of: {', '.join(stubs)}", "service", "INVALID_VALUE")
        request = exchange.transcoder.query(pb.ListParkedMessagesRequest(), [p for p in params if p[0] != "service"])
        state = exchange.http.app.state
        if service is not None:
            async with exchange.admitted():
                reply = await stubs[service].ListParkedMessages(request, **options(state, exchange.org))
            found, token = list(reply.parked_messages), reply.next_page_token
        else:
            if request.page_token:
                raise invalid("page_token pages one service: give service too", "page_token", "INVALID_VALUE")
            async with exchange.admitted():
                replies = await asyncio.gather(
                    *(stub.ListParkedMessages(request, **options(state, exchange.org)) for stub in stubs.values())
                )
            found = sorted((m for r in replies for m in r.parked_messages), key=lambda m: m.park_time.ToNanoseconds())
            found, token = found[::-1], ""
        shown = [exchange.transcoder.encoder.message(m) for m in found]
        return json({"parked_messages": shown, "next_page_token": token})

    return handle


def retry(spelling: Spelling) -> Handler:
    async def handle(exchange: Exchange) -> Response:
        request = await exchange.transcoder.request(exchange.http)
        state = exchange.http.app.state
        for stub in state.clients.parked.values():
            try:
                async with exchange.admitted():
                    retried = await stub.RetryParkedMessage(request, **options(state, exchange.org))
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            else:
                return json(exchange.transcoder.encoder.message(retried))
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), "parked message not found"
        )

    return handle
