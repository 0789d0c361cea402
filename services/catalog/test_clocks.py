"""Test clocks (TestClockService): simulated time, as Stripe has it.

A customer created on a clock, and every subscription it takes, lives at the
clock's frozen time: subscriptions start, change and end at that time, and
invoicing bills them when the clock, not the calendar, reaches their periods'
ends. Creating and advancing a clock is announced as test_clock_advanced
(through the outbox, in the same transaction), which invoicing follows.
Customers not on a clock never read one: their time is the real time.
"""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import events_pb2, test_clocks_pb2_grpc
from bxb.catalog.v1 import test_clocks_pb2 as pb
from bxb.invoicing.v1 import billing_runs_pb2
from services.catalog import validation
from services.catalog.models import Customer, Outbox, TestClock
from services.common import outbox, pagination, tenancy
from services.common.errors import InvalidArgument, NotFound, Relayed
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.peers import Invoicing
from services.common.timestamps import from_proto, to_proto, utcnow

TEST_CLOCK_ADVANCED = "bxb.catalog.v1.test_clock_advanced"
# The bounds of subscription start dates: periods are billed one by one from a
# clock's first time to its last.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def clock_proto(clock: TestClock) -> pb.TestClock:
    return pb.TestClock(
        id=clock.id,
        name=clock.name,
        frozen_time=to_proto(clock.frozen_time),
        create_time=to_proto(clock.create_time),
    )


def _frozen_time(message: pb.TestClock | pb.AdvanceTestClockRequest, field: str = "frozen_time") -> datetime:
    value = from_proto(message.frozen_time)
    if not EARLIEST <= value < LATEST:
        raise InvalidArgument(f"{field} must be between 2000-01-01 and 2099-12-31", field=field)
    return value


async def find(session: AsyncSession, org: str, clock_id: str, field: str = "id", lock: bool = False) -> TestClock:
    query = select(TestClock).where(TestClock.organization_id == org, TestClock.id == clock_id)
    clock = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if clock is None:
        raise NotFound(f"test clock {clock_id!r} not found", field=field)
    return clock


async def now(session: AsyncSession, org: str, clock_id: str | None) -> datetime:
    """The time of a customer on `clock_id`: the clock's, else the real time."""
    return (await find(session, org, clock_id, "test_clock_id")).frozen_time if clock_id else utcnow()


async def customer_now(session: AsyncSession, org: str, customer_id: str) -> datetime:
    """The customer's present: its clock's time when it lives on one, else the real time."""
    query = select(Customer.test_clock_id).where(Customer.organization_id == org, Customer.id == customer_id)
    return await now(session, org, (await session.execute(query)).scalar_one_or_none())


async def times(session: AsyncSession, org: str) -> dict[str, datetime]:
    """Every clock of the organization and its time."""
    query = select(TestClock.id, TestClock.frozen_time).where(TestClock.organization_id == org)
    return {clock_id: time for clock_id, time in await session.execute(query)}


async def _announce(session: AsyncSession, clock: TestClock) -> pb.TestClock:
    result = clock_proto(clock)
    event = events_pb2.TestClockAdvanced(
        event_id=new_id("evt"), organization_id=clock.organization_id, occur_time=to_proto(utcnow()), test_clock=result
    )
    await outbox.enqueue(session, Outbox, TEST_CLOCK_ADVANCED, event)
    return result


class TestClockServicer(test_clocks_pb2_grpc.TestClockServiceServicer):
    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, sessions: async_sessionmaker[AsyncSession], relay: outbox.OutboxRelay, invoicing: Invoicing):
        self.sessions = sessions
        self.relay = relay
        self.invoicing = invoicing

    async def CreateTestClock(self, request: pb.CreateTestClockRequest, context: Context) -> pb.TestClock:
        spec = request.test_clock
        clock = TestClock(
            id=new_id("clock"),
            organization_id=tenancy.organization_id(),
            name=validation.text(spec.name, "test_clock.name"),
            frozen_time=_frozen_time(spec, "test_clock.frozen_time"),
            create_time=utcnow(),
        )
        async with self.sessions() as session, session.begin():
            session.add(clock)
            result = await _announce(session, clock)
        self.relay.wake()
        return result

    async def GetTestClock(self, request: pb.GetTestClockRequest, context: Context) -> pb.TestClock:
        async with self.sessions() as session:
            return clock_proto(await find(session, tenancy.organization_id(), request.id))

    async def ListTestClocks(self, request: pb.ListTestClocksRequest, context: Context) -> pb.ListTestClocksResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListTestClocks")
        query = (
            select(TestClock)
            .where(TestClock.organization_id == org)
            .order_by(TestClock.create_time, TestClock.id)
            .offset(page.offset)
            .limit(page.size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        test_clocks, token = pagination.answer(page, [clock_proto(c) for c in rows])
        return pb.ListTestClocksResponse(test_clocks=test_clocks, next_page_token=token)

    async def AdvanceTestClock(
        self, request: pb.AdvanceTestClockRequest, context: Context
    ) -> pb.AdvanceTestClockResponse:
        """Moves the clock (committed and announced first), then has
        invoicing bill what fell due by then, outside any transaction."""
        org = tenancy.organization_id()
        target = _frozen_time(request)
        async with self.sessions() as session, session.begin():
            clock = await find(session, org, request.id, lock=True)
            if target < clock.frozen_time:
                raise InvalidArgument(
                    f"frozen_time must not be earlier than the clock's time, {clock.frozen_time.isoformat()}",
                    field="frozen_time",
                    reason="CLOCK_CANNOT_GO_BACK",
                )
            moved = target > clock.frozen_time
            clock.frozen_time = target
            result = await _announce(session, clock) if moved else clock_proto(clock)
        self.relay.wake()
        try:
            billed = await self.invoicing.run_billing(
                org, billing_runs_pb2.RunBillingRequest(test_clock_id=result.id, frozen_time=result.frozen_time)
            )
        except grpc.aio.AioRpcError as error:  # the move stands; the caller hears invoicing's answer
            raise Relayed(error) from None
        return pb.AdvanceTestClockResponse(test_clock=result, invoices_created=billed.invoices_created)
