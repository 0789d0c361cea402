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

from json import dumps

from starlette.routing import Route

from bxb.metering.v1 import usage_events_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.errors import ApiError, invalid
from gateway.schema import Spec, check, check_present, obj, one_of, string
from services.common.timestamps import to_proto

MAX_BATCH = 500
# How much of a refused item the rejected-events listing keeps.
MAX_TEXT = 200
MAX_BODY = 16_384
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
    try:
        event, abaxus = _event(check(call.body, CREATE))
    except ApiError as error:  # answered, and listed with the rejected events
        refused = pb.SubmitEventsRequest(rejected=[_refused(call.body, error, "")])
        await call.clients.events.SubmitEvents(refused, **call.options)
        raise
    reply = await call.clients.events.SubmitEvents(pb.SubmitEventsRequest(events=[event]), **call.options)
    result = reply.results[0]
    if result.outcome == pb.INGEST_OUTCOME_REJECTED:
        raise invalid(result.error.message, result.error.field, result.error.reason)
    return json({**_key(abaxus, result.transaction_id), "status": "accepted"}, 202 if abaxus else 200)


def _at(where: str, field: str) -> str:
    """`field` of one batch item, named from the batch (`events[3].value`)."""
    return f"{where}.{field}" if field else where


def _refused(raw, error: ApiError, where: str) -> pb.RejectedEvent:
    """An event the gateway refused (a batch item at `where`), as far as it
    can be read, for the rejected-events listing."""
    known = raw if isinstance(raw, dict) else {}

    def text(*names: str) -> str:
        found = [known[n] for n in names if isinstance(known.get(n), str)]
        return found[0][:MAX_TEXT] if found else ""

    event = pb.UsageEvent(
        transaction_id=text("transaction_id", "idempotency_key"),
        customer_id=text("customer_id"),
        code=text("code", "metric_key"),
    )
    field, message = error.field, error.message
    if where:  # a batch item's field and message, named as a single event's
        field = field.removeprefix(where).removeprefix(".")
        message = message.replace(f"{where}.", "").replace(where, "the event")
    reason = pb.EventError(reason=error.reason, field=field, message=message)
    return pb.RejectedEvent(event=event, error=reason, body=dumps(raw, separators=(",", ":"), default=str)[:MAX_BODY])


def _items(call: Call) -> list[tuple[dict | None, pb.UsageEvent | pb.RejectedEvent, bool]]:
    """Each item of a batch checked on its own: (error, event or refusal, ABAXUS-spelled)."""
    items = []
    for index, raw in enumerate(call.body["events"]):
        where = f"events[{index}]"
        try:
            event, abaxus = _event(check_present(raw, CREATE, where))
        except ApiError as error:
            if not error.field.startswith(where):
                error.field = _at(where, error.field)
            refusal = pb.EventError(reason=error.reason, field=error.field, message=error.message)
            items.append((_error(refusal), _refused(raw, error, where), False))
        else:
            items.append((None, event, abaxus))
    return items


async def _submit(call: Call, backfill: bool) -> list[dict]:
    """The results of a batch, in order: valid items go to metering in one
    call, with the refused ones for the rejected-events listing."""
    items = _items(call)
    events = [event for _, event, _ in items if isinstance(event, pb.UsageEvent)]
    refused = [event for _, event, _ in items if isinstance(event, pb.RejectedEvent)]
    request = pb.SubmitEventsRequest(events=events, backfill=backfill, rejected=refused)
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


LIST = obj(
    {
        "status": string(choices=("accepted", "rejected")),
        "customer_id": string(max_length=200),
        "metric_key": string(max_length=100),
        "code": string(max_length=100),
        "idempotency_key": string(max_length=200),
        "transaction_id": string(max_length=200),
        "page_size": string(),
        "page_token": string(),
    }
)


def rejected_json(rejected: pb.RejectedEvent) -> dict:
    return {
        **event_json(rejected.event),
        "status": "rejected",
        "reason": rejected.error.reason,
        "field": rejected.error.field or None,
        "message": rejected.error.message,
        "stored": rejected.stored,
        "rejected_at": render.time(rejected, "reject_time"),
        "body": rejected.body or None,
    }


async def list_(call: Call):
    """Recent events (filtered by customer, metric or key), or with
    status=rejected the refused ones and why."""
    query = call.query_params(LIST)
    code = one_of(query, ("metric_key", "code"), required=False)[0]
    key = one_of(query, ("idempotency_key", "transaction_id"), required=False)[0]
    customer, size, token = query["customer_id"] or "", call.query_int("page_size"), query["page_token"] or ""
    if query["status"] == "rejected":
        if key:
            raise invalid("rejected events are listed by customer or metric, not by key", "status", "INVALID_VALUE")
        request = pb.ListRejectedEventsRequest(customer_id=customer, code=code, page_size=size, page_token=token)
        reply = await call.clients.events.ListRejectedEvents(request, **call.options)
        events = [rejected_json(r) for r in reply.rejected_events]
    else:
        request = pb.ListEventsRequest(
            customer_id=customer, code=code, transaction_id=key, page_size=size, page_token=token
        )
        reply = await call.clients.events.ListEvents(request, **call.options)
        events = [{**event_json(e), "status": "accepted"} for e in reply.events]
    return json({"events": events, "next_page_token": reply.next_page_token})


async def get(call: Call):
    event = await call.clients.events.GetEvent(
        pb.GetEventRequest(transaction_id=call.path("transaction_id")), **call.options
    )
    return json(event_json(event))


routes = [
    Route("/v1/events", endpoint(create, Spec("any", required=True)), methods=["POST"]),
    Route("/v1/events/batch", endpoint(batch, BATCH), methods=["POST"]),
    Route("/v1/events/backfill", endpoint(backfill, BATCH), methods=["POST"]),
    Route("/v1/events", endpoint(list_), methods=["GET"]),
    Route("/v1/events/{transaction_id}", endpoint(get), methods=["GET"]),
]
