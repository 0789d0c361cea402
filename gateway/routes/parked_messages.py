"""/v1/parked_messages: the events a service gave up on, kept where an
operator sees and retries them.

Each service that consumes or publishes events (catalog, invoicing,
payments) parks what can never be handled, or still fails after its last
attempt, in its own database (services/common/parking.py). The listing
gathers every service's (newest first); `service` lists one, page by page.
A retry runs the message through its service's handler again: 200 with the
message when it went through (it is gone then), 409 STILL_FAILING when not.
"""

from __future__ import annotations

import asyncio

import grpc
from starlette.routing import Route

from bxb.common.v1 import parked_messages_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import invalid
from gateway.schema import Spec, obj, string

LIST = obj(
    {
        "service": string(choices=("catalog", "invoicing", "payments")),
        "page_size": Spec("any"),
        "page_token": Spec("any"),
    }
)


def parked_json(message: pb.ParkedMessage) -> dict:
    return {
        "id": message.id,
        "service": message.service,
        "subject": message.subject,
        "error": message.error,
        "attempts": message.attempts,
        "payload_bytes": message.payload_size,
        "parked_at": render.time(message, "park_time"),
        "handled_at": render.time(message, "handle_time"),
    }


async def list_(call: Call):
    query = call.query_params(LIST)
    stubs = call.clients.parked
    if query["service"]:
        request = pb.ListParkedMessagesRequest(
            page_size=call.query_int("page_size"), page_token=call.query("page_token")
        )
        reply = await stubs[query["service"]].ListParkedMessages(request, **call.options)
        found, token = list(reply.parked_messages), reply.next_page_token
    else:
        if call.query("page_token"):
            raise invalid("page_token pages one service: give service too", "page_token", "INVALID_VALUE")
        request = pb.ListParkedMessagesRequest(page_size=call.query_int("page_size"))
        replies = await asyncio.gather(*(stub.ListParkedMessages(request, **call.options) for stub in stubs.values()))
        found = sorted((m for r in replies for m in r.parked_messages), key=lambda m: m.park_time.ToNanoseconds())
        found, token = found[::-1], ""
    return json({"parked_messages": [parked_json(m) for m in found], "next_page_token": token})


async def retry(call: Call):
    request = pb.RetryParkedMessageRequest(id=call.path("id"))
    for stub in call.clients.parked.values():
        try:
            return json(parked_json(await stub.RetryParkedMessage(request, **call.options)))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
    raise grpc.aio.AioRpcError(
        grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), "parked message not found"
    )


routes = [
    Route("/v1/parked_messages", endpoint(list_), methods=["GET"]),
    Route("/v1/parked_messages/{id}/retry", endpoint(retry), methods=["POST"]),
]
