"""What a usage query names, read from the catalog: a metric's aggregation
and field, and for a query scoped to a subscription the windows in which it
owns the customer's events naming none.

A usage request names a metric; the service knows how that metric is
aggregated. A request that leaves the aggregation unset gets the metric's;
one that contradicts it (MAX of a SUM metric, another field) is refused with
INVALID_ARGUMENT naming the field, never answered with another number. A
code the catalog does not know is aggregated as asked (events may arrive
before their metric exists). The catalog is asked on every query, never
from a cache, so a metric just changed is read as it is now; when it
cannot be reached the query is UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import grpc

from bxb.catalog.v1 import (
    billable_metrics_pb2,
    event_references_pb2,
    plans_pb2,
    subscriptions_pb2,
)
from bxb.metering.v1 import usage_pb2 as pb
from services.common import peers
from services.common.aggregations import aggregation
from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.common.ownership import Claim, Window, owned
from services.common.timestamps import from_proto, from_proto_or_none

Metric = billable_metrics_pb2.BillableMetric
PAGE = 500  # subscriptions of a customer read per catalog call
UNREACHABLE = "the catalog could not be reached to read what the usage query names"


def _name(value: pb.Aggregation.ValueType) -> str:
    return pb.Aggregation.Name(value).removeprefix("AGGREGATION_").lower()


UsageRequest = pb.AggregateUsageRequest | pb.SummarizeUsageRequest | pb.UsageHistogramRequest
"""A usage query naming a metric's aggregation and field."""


def reconcile(request: UsageRequest, metric: Metric | None, where: str = "") -> None:
    """Fills an unset aggregation and field from the metric; refuses one
    that contradicts it. Without a metric the request stays as asked."""
    if metric is None:
        if not request.aggregation:  # nothing to aggregate by
            raise NotFound(f"billable metric {request.code!r} not found", field=f"{where}code")
        return
    defined = aggregation(metric)
    if not request.aggregation:
        request.aggregation = defined
        request.field_name = request.field_name or metric.field_name
    if request.aggregation != defined:
        raise InvalidArgument(
            f"metric {metric.code!r} aggregates by {_name(defined)}, not {_name(request.aggregation)}",
            field=f"{where}aggregation",
            reason="AGGREGATION_MISMATCH",
        )
    if defined != pb.AGGREGATION_COUNT and request.field_name != metric.field_name:
        raise InvalidArgument(
            f"metric {metric.code!r} aggregates field {metric.field_name!r}, not {request.field_name!r}",
            field=f"{where}field_name",
            reason="FIELD_MISMATCH",
        )


class Definitions:
    def __init__(self, catalog: peers.Catalog, page: int = PAGE):
        self.catalog = catalog
        self.page = page  # subscriptions of a customer read per call

    async def metrics(self, org: str, codes: set[str]) -> dict[str, Metric]:
        """The catalog's metrics among `codes`, read now."""
        request = event_references_pb2.ResolveEventReferencesRequest(metric_codes=sorted(codes))
        found = await self._ask(self.catalog.resolve_event_references, request, org)
        return {m.code: m for m in found.billable_metrics}

    async def settle(self, org: str, requests: Sequence[UsageRequest], where: list[str]) -> None:
        """Every request's aggregation and field as its metric defines them (see reconcile)."""
        try:
            known = await self.metrics(org, {r.code for r in requests})
        except Unavailable:
            if all(r.aggregation for r in requests):
                return  # named in full: served as asked, reads never wait on the catalog
            raise
        for request, prefix in zip(requests, where, strict=True):
            reconcile(request, known.get(request.code), prefix)

    async def metric(self, org: str, code: str) -> Metric:
        """One metric, NOT_FOUND when the catalog does not have it."""
        found = (await self.metrics(org, {code})).get(code)
        if found is None:
            raise NotFound(f"metric {code!r} not found", field="metric_code")
        return found

    async def scope(
        self, org: str, customer_id: str, subscription_id: str, code: str, window: Window
    ) -> tuple[Metric, list[Window]]:
        """The metric as the subscription's pinned plan charges it, and the
        windows of `window` in which the subscription owns the customer's
        events of it naming no subscription."""
        subscriptions = await self._subscriptions(org, customer_id)
        mine = next((s for s in subscriptions if s.id == subscription_id), None)
        if mine is None:
            raise NotFound(
                f"subscription {subscription_id!r} not found for customer {customer_id!r}", field="subscription_id"
            )
        plans = {key: await self._plan(org, *key) for key in {(s.plan_code, s.plan_version) for s in subscriptions}}
        charged = {key: {c.billable_metric_code: c.billable_metric for c in p.charges} for key, p in plans.items()}
        metric = charged[(mine.plan_code, mine.plan_version)].get(code)
        if metric is None:
            raise InvalidArgument(
                f"the plan of subscription {subscription_id!r} does not charge metric {code!r}", field="metric_code"
            )
        claims = [
            Claim(
                s.id,
                from_proto(s.start_time),
                from_proto_or_none(s, "terminate_time"),
                from_proto(s.create_time),
                frozenset(charged[(s.plan_code, s.plan_version)]),
            )
            for s in subscriptions
        ]
        [claim] = [c for c in claims if c.id == subscription_id]
        return metric, owned(claim, claims, code, *window)

    async def _ask[Request, Response](
        self, method: Callable[[str, Request], Awaitable[Response]], request: Request, org: str
    ) -> Response:
        """One catalog call; UNAVAILABLE when the catalog does not answer."""
        try:
            return await method(org, request)
        except grpc.aio.AioRpcError:
            raise Unavailable(UNREACHABLE) from None

    async def _subscriptions(self, org: str, customer_id: str) -> list[subscriptions_pb2.Subscription]:
        listing = peers.every(
            self.catalog.list_subscriptions,
            subscriptions_pb2.ListSubscriptionsRequest,
            lambda page: page.subscriptions,
            org,
            {"customer_id": customer_id},
            self.page,
        )
        try:
            return [subscription async for subscription in listing]
        except grpc.aio.AioRpcError:
            raise Unavailable(UNREACHABLE) from None

    async def _plan(self, org: str, code: str, version: int) -> plans_pb2.Plan:
        return await self._ask(self.catalog.get_plan, plans_pb2.GetPlanRequest(code=code, version=version), org)
