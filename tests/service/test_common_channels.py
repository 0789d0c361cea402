"""Channels between bxb processes: a call that names no deadline gets the
channel's, so no call waits forever on a peer that hangs; calls go round
robin over a service's replicas, reads are retried on another, writes are not."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from deploy.embedded import free_port
from services.common.channels import open_channel


async def hang(request: bytes, context) -> bytes:
    await asyncio.sleep(30)
    return request


@pytest.fixture
async def hanging() -> str:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(hang)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Hanging", {"Wait": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def test_a_call_without_a_deadline_gets_the_channels(hanging: str):
    channel = open_channel(hanging, timeout=0.3)
    try:
        wait = channel.unary_unary("/test.Hanging/Wait")
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await wait(b"x")
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5
        with pytest.raises(grpc.aio.AioRpcError) as own:  # a call's own deadline stands
            await wait(b"x", timeout=0.1)
        assert own.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await channel.close()


class Replica:
    """A server answering any bxb RPC with its request, counting the calls it
    took by method; `refuse` makes it answer UNAVAILABLE instead (a replica
    going away)."""

    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.calls: dict[str, int] = {}
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers([self])
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def service(self, details: grpc.HandlerCallDetails):
        method = details.method

        async def answer(request: bytes, context) -> bytes:
            self.calls[method] = self.calls.get(method, 0) + 1
            if self.refuse:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
            return request

        return grpc.unary_unary_rpc_method_handler(answer)


@pytest.fixture
async def replicas():
    made: list[Replica] = []

    async def make(refuse: bool = False) -> Replica:
        replica = Replica(refuse)
        await replica.server.start()
        made.append(replica)
        return replica

    yield make
    for replica in made:
        await replica.server.stop(0)


READ = "/bxb.catalog.v1.PlanService/GetPlan"  # bound to HTTP GET
WRITE = "/bxb.catalog.v1.PlanService/CreatePlan"


async def test_calls_go_round_robin_over_every_address(replicas):
    one, two = await replicas(), await replicas()
    channel = open_channel(f"127.0.0.1:{one.port},localhost:{two.port}", timeout=5)
    try:
        read = channel.unary_unary(READ)
        for _ in range(20):
            assert await read(b"x", wait_for_ready=True) == b"x"
    finally:
        await channel.close()
    assert one.calls[READ] >= 5 and two.calls[READ] >= 5
    assert one.calls[READ] + two.calls[READ] == 20


async def test_an_idempotent_call_survives_a_dead_address_and_a_replica_going_away(replicas):
    good, leaving = await replicas(), await replicas(refuse=True)
    dead = free_port()
    channel = open_channel(f"127.0.0.1:{dead},127.0.0.1:{leaving.port},127.0.0.1:{good.port}", timeout=5)
    try:
        read = channel.unary_unary(READ)
        for _ in range(12):
            assert await read(b"x", wait_for_ready=True) == b"x"
    finally:
        await channel.close()
    assert good.calls[READ] == 12
    assert leaving.calls[READ] >= 1  # tried there first, then retried on the good one


async def test_a_write_is_not_retried(replicas):
    good, leaving = await replicas(), await replicas(refuse=True)
    channel = open_channel(f"127.0.0.1:{good.port},127.0.0.1:{leaving.port}", timeout=5)
    failed = 0
    try:
        write = channel.unary_unary(WRITE)
        for _ in range(12):
            try:
                await write(b"x", wait_for_ready=True)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                failed += 1
    finally:
        await channel.close()
    assert failed == leaving.calls[WRITE] >= 3  # each refused write was sent once
    assert good.calls[WRITE] + leaving.calls[WRITE] == 12
