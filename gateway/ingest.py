"""Usage ingestion over HTTP, in both dialects (part of the compatibility layer).

A bxb event names its metric by `code` and may leave out `transaction_id`
(the server assigns one) and `timestamp` (the time of receipt); it is
answered 200. An ABAXUS event names it by `metric_key`, must carry an
`idempotency_key` (the same deduplication key), and is answered 202.
- POST /v1/events: one event, durably queued before the answer.
- POST /v1/events/batch and /v1/events/backfill (SubmitEvents): each item is
  read on its own, so a bad item never fails the rest; 207 with one result
  per item in order. A backfill is stored before the answer (200 created or
  duplicate per item).
- GET /v1/events: recent events, or with `status=rejected` the refused ones.
Whatever the gateway cannot read is still recorded with the rejected events.
"""

from __future__ import annotations

from json import dumps
from typing import Any

from starlette.responses import Response

from buf.validate import validate_pb2
from bxb.metering.v1 import usage_events_pb2 as pb
from gateway.call import json, read_json
from gateway.codec import Decoder, Encoder, View, Views
from gateway.errors import ApiError, invalid
from gateway.rate_limits import EVENTS
from gateway.transcoder import Exchange, Handler, Spelling

# How much of a refused item the rejected-events listing keeps.
MAX_TEXT = 200
MAX_BODY = 16_384

EVENT = View(
    names={"ingest_time": "ingested_at"},
    alternatives={"idempotency_key": "transaction_id", "metric_key": "code"},
    nulls=frozenset({"subscription_id", "value"}),
)
REJECTED = View(
    names={"reject_time": "rejected_at"},
    inline=("event", "error"),
    nulls=frozenset({"body"}),
    render=lambda rejected, shown: {**shown, "status": "rejected"},
)
ERROR = View(nulls=frozenset({"field"}))


def views(base: Views) -> Views:
    return {
        **base,
        "bxb.metering.v1.UsageEvent": EVENT,
        "bxb.metering.v1.RejectedEvent": REJECTED,
        "bxb.metering.v1.EventError": ERROR,
        "bxb.metering.v1.ListEventsRequest": View(
            names={"code": "metric_key", "transaction_id": "idempotency_key"},
            alternatives={"code": "code", "transaction_id": "transaction_id"},
        ),
    }


class Events:
    """Reads events off a body and answers for them."""

    def __init__(self, base: Views):
        self.decoder = Decoder(views(base))
        self.encoder = Encoder(views(base))

    def event(self, raw: Any, where: str = "") -> tuple[pb.UsageEvent, bool]:
        """An item as an event, and whether it is ABAXUS-spelled."""
        abaxus = isinstance(raw, dict) and raw.get("metric_key") is not None
        if abaxus and raw.get("idempotency_key") is None and raw.get("transaction_id") is None:
            field = f"{where}.idempotency_key" if where else "idempotency_key"
            raise invalid(f"{field} is required", field, "MISSING_FIELD")
        if raw is None:
            raise invalid(f"{where or 'the body'} must be an object", where, "INVALID_TYPE")
        event = pb.UsageEvent()
        self.decoder.into(event, raw, where)
        return event, abaxus

    def rendered(self, event: pb.UsageEvent) -> dict[str, Any]:
        return self.encoder.message(event)


def key(abaxus: bool, transaction_id: str) -> dict[str, str]:
    return {"idempotency_key" if abaxus else "transaction_id": transaction_id}


def refused(raw: Any, error: ApiError, where: str) -> pb.RejectedEvent:
    """An event the gateway could not read (a batch item at `where`), as far
    as it can be read, for the rejected-events listing; its field and
    message named as a single event's."""
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
    if where:
        field = field.removeprefix(where).removeprefix(".")
        message = message.replace(f"{where}.", "").replace(where, "the event")
    reason = pb.EventError(reason=error.reason, field=field, message=message)
    return pb.RejectedEvent(event=event, error=reason, body=dumps(raw, separators=(",", ":"), default=str)[:MAX_BODY])


def most_events() -> int:
    """The most events one call may carry, as SubmitEventsRequest declares."""
    events = pb.SubmitEventsRequest.DESCRIPTOR.fields_by_name["events"]
    return events.GetOptions().Extensions[validate_pb2.field].repeated.max_items


def single(spelling: Spelling) -> Handler:
    """POST /v1/events: one event, answered once it is durably queued."""
    events = Events(spelling.views)

    async def handle(exchange: Exchange) -> Response:
        exchange.spend(EVENTS, 1)
        raw = await read_json(exchange.http)
        try:
            event, abaxus = events.event(raw)
        except ApiError as error:  # answered, and listed with the rejected events
            await exchange.call(pb.SubmitEventsRequest(rejected=[refused(raw, error, "")]))
            raise
        result = (await exchange.call(pb.SubmitEventsRequest(events=[event]))).results[0]
        if result.outcome == pb.INGEST_OUTCOME_REJECTED:
            raise invalid(result.error.message, result.error.field, result.error.reason)
        return json({**key(abaxus, result.transaction_id), "status": "accepted"}, 202 if abaxus else 200)

    return handle


