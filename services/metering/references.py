"""What events name: the organization's metrics (their definitions) and
customers, asked of the catalog one batch at a time.

Before events are accepted, their metrics' definitions say which property
each aggregates, so a value that is not a number is refused at once (see
events.py). After they are stored, the new ones naming an unknown metric or
customer are recorded as rejected with the reason, and kept: they count once
the metric and customer exist, as a customer created by its first
subscription a moment later would expect. A stored event whose aggregated
property is not a number (accepted while its metric was unknown) is listed
the same way.

One catalog call per batch resolves every name the cache lacks. Answers are
remembered per organization: a known name for `ttl` seconds, an unknown one
for `unknown_ttl` (so a stream of events naming a metric not created yet asks
at most once in that time). When the catalog cannot be reached, nothing is
checked or flagged: ingestion does not depend on it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Set as AbstractSet

import grpc

from bxb.catalog.v1 import billable_metrics_pb2, event_references_pb2
from bxb.metering.v1 import usage_events_pb2 as pb
from services.common import peers
from services.metering.messages import event_message
from services.metering.numbers import property_error
from services.metering.store import Event

log = logging.getLogger(__name__)
KEPT = 100_000  # names remembered at most; the oldest go first

Metric = billable_metrics_pb2.BillableMetric


class References:
    def __init__(self, catalog: peers.Catalog, ttl: float = 60.0, unknown_ttl: float = 5.0):
        self.catalog = catalog
        self.ttl = ttl
        self.unknown_ttl = unknown_ttl
        # (org, "metric" or "customer", name) -> (expiry, the metric, True for a customer, or None when unknown)
        self._known: OrderedDict[tuple[str, str, str], tuple[float, Metric | bool | None]] = OrderedDict()

    async def resolve(
        self, org: str, codes: set[str], customers: AbstractSet[str] = frozenset()
    ) -> dict[tuple[str, str], Metric | bool | None] | None:
        """Each ("metric", code) and ("customer", id) asked for: the metric,
        True for a known customer, None for an unknown name. None when the
        catalog cannot be reached."""
        now = time.monotonic()
        answers: dict[tuple[str, str], Metric | bool | None] = {}
        missing: set[tuple[str, str]] = set()
        for key in {("metric", code) for code in codes} | {("customer", c) for c in customers}:
            remembered = self._known.get((org, *key))
            if remembered is not None and remembered[0] > now:
                answers[key] = remembered[1]
            else:
                missing.add(key)
        if not missing:
            return answers
        request = event_references_pb2.ResolveEventReferencesRequest(
            metric_codes=sorted(name for kind, name in missing if kind == "metric"),
            customer_ids=sorted(name for kind, name in missing if kind == "customer"),
        )
        try:
            found = await self.catalog.resolve_event_references(org, request)
        except grpc.aio.AioRpcError as error:
            log.warning("catalog unavailable while resolving %d names: %s", len(missing), error.code())
            return None
        resolved: dict[tuple[str, str], Metric | bool | None] = dict.fromkeys(missing)
        resolved.update({("metric", m.code): m for m in found.billable_metrics})
        resolved.update({("customer", c): True for c in found.customer_ids})
        for key, answer in resolved.items():
            self._remember((org, *key), answer, now + (self.ttl if answer is not None else self.unknown_ttl))
        return answers | resolved

    def _remember(self, key: tuple[str, str, str], answer: Metric | bool | None, expiry: float) -> None:
        self._known[key] = (expiry, answer)
        self._known.move_to_end(key)
        while len(self._known) > KEPT:
            self._known.popitem(last=False)

    async def metrics(self, org: str, codes: set[str]) -> dict[str, Metric]:
        """The known metrics among `codes` (none when the catalog cannot be reached)."""
        answers = await self.resolve(org, codes) or {}
        return {name: metric for (_, name), metric in answers.items() if isinstance(metric, Metric)}

    async def unknown(self, org: str, events: list[Event]) -> list[pb.RejectedEvent]:
        """The events naming a metric or customer the organization lacks, or
        whose aggregated property is not a number, as stored rejections (a
        missing metric is reported before a missing customer)."""
        if not events:
            return []
        answers = await self.resolve(org, {e.code for e in events}, {e.customer_id for e in events})
        if answers is None:
            return []
        rejected = []
        for e in events:
            metric = answers[("metric", e.code)]
            if metric is None:
                error = pb.EventError(
                    reason="UNKNOWN_METRIC",
                    field="code",
                    message=f"metric {e.code!r} does not exist; the event is kept and counts once it does",
                )
            elif answers[("customer", e.customer_id)] is None:
                error = pb.EventError(
                    reason="CUSTOMER_NOT_FOUND",
                    field="customer_id",
                    message=f"customer {e.customer_id!r} does not exist; the event is kept and counts once it does",
                )
            else:
                assert isinstance(metric, Metric)
                found = property_error(metric, e.properties, "")
                if found is None:
                    continue
                error = pb.EventError(
                    reason=found.reason,
                    field=found.field,
                    message=f"{found.message}; the event is kept but this value is not counted",
                )
            rejected.append(pb.RejectedEvent(event=event_message(e), error=error, stored=True))
        return rejected
