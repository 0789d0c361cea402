"""Event ingestion and lookup (EventService): each event validated on its
own, then queued or (backfill) stored at once, exactly once; stored events
listed and looked up by key; refused events listed with why."""

from __future__ import annotations

from decimal import Decimal

from google.protobuf.timestamp_pb2 import Timestamp

from bxb.metering.v1 import usage_events_pb2 as pb
from bxb.metering.v1 import usage_events_pb2_grpc
from services.common import pagination, tenancy
from services.common.decimals import canonical, parse_decimal
from services.common.errors import InvalidArgument, NotFound
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow
from services.metering.intake import Intake
from services.metering.messages import event_of, stored_message
from services.metering.store import EventStore

MAX_BATCH = 500
MAX_FUTURE_SECONDS = 300
MAX_PROPERTIES_BYTES = 16_384
MAX_ID = 200
# Values are aggregated as ClickHouse Decimal128 with 12 decimal places.
VALUE_PLACES = 12
VALUE_LIMIT = Decimal(10) ** (38 - VALUE_PLACES)


def value_text(text: str, field: str) -> str:
    """The top-level value in canonical notation, refused unless it is a
    decimal that the aggregations hold exactly."""
    value = parse_decimal(text, field, allow_negative=True)
    _, digits, exponent = value.as_tuple()
    significant = "".join(map(str, digits)).rstrip("0")
    places = -exponent - (len(digits) - len(significant)) if significant else 0
    if value.copy_abs() >= VALUE_LIMIT or places > VALUE_PLACES:  # abs() would round to 28 digits
        raise InvalidArgument(
            f"{field} must have at most {38 - VALUE_PLACES} integer digits and {VALUE_PLACES} decimal places, "
            f"got {text!r}",
            field=field,
        )
    return canonical(value)


def normalized(event: pb.UsageEvent, where: str, now: Timestamp) -> pb.UsageEvent:
    """The event, checked and completed in place: a server-assigned
    transaction_id and the time of receipt when missing, the value in
    canonical notation. Works on the message itself, so the queue sends it
    on without a copy (this runs once per event at full ingestion rate)."""
    for name in ("customer_id", "code"):
        if not getattr(event, name):
            raise InvalidArgument(f"{where}{name} is required", field=f"{where}{name}")
    for name in ("transaction_id", "customer_id", "code", "subscription_id"):
        if len(getattr(event, name)) > MAX_ID:
            raise InvalidArgument(f"{where}{name} must be at most {MAX_ID} characters", field=f"{where}{name}")
    if not event.HasField("timestamp"):
        event.timestamp.CopyFrom(now)
    elif (event.timestamp.seconds, event.timestamp.nanos) > (now.seconds + MAX_FUTURE_SECONDS, now.nanos):
        raise InvalidArgument(
            f"{where}timestamp is more than 5 minutes in the future",
            field=f"{where}timestamp",
            reason="TIMESTAMP_IN_FUTURE",
        )
    size = sum(len(k.encode()) + len(v.encode()) for k, v in event.properties.items())
    if size > MAX_PROPERTIES_BYTES:
        raise InvalidArgument(
            f"{where}properties exceed {MAX_PROPERTIES_BYTES} bytes",
            field=f"{where}properties",
            reason="PROPERTIES_TOO_LARGE",
        )
    if event.value:
        event.value = value_text(event.value, f"{where}value")
    if not event.transaction_id:
        event.transaction_id = new_id("evt")
    return event


def _placed(events) -> list[tuple[pb.UsageEvent, str]]:
    """The events of a call (1 to MAX_BATCH), each with the prefix naming its
    fields in errors: none for a single event, `events[i].` in a batch."""
    if not events:
        raise InvalidArgument("events must not be empty", field="events")
    if len(events) > MAX_BATCH:
        raise InvalidArgument(f"at most {MAX_BATCH} events per call", field="events", reason="BATCH_TOO_LARGE")
    single = len(events) == 1
    return [(e, "" if single else f"events[{i}].") for i, e in enumerate(events)]


def checked(event: pb.UsageEvent, where: str, now: Timestamp) -> pb.UsageEvent | pb.EventError:
    """The valid event (completed in place), or why it is refused."""
    try:
        return normalized(event, where, now)
    except InvalidArgument as error:
        return pb.EventError(reason=error.reason, field=error.field, message=error.message)