def batch(spelling: Spelling) -> Handler:
    """POST /v1/events/batch and /v1/events/backfill: 207, a result per item."""
    events = Events(spelling.views)

    async def handle(exchange: Exchange) -> Response:
        raw = await read_json(exchange.http)
        backfill = exchange.http.url.path.endswith("/backfill")
        items = _items(raw)
        exchange.spend(EVENTS, len(items))
        read: list[tuple[pb.UsageEvent | dict[str, Any], bool]] = []
        rejected = []
        for index, item in enumerate(items):
            where = f"events[{index}]"
            try:
                read.append(events.event(item, where))
            except ApiError as error:
                field = error.field if error.field.startswith(where) else where
                read.append((_error(error.reason, field, error.message), False))
                rejected.append(refused(item, error, where))
        sent = [event for event, _ in read if isinstance(event, pb.UsageEvent)]
        request = pb.SubmitEventsRequest(events=sent, backfill=backfill, rejected=rejected)
        replies = iter((await exchange.call(request)).results)
        results = []
        for index, (event, abaxus) in enumerate(read):
            if not isinstance(event, pb.UsageEvent):
                results.append(event)
                continue
            result = next(replies)
            if result.outcome == pb.INGEST_OUTCOME_REJECTED:
                results.append(item_error(result.error, index))
            elif backfill:
                outcome = "duplicate" if result.outcome == pb.INGEST_OUTCOME_DUPLICATE else "created"
                results.append({"status": 200, **key(abaxus, result.transaction_id), "result": outcome})
            else:
                results.append({"status": 202, **key(abaxus, result.transaction_id)})
        return json({"results": results}, 207)

    return handle


def _items(raw: Any) -> list[Any]:
    """A batch's items, each read later on its own."""
    if not isinstance(raw, dict):
        raise invalid("the body must be an object", "", "INVALID_TYPE")
    for name in raw:
        if name != "events":
            raise invalid(f"unknown field {name!r}", name, "UNKNOWN_FIELD")
    items = raw.get("events")
    if items is None:
        raise invalid("events is required", "events", "MISSING_FIELD")
    if not isinstance(items, list):
        raise invalid("events must be an array", "events", "INVALID_TYPE")
    if not items:
        raise invalid("events must not be empty", "events", "EMPTY")
    if len(items) > most_events():
        raise invalid(f"events has more than {most_events()} items, the limit", "events", "TOO_MANY_ITEMS")
    return items


def _error(reason: str, field: str, message: str) -> dict[str, Any]:
    return {"status": 400, "code": "INVALID_ARGUMENT", "reason": reason, "message": message, "field": field}


def item_error(error: pb.EventError, index: int) -> dict[str, Any]:
    """A batch item's error as metering gave it, its field named from the batch (`events[3].value`)."""
    where = f"events[{index}]"
    return _error(error.reason, f"{where}.{error.field}" if error.field else where, error.message)


def listing(spelling: Spelling) -> Handler:
    """GET /v1/events: recent events (by customer, metric or key), or with
    status=rejected the refused ones and why."""
    events = Events(spelling.views)

    async def handle(exchange: Exchange) -> Response:
        params = exchange.http.query_params.multi_items()
        status = dict(params).get("status", "accepted")
        if status not in ("accepted", "rejected"):
            raise invalid("status must be one of: accepted, rejected", "status", "INVALID_VALUE")
        params = [(name, value) for name, value in params if name != "status"]
        request = exchange.transcoder.query(pb.ListEventsRequest(), params, exchange.spelled)
        if status == "accepted":
            reply = await exchange.call(request)
            shown = [{**events.rendered(e), "status": "accepted"} for e in reply.events]
            return json({"events": shown, "next_page_token": reply.next_page_token})
        if request.transaction_id:
            raise invalid("rejected events are listed by customer or metric, not by key", "status", "INVALID_VALUE")
        rejected = pb.ListRejectedEventsRequest(
            customer_id=request.customer_id,
            code=request.code,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        reply = await exchange.call(rejected, LIST_REJECTED)
        shown = [events.encoder.message(r) for r in reply.rejected_events]
        return json({"events": shown, "next_page_token": reply.next_page_token})

    return handle


LIST_REJECTED = pb.DESCRIPTOR.services_by_name["EventService"].methods_by_name["ListRejectedEvents"]
