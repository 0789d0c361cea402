"""Usage queries (UsageService): exact aggregations, one ClickHouse query
per call however many it asks for, each after the queue has drained;
dashboard summaries from the daily rollups (eventual, without waiting); and
exact histograms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from bxb.metering.v1 import usage_pb2 as pb
from bxb.metering.v1 import usage_pb2_grpc
from services.common import tenancy
from services.common.aggregations import aggregation
from services.common.decimals import canonical
from services.common.errors import InvalidArgument, Unavailable
from services.common.grpc_server import Context
from services.common.timestamps import from_proto, to_proto
from services.metering import histogram, rollups
from services.metering.aggregation import Bucket, Usage, UsageQuery, Window
from services.metering.definitions import Definitions, UsageRequest
from services.metering.intake import Intake
from services.metering.store import EventStore

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

MAX_BUCKETS = 100
MAX_GROUP_BY = 10
# A subscription owns unassigned events in a few windows per period; the cap
# keeps one request's SQL small.
MAX_WINDOWS = 100
MAX_BATCH = 500
# A month of hours, or a week of minutes.
MAX_HISTOGRAM_BUCKETS = 10_080


def _invalid(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{field} {message}", field=field)


def _named[V: int](enum: _EnumTypeWrapper[V], value: V, prefix: str, field: str, unset: str) -> str:
    """An enum field's value by its short name ("unique_count", "hour"); the
    unspecified value or one this version does not know is refused."""
    if value == 0 or value not in enum.values():
        raise _invalid(field, unset)
    return enum.Name(value).removeprefix(prefix).lower()


class _Span(Protocol):
    @property
    def start_time(self) -> Timestamp: ...
    @property
    def end_time(self) -> Timestamp: ...
    def HasField(self, field_name: Literal["start_time", "end_time"]) -> bool: ...


def _range(message: _Span, where: str) -> Window:
    """A message's start_time and end_time, both required, end not before start."""
    for name in ("start_time", "end_time"):
        if not message.HasField(name):
            raise _invalid(f"{where}{name}", "is required")
    start, end = from_proto(message.start_time), from_proto(message.end_time)
    if end < start:
        raise _invalid(f"{where}end_time", "must not be before start_time")
    return start, end


def _buckets(request: pb.AggregateUsageRequest, where: str) -> tuple[Bucket, ...]:
    if len(request.buckets) > MAX_BUCKETS:
        raise _invalid(f"{where}buckets", f"must have at most {MAX_BUCKETS} entries")
    buckets = []
    for b, bucket in enumerate(request.buckets):
        at = f"{where}buckets[{b}].filters"
        if not bucket.filters:
            raise _invalid(at, "must not be empty")
        keys: set[str] = set()
        for f, rule in enumerate(bucket.filters):
            if not rule.key:
                raise _invalid(f"{at}[{f}].key", "is required")
            if rule.key in keys:
                raise _invalid(f"{at}[{f}].key", f"repeats {rule.key!r} in the same bucket")
            if not rule.values:
                raise _invalid(f"{at}[{f}].values", "must not be empty")
            keys.add(rule.key)
        buckets.append(tuple((rule.key, tuple(rule.values)) for rule in bucket.filters))
    return tuple(buckets)


def _group_by(request: pb.AggregateUsageRequest, where: str) -> tuple[str, ...]:
    if len(request.group_by) > MAX_GROUP_BY:
        raise _invalid(f"{where}group_by", f"must have at most {MAX_GROUP_BY} entries")
    for i, key in enumerate(request.group_by):
        if not key:
            raise _invalid(f"{where}group_by[{i}]", "must not be empty")
        if key in request.group_by[:i]:
            raise _invalid(f"{where}group_by[{i}]", f"repeats {key!r}")
    return tuple(request.group_by)


def _windows(request: pb.AggregateUsageRequest, where: str) -> tuple[Window, ...]:
    if not request.unassigned_windows:
        return ()
    if not request.subscription_id:
        raise _invalid(f"{where}unassigned_windows", "need a subscription_id")
    if len(request.unassigned_windows) > MAX_WINDOWS:
        raise _invalid(f"{where}unassigned_windows", f"must have at most {MAX_WINDOWS} entries")
    return tuple(_range(w, f"{where}unassigned_windows[{i}].") for i, w in enumerate(request.unassigned_windows))


def _basics(request: UsageRequest, where: str = "") -> tuple[str, Window]:
    """The aggregation's name and the window of a usage request; customer and code are required."""
    aggregation = _named(pb.Aggregation, request.aggregation, "AGGREGATION_", f"{where}aggregation", "is required")
    for name in ("customer_id", "code"):
        if not getattr(request, name):
            raise _invalid(f"{where}{name}", "is required")
    return aggregation, _range(request, where)


def query_of(request: pb.AggregateUsageRequest, where: str = "") -> UsageQuery:
    """The validated query of a request; `where` prefixes the fields named in errors."""
    aggregation, (start, end) = _basics(request, where)
    if aggregation == "count" and request.include_values:
        raise _invalid(f"{where}include_values", "needs an aggregation of a value, not count")
    return UsageQuery(
        customer_id=request.customer_id,
        code=request.code,
        aggregation=aggregation,
        field=request.field_name,
        start=start,
        end=end,
        include_values=request.include_values,
        subscription_id=request.subscription_id,
        windows=_windows(request, where),
        buckets=_buckets(request, where),
        group_by=_group_by(request, where),
    )


