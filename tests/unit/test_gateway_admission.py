"""Admission control: each kind of request has its own lane of slots, one
organization holds at most its share, and a request that cannot start within
the lane's wait is refused at once (503 OVERLOADED) instead of queueing."""

from __future__ import annotations

import asyncio

import pytest

from gateway.admission import Admission, Lane, kind_of
from gateway.errors import ApiError


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("GET", "/v1/customers/c/invoices", "read"),
        ("POST", "/v1/pricing/calculate", "read"),
        ("POST", "/v1/usage/compute", "read"),
        ("POST", "/v1/invoices/preview", "read"),
        ("POST", "/v1/events", "ingest"),
        ("POST", "/v1/events/batch", "ingest"),
        ("POST", "/v1/events/backfill", "ingest"),
        ("POST", "/v1/plans", "write"),
        ("DELETE", "/v1/subscriptions/s", "write"),
    ],
)
def test_each_request_has_its_lane(method, path, kind):
    assert kind_of(method, path) == kind


async def hold(admission: Admission, kind: str, org: str, until: asyncio.Event) -> None:
    async with admission.enter(kind, org):
        await until.wait()


async def test_a_full_lane_refuses_at_once_after_its_wait_and_the_others_go_on():
    admission = Admission({"read": Lane(2, 2, 0.1), "write": Lane(1, 1, 0.1)})
    release = asyncio.Event()
    holders = [asyncio.create_task(hold(admission, "read", f"org_{n}", release)) for n in range(2)]
    await asyncio.sleep(0)
    started = asyncio.get_running_loop().time()
    with pytest.raises(ApiError) as refused:
        async with admission.enter("read", "org_9"):
            pass
    assert 0.09 <= asyncio.get_running_loop().time() - started < 0.5
    assert (refused.value.status, refused.value.reason) == (503, "OVERLOADED")
    assert refused.value.response().headers["retry-after"] == "1"
    async with admission.enter("write", "org_9"):  # another lane is free
        pass
    release.set()
    await asyncio.gather(*holders)
    async with admission.enter("read", "org_9"):  # slots given back
        pass


async def test_one_organization_never_holds_more_than_its_share():
    admission = Admission({"read": Lane(4, 2, 0.1)})
    release = asyncio.Event()
    holders = [asyncio.create_task(hold(admission, "read", "org_greedy", release)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(ApiError):
        async with admission.enter("read", "org_greedy"):
            pass
    async with admission.enter("read", "org_modest"):  # the lane still has room for the others
        pass
    release.set()
    await asyncio.gather(*holders)


async def test_a_request_waiting_within_the_lane_s_wait_gets_the_freed_slot():
    admission = Admission({"read": Lane(1, 1, 1.0)})
    release = asyncio.Event()
    holder = asyncio.create_task(hold(admission, "read", "org_a", release))
    await asyncio.sleep(0)
    asyncio.get_running_loop().call_later(0.05, release.set)
    async with admission.enter("read", "org_b"):
        assert holder.done()
