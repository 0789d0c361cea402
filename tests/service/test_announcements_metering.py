"""Events rejected at ingestion as public events: metering publishes
events_rejected (stream BXB_METERING) once it has recorded them, whether
ingestion refused them at once or its queue's consumer flagged them, and
payments announces them (events.rejected) as GET /v1/events?status=rejected
lists them. A NATS that cannot take the notice never fails the call."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from bxb.metering.v1 import events_pb2
from bxb.metering.v1 import usage_events_pb2 as pb
from services.common import bus
from services.metering import rejection_notices
from services.metering.rejection_notices import EVENTS_REJECTED, RejectionNotices, notices
from tests.conftest import Infra, Tenant, unique
from tests.service.announcement_helpers import Announcements
from tests.service.test_gateway_usage_views import item, send, setup


def canonical(items: list[dict]) -> list[str]:
    return sorted(json.dumps(i, sort_keys=True) for i in items)


async def test_rejected_events_are_announced_as_listed(tenant: Tenant, make_tenant, announcements: Announcements):
    org = tenant.organization_id
    hooked = await announcements.endpoint(org, "events.rejected")
    await announcements.endpoint(org, "invoice.paid")
    await setup(tenant)
    sent = [item("ok"), item("bad_value", "abc"), item("typo", metric_key="api_callz"), 7]
    assert [r["status"] for r in await send(tenant, *sent)] == [202, 400, 202, 400]
    listed = (await tenant.http.get("/v1/events", params={"status": "rejected"})).json()["events"]
    assert len(listed) == 3  # refused at once (two), and flagged by the queue's consumer (one)

    async def all_announced() -> list:
        found = await announcements.all(org, "events.rejected")
        told = [rejected for a in found for rejected in a.data["rejected_events"]]
        assert canonical(told) == canonical(listed)
        return found

    found = await announcements.eventually(all_announced)
    assert {a.customer_id for a in found} == {""}
    for announced in found:
        assert await announcements.deliveries(announced.id) == [(hooked, "", "DELIVERY_STATUS_PENDING")]

    payload = await announcements.domain_event(
        bus.METERING,
        EVENTS_REJECTED,
        where=lambda data: events_pb2.EventsRejected.FromString(data).organization_id == org,
    )
    notice = events_pb2.EventsRejected.FromString(payload)
    assert notice.event_id.startswith("evt_") and notice.occur_time.seconds > 0
    assert all(r.reject_time == notice.occur_time for r in notice.rejected_events)
    durable = "payments-announcements-metering"
    await announcements.redelivered_once(org, notice.event_id, bus.METERING, durable, EVENTS_REJECTED)

    other = await make_tenant()
    try:
        assert await announcements.all(other.organization_id) == []
    finally:
        await other.http.aclose()


def rejection(body_bytes: int) -> pb.RejectedEvent:
    return pb.RejectedEvent(event=pb.UsageEvent(code="x"), error=pb.EventError(reason="R"), body="b" * body_bytes)


def test_many_rejections_are_told_in_notices_under_the_size_limit():
    now = datetime(2026, 3, 1, tzinfo=UTC)
    split = notices("org_n", [rejection(100_000) for _ in range(5)], now)
    assert [len(n.rejected_events) for n in split] == [2, 2, 1]
    assert all(n.ByteSize() <= rejection_notices.MAX_NOTICE_BYTES for n in split)
    assert len({n.event_id for n in split}) == 3


async def test_a_nats_that_cannot_take_the_notice_loses_it_without_failing(
    infra: Infra, caplog: pytest.LogCaptureFixture
):
    unopened = bus.Bus(infra.nats.url, unique("unopened"))  # never connected: every publish fails
    told = RejectionNotices(unopened, timeout=0.5)
    now = datetime.now(UTC)
    with caplog.at_level(logging.WARNING, "bxb.metering.notices"):
        told.tell("org_down", [rejection(10)], now)  # returns at once
        told.tell("", [rejection(10)], now)  # no organization: no one to tell
        told.tell("org_down", [], now)
        await told.settled()
    assert [r.getMessage() for r in caplog.records] == [
        "events_rejected of org_down was not published; the rejections stay listed"
    ]