def response_of(query: UsageQuery, groups: list[Usage]) -> pb.AggregateUsageResponse:
    """With buckets or group_by, one UsageGroup per bucket and group with
    events; otherwise the one usage in the top-level fields."""
    if query.buckets or query.group_by:
        return pb.AggregateUsageResponse(
            groups=[
                pb.UsageGroup(
                    bucket=g.bucket,
                    group_values=g.group_values,
                    value=canonical(g.value),
                    event_count=g.count,
                    values=[canonical(v) for v in g.values],
                )
                for g in groups
            ]
        )
    [usage] = groups
    return pb.AggregateUsageResponse(
        value=canonical(usage.value), event_count=usage.count, values=[canonical(v) for v in usage.values]
    )


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    """Exact usage: each call first waits for the events queued before it."""

    def __init__(self, store: EventStore, intake: Intake, definitions: Definitions | None = None):
        self.store = store
        self.intake = intake
        # The catalog's metric definitions; without one (a metering of its
        # own), every request names its aggregation.
        self.definitions = definitions

    async def _settle(self, org: str, requests: Sequence[UsageRequest], where: list[str]) -> None:
        if self.definitions is not None:
            await self.definitions.settle(org, requests, where)

    async def AggregateUsage(self, request: pb.AggregateUsageRequest, context: Context) -> pb.AggregateUsageResponse:
        org = tenancy.organization_id()
        await self._settle(org, [request], [""])
        query = query_of(request)
        await self.intake.settled(org)
        [groups] = await self.store.aggregate_many(org, [query])
        return response_of(query, groups)

    async def BatchAggregateUsage(
        self, request: pb.BatchAggregateUsageRequest, context: Context
    ) -> pb.BatchAggregateUsageResponse:
        org = tenancy.organization_id()
        if len(request.requests) > MAX_BATCH:
            raise _invalid("requests", f"must have at most {MAX_BATCH} entries")
        await self._settle(org, list(request.requests), [f"requests[{i}]." for i in range(len(request.requests))])
        queries = [query_of(r, f"requests[{i}].") for i, r in enumerate(request.requests)]
        await self.intake.settled(org)
        results = await self.store.aggregate_many(org, queries)
        return pb.BatchAggregateUsageResponse(
            responses=[response_of(q, groups) for q, groups in zip(queries, results, strict=True)]
        )

    async def SummarizeUsage(self, request: pb.SummarizeUsageRequest, context: Context) -> pb.SummarizeUsageResponse:
        org = tenancy.organization_id()
        await self._settle(org, [request], [""])
        aggregation, (start, end) = _basics(request)
        if aggregation in rollups.ROLLED_UP:
            summary = rollups.Summary(request.customer_id, request.code, aggregation, request.field_name, start, end)
            value, count = await self.store.summarize(org, summary)
            return pb.SummarizeUsageResponse(value=canonical(value), event_count=count, exact=False)
        query = UsageQuery(request.customer_id, request.code, aggregation, request.field_name, start, end)
        await self.intake.settled(org)
        [[usage]] = await self.store.aggregate_many(org, [query])
        return pb.SummarizeUsageResponse(value=canonical(usage.value), event_count=usage.count, exact=True)

    async def UsageHistogram(self, request: pb.UsageHistogramRequest, context: Context) -> pb.UsageHistogramResponse:
        org = tenancy.organization_id()
        await self._settle(org, [request], [""])
        aggregation, (start, end) = _basics(request)
        if aggregation not in histogram.HISTOGRAMMED:
            raise InvalidArgument(
                f"a {aggregation} metric has no histogram: it is a level held over time, not usage per bucket",
                field="aggregation",
                reason="UNSUPPORTED_AGGREGATION",
            )
        interval = _named(
            pb.HistogramInterval,
            request.interval,
            "HISTOGRAM_INTERVAL_",
            "interval",
            "is required (minute, hour or day)",
        )
        asked = histogram.Histogram(
            request.customer_id, request.code, aggregation, request.field_name, start, end, interval, request.group_by
        )
        if (count := histogram.buckets(asked)) > MAX_HISTOGRAM_BUCKETS:
            raise _invalid(
                "interval", f"makes {count} buckets of the window; at most {MAX_HISTOGRAM_BUCKETS} are allowed"
            )
        await self.intake.settled(org)
        return pb.UsageHistogramResponse(
            buckets=[
                pb.HistogramBucket(
                    start_time=to_proto(bar.start),
                    end_time=to_proto(bar.end),
                    group_value=bar.group_value,
                    value=canonical(bar.value),
                    event_count=bar.count,
                )
                for bar in await self.store.histogram(org, asked)
            ]
        )

    async def ComputeUsage(self, request: pb.ComputeUsageRequest, context: Context) -> pb.ComputeUsageResponse:
        """The metric's usage as the catalog defines it; scoped to a
        subscription, the events its invoice counts (definitions.py)."""
        org = tenancy.organization_id()
        start, end = _range(request, "")
        if end == start:
            raise _invalid("end_time", "must be after start_time")
        if self.definitions is None:
            raise Unavailable("usage is computed from the catalog's metrics, and this service has no catalog")
        code = request.metric_code
        windows: tuple[Window, ...] = ()
        if request.subscription_id:
            metric, owned = await self.definitions.scope(
                org, request.customer_id, request.subscription_id, code, (start, end)
            )
            windows = tuple(owned)  # none: only the events naming it
        else:
            metric = await self.definitions.metric(org, code)
        query = UsageQuery(
            request.customer_id,
            code,
            _named(pb.Aggregation, aggregation(metric), "AGGREGATION_", "aggregation", "is required"),
            metric.field_name,
            start,
            end,
            subscription_id=request.subscription_id,
            windows=windows,
        )
        await self.intake.settled(org)
        [[usage]] = await self.store.aggregate_many(org, [query])
        return pb.ComputeUsageResponse(
            customer_id=request.customer_id,
            metric_code=code,
            start_time=request.start_time,
            end_time=request.end_time,
            subscription_id=request.subscription_id,
            value=canonical(usage.value),
            event_count=usage.count,
        )
