"""Billable metrics (BillableMetricService)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import empty_pb2
from sqlalchemy import select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import billable_metrics_pb2 as pb
from bxb.catalog.v1 import billable_metrics_pb2_grpc
from services.catalog import validation
from services.catalog.models import BillableMetric, Plan, PropertyFilter
from services.common import pagination, tenancy
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import to_proto

# Fields UpdateBillableMetric may change, in the order they are reported.
UPDATABLE = ("name", "description", "aggregation_type", "field_name", "value_type", "filters")
# Fields that decide how usage is computed: frozen while a plan uses the metric.
USAGE_FIELDS = ("aggregation_type", "field_name", "value_type")
# Limits of a metric's filters: keys, values per key, and their lengths.
MAX_FILTER_KEYS = 50
MAX_FILTER_VALUES = 500
MAX_KEY_LENGTH = 100
MAX_VALUE_LENGTH = 200
# What a metric's filters may weigh in all (keys and values): a plan pins a
# copy of its metrics, and a plan travels in events (plans.MAX_PLAN_BYTES).
MAX_FILTER_BYTES = 32 * 1024


def metric_proto(metric: BillableMetric) -> pb.BillableMetric:
    return pb.BillableMetric(
        id=metric.id,
        code=metric.code,
        name=metric.name,
        description=metric.description,
        aggregation_type=pb.AggregationType.Value(metric.aggregation_type),
        field_name=metric.field_name,
        value_type=pb.ValueType.Value(metric.value_type or "VALUE_TYPE_UNSPECIFIED"),
        create_time=to_proto(metric.create_time),
        filters=[pb.PropertyValues(key=item["key"], values=item["values"]) for item in metric.filters],
    )


async def find(session: AsyncSession, org: str, code: str, lock: str = "") -> BillableMetric | None:
    """The metric, or None. `lock` "share" keeps it from being changed or
    deleted until the transaction ends; "update" locks it for a change."""
    query = select(BillableMetric).where(BillableMetric.organization_id == org, BillableMetric.code == code)
    if lock:
        query = query.with_for_update(read=lock == "share")
    return (await session.execute(query)).scalar_one_or_none()


def validated(metric: pb.BillableMetric) -> BillableMetric:
    validation.code(metric.code, "code")
    return BillableMetric(id=new_id("bm"), code=metric.code, **definition(metric))


def definition(metric: pb.BillableMetric) -> dict[str, Any]:
    """The stored columns of a metric's definition (all but id and code), checked.

    A metric reads a property (`field_name`) or, when `value_type` is set, the
    event's top-level value; COUNT reads neither, so both are dropped for it.
    """
    if metric.aggregation_type not in pb.AggregationType.values() or metric.aggregation_type == 0:
        raise InvalidArgument("aggregation_type is required", field="aggregation_type")
    field_name = metric.field_name.strip()
    value_type = metric.value_type
    if metric.aggregation_type == pb.AGGREGATION_TYPE_COUNT:
        field_name, value_type = "", pb.VALUE_TYPE_UNSPECIFIED
    elif value_type and field_name:
        raise InvalidArgument(
            "field_name must be empty when value_type is set: the metric reads the event's value", field="field_name"
        )
    elif not value_type and not field_name:
        raise InvalidArgument(
            f"field_name is required for aggregation_type {aggregation_name(metric.aggregation_type)}",
            field="field_name",
        )
    return {
        "name": validation.text(metric.name.strip() or metric.code, "name"),
        "description": validation.text(metric.description, "description", 2000),
        "aggregation_type": pb.AggregationType.Name(metric.aggregation_type),
        "field_name": validation.text(field_name, "field_name"),
        "value_type": pb.ValueType.Name(value_type) if value_type else "",
        "filters": filters(metric.filters),
    }


def filters(given: Sequence[pb.PropertyValues]) -> list[PropertyFilter]:
    """The property keys charges may filter on, each with its values, as
    stored (proto3 JSON of PropertyValues). Keys are distinct and non-empty;
    each has at least one value, all distinct and non-empty."""
    if len(given) > MAX_FILTER_KEYS:
        raise InvalidArgument(f"a billable metric has at most {MAX_FILTER_KEYS} filters", field="filters")
    result: list[PropertyFilter] = []
    keys: set[str] = set()
    for index, item in enumerate(given):
        here = f"filters[{index}]"
        if not item.key:
            raise InvalidArgument(f"{here}.key is required", field=f"{here}.key")
        validation.text(item.key, f"{here}.key", MAX_KEY_LENGTH)
        if item.key in keys:
            raise InvalidArgument(f"{here}.key: {item.key!r} is given twice", field=f"{here}.key")
        keys.add(item.key)
        if not item.values:
            raise InvalidArgument(f"{here}.values needs at least one value", field=f"{here}.values")
        values = validation.strings(item.values, f"{here}.values", MAX_FILTER_VALUES, MAX_VALUE_LENGTH)
        result.append({"key": item.key, "values": values})
    weight = sum(len(item["key"].encode()) + sum(len(v.encode()) for v in item["values"]) for item in result)
    if weight > MAX_FILTER_BYTES:
        raise InvalidArgument(
            f"filters hold {weight} bytes of keys and values; at most {MAX_FILTER_BYTES}",
            field="filters",
            reason="TOO_LARGE",
        )
    return result


def lost_filter(before: list[PropertyFilter], after: list[PropertyFilter]) -> str:
    """The first filter key (or key=value) of `before` that `after` drops; "" when none is dropped."""
    kept = {item["key"]: set(item["values"]) for item in after}
    for item in before:
        if item["key"] not in kept:
            return item["key"]
        for value in item["values"]:
            if value not in kept[item["key"]]:
                return f"{item['key']}={value}"
    return ""


async def plan_using(session: AsyncSession, org: str, code: str) -> str | None:
    """The code of a plan (any version) of the organization with a charge on the metric, if any."""
    uses = type_coerce(Plan.charges, JSONB).contains([{"billable_metric_code": code}])
    query = select(Plan.code).where(Plan.organization_id == org, uses).order_by(Plan.code).limit(1)
    return (await session.execute(query)).scalar_one_or_none()


def in_use(metric: BillableMetric, plan: str, field: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"billable metric {metric.code!r} is used by plan {plan!r}: its {field} cannot change",
        reason="METRIC_IN_USE",
        field=field,
    )


async def locked(session: AsyncSession, org: str, code: str) -> BillableMetric:
    metric = await find(session, org, code, lock="update")
    if metric is None:
        raise NotFound(f"billable metric {code!r} not found", field="code")
    return metric


def aggregation_name(value: pb.AggregationType.ValueType) -> str:
    return pb.AggregationType.Name(value).removeprefix("AGGREGATION_TYPE_").lower()


class BillableMetricServicer(billable_metrics_pb2_grpc.BillableMetricServiceServicer):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self.sessions = sessions

    async def CreateBillableMetric(
        self, request: pb.CreateBillableMetricRequest, context: Context
    ) -> pb.BillableMetric:
        org = tenancy.organization_id()
        metric = validated(request.billable_metric)
        metric.organization_id = org
        async with self.sessions() as session, session.begin():
            if await find(session, org, metric.code) is not None:
                raise AlreadyExists(f"a billable metric with code {metric.code!r} already exists", field="code")
            session.add(metric)
            await session.flush()
            await session.refresh(metric)
            return metric_proto(metric)

    async def GetBillableMetric(self, request: pb.GetBillableMetricRequest, context: Context) -> pb.BillableMetric:
        org = tenancy.organization_id()
        async with self.sessions() as session:
            metric = await find(session, org, request.code)
        if metric is None:
            raise NotFound(f"billable metric {request.code!r} not found", field="code")
        return metric_proto(metric)

    async def UpdateBillableMetric(
        self, request: pb.UpdateBillableMetricRequest, context: Context
    ) -> pb.BillableMetric:
        """Applies the fields named by update_mask. Fields that decide how usage is
        computed are refused (METRIC_IN_USE) when they would change while a plan
        uses the metric; setting a field to its current value is not a change.
        Filters replace the metric's filters; while a plan uses the metric they
        may gain keys and values but not lose any (a charge may filter on them)."""
        org = tenancy.organization_id()
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgument(f"update_mask must name fields among: {', '.join(UPDATABLE)}", field="update_mask")
        for path in paths:
            if path not in UPDATABLE:
                raise InvalidArgument(
                    f"update_mask: {path!r} cannot be updated; use: {', '.join(UPDATABLE)}", field="update_mask"
                )
        code = request.billable_metric.code
        async with self.sessions() as session, session.begin():
            metric = await locked(session, org, code)
            merged = metric_proto(metric)
            for path in paths:
                if path == "filters":
                    del merged.filters[:]
                    merged.filters.extend(request.billable_metric.filters)
                else:
                    setattr(merged, path, getattr(request.billable_metric, path))
            changes = definition(merged)
            changed = [field for field in USAGE_FIELDS if changes[field] != getattr(metric, field)]
            dropped = lost_filter(metric.filters, changes["filters"])
            if changed or dropped:
                plan = await plan_using(session, org, code)
                if plan is not None and changed:
                    raise in_use(metric, plan, changed[0])
                if plan is not None:
                    raise FailedPrecondition(
                        f"billable metric {metric.code!r} is used by plan {plan!r}: its filters may gain keys "
                        f"and values but not lose any ({dropped})",
                        reason="METRIC_IN_USE",
                        field="filters",
                    )
            for field, value in changes.items():
                setattr(metric, field, value)
            await session.flush()
            return metric_proto(metric)

    async def DeleteBillableMetric(self, request: pb.DeleteBillableMetricRequest, context: Context) -> empty_pb2.Empty:
        org = tenancy.organization_id()
        async with self.sessions() as session, session.begin():
            metric = await locked(session, org, request.code)
            plan = await plan_using(session, org, request.code)
            if plan is not None:
                raise FailedPrecondition(
                    f"billable metric {metric.code!r} is used by plan {plan!r} and cannot be deleted",
                    reason="METRIC_IN_USE",
                    field="code",
                )
            await session.delete(metric)
        return empty_pb2.Empty()

    async def ListBillableMetrics(
        self, request: pb.ListBillableMetricsRequest, context: Context
    ) -> pb.ListBillableMetricsResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListBillableMetrics")
        query = (
            select(BillableMetric)
            .where(BillableMetric.organization_id == org)
            .order_by(BillableMetric.create_time, BillableMetric.id)
            .offset(page.offset)
            .limit(page.size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        billable_metrics, token = pagination.answer(page, [metric_proto(m) for m in rows])
        return pb.ListBillableMetricsResponse(billable_metrics=billable_metrics, next_page_token=token)
