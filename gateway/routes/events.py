"""/v1/events: usage ingestion.

One resource, two spellings. A bxb body names the metric by `code` and may
omit `transaction_id` (the server assigns one) and `timestamp` (the time of
receipt); it is answered 200. An ABAXUS body names the metric by `metric_key`,
must carry an `idempotency_key`, and is answered 202 Accepted. Either way the
key is the same deduplication key, and a retry is counted once, on every path.

- POST /v1/events: validated, durably queued (JetStream acknowledged), and
  answered without waiting for ClickHouse; usage queries wait for the queue.
- POST /v1/events/batch: up to 500 events, 207 with one result per item in
  order (202, or 400 with the item's error); a bad item never blocks the rest.
- POST /v1/events/backfill: the same body, written straight to the events
  table and answered after the write (207: 200 created or duplicate, or 400).
"""

from __future__ import annotations

from starlette.routing import Route

from bxb.metering.v1 import usage_events_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import ApiError, invalid
from gateway.schema import Spec, check, obj, one_of, string
from services.common.timestamps import to_proto

MAX_BATCH = 500
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


# Items are checked one by one in the handler, so one bad item never fails the batch.
BATCH = obj({"events": Spec("list", required=True, max_items=MAX_BATCH)})


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


def _event(body: dict) -> tuple[pb.UsageEvent, bool]:
    """A checked body as an event, and whether it is ABAXUS-spelled."""
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
    return event, abaxus


def _key(abaxus: bool, transaction_id: str) -> dict:
    return {"idempotency_key" if abaxus else "transaction_id": transaction_id}


def _error(error: pb.EventError) -> dict:
    """A batch item's error; its field always names the item (`events[3]...`)."""
    return {
        "status": 400,
        "code": "INVALID_ARGUMENT",
        "reason": error.reason,
        "message": error.message,
        "field": error.field,
    }


async def create(call: Call):
    event, abaxus = _event(call.body)
    reply = await call.clients.events.SubmitEvents(pb.SubmitEventsRequest(events=[event]), **call.options)
    result = reply.results[0]
    if result.outcome == pb.INGEST_OUTCOME_REJECTED:
        raise invalid(result.error.message, result.error.field, result.error.reason)
    return json({**_key(abaxus, result.transaction_id), "status": "accepted"}, 202 if abaxus else 200)


def _at(where: str, field: str) -> str:
    """`field` of one batch item, named from the batch (`events[3].value`)."""
    return f"{where}.{field}" if field else where


def _items(call: Call) -> list[tuple[dict | None, pb.UsageEvent | None, bool]]:
    """Each item of a batch checked on its own: (error, event, ABAXUS-spelled)."""
    items = []
    for index, raw in enumerate(call.body["events"]):
        where = f"events[{index}]"
        try:
            event, abaxus = _event(check(raw, CREATE, where))
        except ApiError as error:
            field = error.field if error.field.startswith(where) else _at(where, error.field)
            items.append((_error(pb.EventError(reason=error.reason, field=field, message=error.message)), None, False))
        else:
            items.append((None, event, abaxus))
    return items


async def _submit(call: Call, backfill: bool) -> list[dict]:
    """The results of a batch, in order: valid items go to metering in one call."""
    items = _items(call)
    events = [event for _, event, _ in items if event is not None]
    replies = iter([])
    if events:
        request = pb.SubmitEventsRequest(events=events, backfill=backfill)
        replies = iter((await call.clients.events.SubmitEvents(request, **call.options)).results)
    results = []
    for index, (error, _, abaxus) in enumerate(items):
        if error is not None:
            results.append(error)
            continue
        result = next(replies)
        if result.outcome == pb.INGEST_OUTCOME_REJECTED:
            # Metering numbers the events it was sent; the client numbers its batch.
            field = (
                result.error.field.split("].", 1)[-1]
                if result.error.field.startswith("events[")
                else result.error.field
            )
            result.error.field = _at(f"events[{index}]", field)
            results.append(_error(result.error))
        elif backfill:
            duplicate = result.outcome == pb.INGEST_OUTCOME_DUPLICATE
            results.append(
                {
                    "status": 200,
                    **_key(abaxus, result.transaction_id),
                    "result": "duplicate" if duplicate else "created",
                }
            )
        else:
            results.append({"status": 202, **_key(abaxus, result.transaction_id)})
    return results


async def batch(call: Call):
    return json({"results": await _submit(call, backfill=False)}, 207)


async def backfill(call: Call):
    return json({"results": await _submit(call, backfill=True)}, 207)


async def get(call: Call):
    event = await call.clients.events.GetEvent(
        pb.GetEventRequest(transaction_id=call.path("transaction_id")), **call.options
    )
    return json(event_json(event))


routes = [
    Route("/v1/events", endpoint(create, CREATE), methods=["POST"]),
    Route("/v1/events/batch", endpoint(batch, BATCH), methods=["POST"]),
    Route("/v1/events/backfill", endpoint(backfill, BATCH), methods=["POST"]),
    Route("/v1/events/{transaction_id}", endpoint(get), methods=["GET"]),
]
