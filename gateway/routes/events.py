"""/v1/events: usage ingestion.

One resource, two spellings. A bxb body names the metric by `code` and may
omit `transaction_id` (the server assigns one) and `timestamp` (the time of
receipt); it is answered 200. An ABAXUS body names the metric by `metric_key`,
must carry an `idempotency_key`, and is answered 202 Accepted. Either way the
key is the same deduplication key, and a retry is counted once.
"""

from __future__ import annotations

from starlette.routing import Route

from bxb.metering.v1 import usage_events_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import invalid
from gateway.schema import Spec, obj, one_of, string
from services.common.timestamps import to_proto

CREATE = obj(
    {
        "transaction_id": string(max_length=200),
        "idempotency_key": string(max_length=200),
        "customer_id": string(required=True, max_length=200),
        "code": string(max_length=100),
        "metric_key": string(max_length=100),
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
    abaxus = body["metric_key"] is not None
    if abaxus and body["idempotency_key"] is None and body["transaction_id"] is None:
        raise invalid("idempotency_key is required", "idempotency_key", "MISSING_FIELD")
    event = pb.UsageEvent(
        transaction_id=one_of(body, ("transaction_id", "idempotency_key"), required=False)[0],
        customer_id=body["customer_id"],
        code=one_of(body, ("code", "metric_key"))[0],
        timestamp=to_proto(body["timestamp"]),
        subscription_id=body["subscription_id"] or "",
        properties=body["properties"] or {},
        value=body["value"] or "",
    )
    reply = await call.clients.events.IngestEvents(pb.IngestEventsRequest(events=[event]), **call.options)
    result = reply.results[0]
    status = "duplicate" if result.outcome == pb.INGEST_OUTCOME_DUPLICATE else "accepted"
    if abaxus:
        return json({"idempotency_key": result.transaction_id, "status": status}, 202)
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
