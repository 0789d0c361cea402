"""/v1/test_clocks: simulated time, as Stripe's test clocks.

Create a clock at a `frozen_time`, create customers with its
`test_clock_id`, subscribe them, send their events (stamped in the clock's
time), then `POST /v1/test_clocks/{id}/advance` with a later `frozen_time`:
the catalog moves the clock and invoicing bills, before the answer, every
period of the clock's customers that has ended by then (`invoices_created`).
Real customers never see a clock.
"""

from __future__ import annotations

from starlette.routing import Route

from bxb.catalog.v1 import test_clocks_pb2 as pb
from gateway import render
from gateway.call import Call, endpoint, json
from gateway.schema import Spec, obj, string
from services.common.timestamps import to_proto

CREATE = obj({"name": string(max_length=200), "frozen_time": Spec("timestamp", required=True)})
ADVANCE = obj({"frozen_time": Spec("timestamp", required=True)})


def clock_json(clock: pb.TestClock) -> dict:
    return {
        "id": clock.id,
        "name": clock.name,
        "frozen_time": render.time(clock, "frozen_time"),
        "created_at": render.time(clock, "create_time"),
    }


async def create(call: Call):
    clock = pb.TestClock(name=call.body["name"] or "", frozen_time=to_proto(call.body["frozen_time"]))
    created = await call.clients.test_clocks.CreateTestClock(
        pb.CreateTestClockRequest(test_clock=clock), **call.options
    )
    return json(clock_json(created), 201)


async def get(call: Call):
    clock = await call.clients.test_clocks.GetTestClock(pb.GetTestClockRequest(id=call.path("id")), **call.options)
    return json(clock_json(clock))


async def list_(call: Call):
    reply = await call.clients.test_clocks.ListTestClocks(
        pb.ListTestClocksRequest(page_size=call.query_int("page_size"), page_token=call.query("page_token")),
        **call.options,
    )
    return json({"test_clocks": [clock_json(c) for c in reply.test_clocks], "next_page_token": reply.next_page_token})


async def advance(call: Call):
    moved = await call.clients.test_clocks.AdvanceTestClock(
        pb.AdvanceTestClockRequest(id=call.path("id"), frozen_time=to_proto(call.body["frozen_time"])),
        **call.options,
    )
    return json({**clock_json(moved.test_clock), "invoices_created": moved.invoices_created})


routes = [
    Route("/v1/test_clocks", endpoint(create, CREATE), methods=["POST"]),
    Route("/v1/test_clocks", endpoint(list_), methods=["GET"]),
    Route("/v1/test_clocks/{id}", endpoint(get), methods=["GET"]),
    Route("/v1/test_clocks/{id}/advance", endpoint(advance, ADVANCE), methods=["POST"]),
]