class EventServicer(usage_events_pb2_grpc.EventServiceServicer):
    def __init__(self, store: EventStore, intake: Intake):
        self.store = store
        self.intake = intake

    async def IngestEvents(self, request: pb.IngestEventsRequest, context) -> pb.IngestEventsResponse:
        org = tenancy.organization_id()
        now = utcnow()
        received = to_proto(now)
        events = [event_of(normalized(e, where, received)) for e, where in _placed(request.events)]
        fresh = await self.store.ingest(org, events, now)
        return pb.IngestEventsResponse(
            results=[
                pb.IngestResult(
                    transaction_id=e.transaction_id,
                    outcome=pb.INGEST_OUTCOME_ACCEPTED if new else pb.INGEST_OUTCOME_DUPLICATE,
                )
                for e, new in zip(events, fresh, strict=True)
            ]
        )

    async def SubmitEvents(self, request: pb.SubmitEventsRequest, context) -> pb.SubmitEventsResponse:
        org = tenancy.organization_id()
        now = utcnow()
        received = to_proto(now)
        # A call may only report refusals (a batch the gateway refused whole).
        placed = _placed(request.events) if request.events or not request.rejected else []
        outcomes = [checked(e, where, received) for e, where in placed]
        valid = [e for e in outcomes if isinstance(e, pb.UsageEvent)]
        if request.backfill:
            # What was queued before goes first, so the first accepted copy of a key wins.
            await self.intake.settled()
            fresh = await self.intake.admit(org, [event_of(e) for e in valid], now) if valid else []
            kept = iter(pb.INGEST_OUTCOME_ACCEPTED if new else pb.INGEST_OUTCOME_DUPLICATE for new in fresh)
        else:
            if valid:
                await self.intake.queue(org, valid, now)
            kept = iter([pb.INGEST_OUTCOME_QUEUED] * len(valid))
        results, rejected = [], list(request.rejected)
        for sent, outcome in zip(request.events, outcomes, strict=True):
            if isinstance(outcome, pb.UsageEvent):
                results.append(pb.SubmitResult(transaction_id=outcome.transaction_id, outcome=next(kept)))
                continue
            results.append(
                pb.SubmitResult(transaction_id=sent.transaction_id, outcome=pb.INGEST_OUTCOME_REJECTED, error=outcome)
            )
            alone = pb.EventError(reason=outcome.reason, field=_unplaced(outcome.field), message=outcome.message)
            rejected.append(pb.RejectedEvent(event=sent, error=alone))
        await self.intake.rejections.record(org, rejected, now)
        return pb.SubmitEventsResponse(results=results)

    async def GetEvent(self, request: pb.GetEventRequest, context) -> pb.UsageEvent:
        org = tenancy.organization_id()
        await self.intake.settled()  # an event accepted a moment ago is found
        event = await self.store.get(org, request.transaction_id)
        if event is None:
            raise NotFound(f"event {request.transaction_id!r} not found", field="transaction_id")
        return stored_message(event)

    async def ListEvents(self, request: pb.ListEventsRequest, context) -> pb.ListEventsResponse:
        org = tenancy.organization_id()
        size, offset = pagination.page_size(request.page_size), pagination.decode_token(request.page_token)
        await self.intake.settled()
        found = await self.store.list(
            org,
            customer_id=request.customer_id,
            code=request.code,
            transaction_id=request.transaction_id,
            offset=offset,
            limit=size + 1,
        )
        return pb.ListEventsResponse(
            events=[stored_message(e) for e in found[:size]],
            next_page_token=pagination.next_token(offset, size, len(found)),
        )

    async def ListRejectedEvents(self, request: pb.ListRejectedEventsRequest, context) -> pb.ListRejectedEventsResponse:
        org = tenancy.organization_id()
        size, offset = pagination.page_size(request.page_size), pagination.decode_token(request.page_token)
        await self.intake.settled()  # the queue's consumer flags unknown metrics and customers
        found = await self.intake.rejections.list(org, request.customer_id, request.code, offset, size + 1)
        return pb.ListRejectedEventsResponse(
            rejected_events=found[:size], next_page_token=pagination.next_token(offset, size, len(found))
        )


def _unplaced(field: str) -> str:
    """A batch item's field named as in a single event: `events[3].value` -> `value`."""
    return field.split("].", 1)[1] if field.startswith("events[") else field
