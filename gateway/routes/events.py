"""/v1/events: usage ingestion."""

from __future__ import annotations

from starlette.routing import Route

from bxb.metering.v1 import usage_events_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.schema import Spec, obj, string
from services.common.timestamps import to_proto

CREATE = obj(
    {
        "transaction_id": string(max_length=200),
        "customer_id": string(required=True, max_length=200),
        "code": string(required=True, max_length=100),
        "timestamp": Spec("timestamp"),
        "subscription_id": string(max_length=200),
        "properties": Spec("properties"),
        "value": Spec("decimal"),
    }
)


def event_json(event: pb.UsageEvent) -> dict:
    return {
        "transaction_id": event.transaction_id,
        "customer_id": event.customer_id,
        "code": event.code,
        "subscription_id": event.subscription_id or None,
        "timestamp": render.time(event, "timestamp"),
        "properties": dict(event.properties),
        "value": event.value or None,
        "ingested_at": render.time(event, "ingest_time"),
    }


async def create(call: Call):
    body = call.body
    event = pb.UsageEvent(
        transaction_id=body["transaction_id"] or "",
        customer_id=body["customer_id"],
        code=body["code"],
        timestamp=to_proto(body["timestamp"]),
        subscription_id=body["subscription_id"] or "",
        properties=body["properties"] or {},
        value=body["value"] or "",
    )
    reply = await call.clients.events.IngestEvents(pb.IngestEventsRequest(events=[event]), **call.options)
    result = reply.results[0]
    status = "duplicate" if result.outcome == pb.INGEST_OUTCOME_DUPLICATE else "accepted"
    return json({"transaction_id": result.transaction_id, "status": status})


async def get(call: Call):
    event = await call.clients.events.GetEvent(
        pb.GetEventRequest(transaction_id=call.path("transaction_id")), **call.options
    )
    return json(event_json(event))


routes = [
    Route("/v1/events", endpoint(create, CREATE), methods=["POST"]),
    Route("/v1/events/{transaction_id}", endpoint(get), methods=["GET"]),
]
