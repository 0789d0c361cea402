"""Admission control: each kind of request has its own lane of slots, one
organization holds at most its share (narrowed while its requests are slow),
and a request that cannot start within the lane's wait is refused at once
(503 OVERLOADED) instead of queueing."""

from __future__ import annotations

import asyncio

import pytest

from gateway.admission import Admission, Lane, Share, kind_of
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
    admission = Admission({"read": Lane(2, 2, 0.1, target=1), "write": Lane(1, 1, 0.1, target=1)})
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
    admission = Admission({"read": Lane(4, 2, 0.1, target=1)})
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
    admission = Admission({"read": Lane(1, 1, 1.0, target=1)})
    release = asyncio.Event()
    holder = asyncio.create_task(hold(admission, "read", "org_a", release))
    await asyncio.sleep(0)
    asyncio.get_running_loop().call_later(0.05, release.set)
    async with admission.enter("read", "org_b"):
        assert holder.done()


async def started(admission: Admission, org: str, count: int) -> tuple[asyncio.Event, list[asyncio.Task]]:
    """`count` requests of `org` holding read slots until the event is set."""
    release = asyncio.Event()
    holders = [asyncio.create_task(hold(admission, "read", org, release)) for _ in range(count)]
    await asyncio.sleep(0)
    return release, holders


async def refused(admission: Admission, org: str) -> bool:
    try:
        async with admission.enter("read", org):
            return False
    except ApiError:
        return True


async def test_slow_requests_narrow_their_organization_s_share_and_fast_ones_widen_it_back():
    admission = Admission({"read": Lane(16, 4, 0.02, target=0.2)})
    async with admission.enter("read", "org_slow"):
        await asyncio.sleep(0.25)  # slower than the target: 4 slots become 3
    release, holders = await started(admission, "org_slow", 3)
    assert await refused(admission, "org_slow")
    assert not await refused(admission, "org_other")  # only the slow organization's share narrowed
    release.set()
    await asyncio.gather(*holders)
    for _ in range(3):  # answers within the target widen it again, never past the share
        async with admission.enter("read", "org_slow"):
            pass
    release, holders = await started(admission, "org_slow", 4)
    assert await refused(admission, "org_slow")
    release.set()
    await asyncio.gather(*holders)


async def test_a_slow_spell_narrows_once_per_target_and_never_below_one():
    admission = Admission({"read": Lane(16, 4, 0.02, target=0.2)})
    release, holders = await started(admission, "org_a", 4)
    await asyncio.sleep(0.25)
    release.set()
    await asyncio.gather(*holders)  # four slow answers together: one narrowing, 4 -> 3
    release, holders = await started(admission, "org_a", 3)
    assert await refused(admission, "org_a")
    release.set()
    await asyncio.gather(*holders)
    for _ in range(5):  # 3 -> 2.25 -> 1.69 -> 1.27 -> 1 -> 1
        async with admission.enter("read", "org_a"):
            await asyncio.sleep(0.25)
    release, holders = await started(admission, "org_a", 1)  # one at a time, still
    assert await refused(admission, "org_a")
    release.set()
    await asyncio.gather(*holders)


async def test_a_slot_handed_over_as_its_waiter_gives_up_is_passed_on():
    share = Share(Lane(16, 1, 1.0, target=1))
    await share.acquire(1.0)
    waiter = asyncio.create_task(share.acquire(1.0))
    await asyncio.sleep(0)
    share.release(0.0)  # the slot goes to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert share.busy == 0
    await share.acquire(0.01)  # the slot is free


async def test_a_waiter_that_gave_up_is_skipped_when_a_slot_frees():
    share = Share(Lane(16, 1, 1.0, target=1))
    await share.acquire(1.0)
    with pytest.raises(TimeoutError):
        await share.acquire(0.01)
    share.release(0.0)
    assert share.busy == 0
    await share.acquire(0.01)
