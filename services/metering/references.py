"""Does an event name a metric and a customer the organization has?

Asked of the catalog over gRPC after the events are stored, and only for new
ones. The answer never blocks or drops an event: one naming an unknown metric
or customer is kept (it counts once they exist, as a customer created by its
first subscription a moment later would expect) and is recorded as rejected
with the reason, so the client sees why billing misses it. When the catalog
cannot be reached, nothing is flagged: ingestion does not depend on it.

Known names are remembered for `ttl` seconds, so steady traffic asks the
catalog nothing; unknown ones are asked again each time.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from bxb.catalog.v1 import billable_metrics_pb2, billable_metrics_pb2_grpc, customers_pb2, customers_pb2_grpc
from bxb.metering.v1 import usage_events_pb2 as pb
from services.common import tenancy
from services.metering.messages import event_message
from services.metering.store import Event

log = logging.getLogger(__name__)
KEPT = 100_000  # known names remembered at most; the oldest go first
TIMEOUT = 5.0  # seconds; a slow catalog must not hold the queue up for long


class References:
    def __init__(self, catalog: grpc.aio.Channel, ttl: float = 60.0):
        self.metrics = billable_metrics_pb2_grpc.BillableMetricServiceStub(catalog)
        self.customers = customers_pb2_grpc.CustomerServiceStub(catalog)
        self.ttl = ttl
        self._known: dict[tuple[str, str, str], float] = {}

    async def _exists(self, org: str, kind: str, name: str) -> bool:
        key = (org, kind, name)
        now = time.monotonic()
        if self._known.get(key, 0.0) > now:
            return True
        options = {"metadata": tenancy.metadata(org), "timeout": TIMEOUT}
        try:
            if kind == "metric":
                await self.metrics.GetBillableMetric(
                    billable_metrics_pb2.GetBillableMetricRequest(code=name), **options
                )
            else:
                await self.customers.GetCustomer(customers_pb2.GetCustomerRequest(id=name), **options)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return False
            log.warning("catalog unavailable while checking %s %r: %s", kind, name, error.code())
            return True
        if len(self._known) >= KEPT:
            self._known.pop(next(iter(self._known)))
        self._known[key] = now + self.ttl
        return True

    async def unknown(self, org: str, events: list[Event]) -> list[pb.RejectedEvent]:
        """The events naming a metric or customer the organization lacks, as
        stored rejections (a missing metric is reported before a missing
        customer)."""
        names = {("metric", e.code) for e in events} | {("customer", e.customer_id) for e in events}
        ordered = sorted(names)
        answers = await asyncio.gather(*(self._exists(org, kind, name) for kind, name in ordered))
        missing = {name for name, ok in zip(ordered, answers, strict=True) if not ok}
        rejected = []
        for e in events:
            if ("metric", e.code) in missing:
                error = pb.EventError(
                    reason="UNKNOWN_METRIC",
                    field="code",
                    message=f"metric {e.code!r} does not exist; the event is kept and counts once it does",
                )
            elif ("customer", e.customer_id) in missing:
                error = pb.EventError(
                    reason="CUSTOMER_NOT_FOUND",
                    field="customer_id",
                    message=f"customer {e.customer_id!r} does not exist; the event is kept and counts once it does",
                )
            else:
                continue
            rejected.append(pb.RejectedEvent(event=event_message(e), error=error, stored=True))
        return rejected
