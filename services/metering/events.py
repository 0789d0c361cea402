"""Event ingestion and lookup (EventService): each event validated on its
own, then queued or (backfill) stored at once, exactly once; stored events
listed and looked up by key; refused events listed with why."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from bxb.catalog.v1.billable_metrics_pb2 import BillableMetric as Metric
from bxb.metering.v1 import usage_events_pb2 as pb
from bxb.metering.v1 import usage_events_pb2_grpc
from services.common import pagination, tenancy, trust
from services.common.errors import InvalidArgument, NotFound, PermissionDenied
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import to_proto, utcnow
from services.metering.intake import Intake
from services.metering.messages import event_of, stored_message
from services.metering.numbers import property_error, value_text
from services.metering.store import EventStore, Outcome, Unstorable

MAX_BATCH = 500
MAX_FUTURE_SECONDS = 300
# The earliest time an event may carry: 1970-01-01T00:00:00Z.
EARLIEST = Timestamp(seconds=0)
MAX_PROPERTIES_BYTES = 16_384
MAX_ID = 200


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
    elif event.timestamp.seconds < EARLIEST.seconds:
        raise InvalidArgument(
            f"{where}timestamp is before 1970-01-01T00:00:00Z, the earliest time an event may carry",
            field=f"{where}timestamp",
            reason="TIMESTAMP_OUT_OF_RANGE",
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


def outcome_of(stored: Outcome) -> pb.IngestOutcome.ValueType:
    """A stored event's outcome: ACCEPTED when new, DUPLICATE, or REJECTED
    when ClickHouse refused it (it is listed with the rejected events)."""
    if isinstance(stored, Unstorable):
        return pb.INGEST_OUTCOME_REJECTED
    return pb.INGEST_OUTCOME_ACCEPTED if stored else pb.INGEST_OUTCOME_DUPLICATE


def submit_result(stored: Outcome) -> pb.SubmitResult:
    """A backfilled event's result (its transaction_id set by the caller);
    an unstorable one says why (it is already listed as rejected)."""
    result = pb.SubmitResult(outcome=outcome_of(stored))
    if isinstance(stored, Unstorable):
        result.error.CopyFrom(pb.EventError(reason="UNSTORABLE", message=stored.reason))
    return result


def _placed(events: Sequence[pb.UsageEvent]) -> list[tuple[pb.UsageEvent, str]]:
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


def counted(
    outcome: pb.UsageEvent | pb.EventError, where: str, metrics: dict[str, Metric]
) -> pb.UsageEvent | pb.EventError:
    """A valid event, unless the property its metric aggregates is not a number."""
    if not isinstance(outcome, pb.UsageEvent) or (metric := metrics.get(outcome.code)) is None:
        return outcome
    return property_error(metric, outcome.properties, where) or outcome


class EventServicer(usage_events_pb2_grpc.EventServiceServicer):
    def __init__(self, store: EventStore, intake: Intake):
        self.store = store
        self.intake = intake

    async def IngestEvents(self, request: pb.IngestEventsRequest, context: Context) -> pb.IngestEventsResponse:
        org = tenancy.organization_id()
        now = utcnow()
        received = to_proto(now)
        placed = [(normalized(e, where, received), where) for e, where in _placed(request.events)]
        metrics = await self._metrics(org, [e for e, _ in placed])
        for e, where in placed:
            if isinstance(refused := counted(e, where, metrics), pb.EventError):
                raise InvalidArgument(refused.message, field=refused.field, reason=refused.reason)
        events = [event_of(e) for e, _ in placed]
        outcomes = await self.intake.admit(org, events, now)
        return pb.IngestEventsResponse(
            results=[
                pb.IngestResult(transaction_id=e.transaction_id, outcome=outcome_of(stored))
                for e, stored in zip(events, outcomes, strict=True)
            ]
        )

    async def SubmitEvents(self, request: pb.SubmitEventsRequest, context: Context) -> pb.SubmitEventsResponse:
        org = tenancy.organization_id()
        if request.rejected and not trust.from_gateway(context.invocation_metadata()):
            raise PermissionDenied("only the gateway records the events it refused", field="rejected")
        now = utcnow()
        received = to_proto(now)
        # A call may only report refusals (a batch the gateway refused whole).
        # Each result names its event's fields as the event's own (`value`): its index is its place.
        placed = _placed(request.events) if request.events or not request.rejected else []
        outcomes = [checked(e, "", received) for e, _ in placed]
        metrics = await self._metrics(org, [e for e in outcomes if isinstance(e, pb.UsageEvent)])
        outcomes = [counted(e, "", metrics) for e in outcomes]
        valid = [e for e in outcomes if isinstance(e, pb.UsageEvent)]
        if request.backfill:
            # What was queued before goes first, so the first accepted copy of a key wins.
            await self.intake.settled(org)
            stored = await self.intake.admit(org, [event_of(e) for e in valid], now) if valid else []
            kept: Iterator[pb.SubmitResult] = iter(map(submit_result, stored))
        else:
            if valid:
                await self.intake.queue(org, valid, now)
            kept = iter([pb.SubmitResult(outcome=pb.INGEST_OUTCOME_QUEUED)] * len(valid))
        results, rejected = [], list(request.rejected)
        for sent, outcome in zip(request.events, outcomes, strict=True):
            if isinstance(outcome, pb.UsageEvent):
                result = pb.SubmitResult()
                result.CopyFrom(next(kept))
                result.transaction_id = outcome.transaction_id
                results.append(result)
                continue
            results.append(
                pb.SubmitResult(transaction_id=sent.transaction_id, outcome=pb.INGEST_OUTCOME_REJECTED, error=outcome)
            )
            rejected.append(pb.RejectedEvent(event=sent, error=outcome))
        await self.intake.rejections.record(org, rejected, now)
        return pb.SubmitEventsResponse(results=results)

    async def _metrics(self, org: str, events: list[pb.UsageEvent]) -> dict[str, Metric]:
        """The definitions of the events' metrics that exist (none without a catalog)."""
        references = self.intake.references
        if references is None or not events:
            return {}
        return await references.metrics(org, {e.code for e in events})

    async def GetEvent(self, request: pb.GetEventRequest, context: Context) -> pb.UsageEvent:
        org = tenancy.organization_id()
        await self.intake.settled(org)  # an event accepted a moment ago is found
        event = await self.store.get(org, request.transaction_id)
        if event is None:
            raise NotFound(f"event {request.transaction_id!r} not found", field="transaction_id")
        return stored_message(event)

    async def ListEvents(self, request: pb.ListEventsRequest, context: Context) -> pb.ListEventsResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListEvents")
        await self.intake.settled(org)
        found = await self.store.list(
            org,
            customer_id=request.customer_id,
            code=request.code,
            transaction_id=request.transaction_id,
            offset=page.offset,
            limit=page.size + 1,
        )
        events, token = pagination.answer(page, [stored_message(e) for e in found])
        return pb.ListEventsResponse(events=events, next_page_token=token)

    async def ListRejectedEvents(
        self, request: pb.ListRejectedEventsRequest, context: Context
    ) -> pb.ListRejectedEventsResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListRejectedEvents")
        await self.intake.settled(org)  # the queue's consumer flags unknown metrics and customers
        found = await self.intake.rejections.list(org, request.customer_id, request.code, page.offset, page.size + 1)
        rejected, token = pagination.answer(page, found)
        return pb.ListRejectedEventsResponse(rejected_events=rejected, next_page_token=token)
