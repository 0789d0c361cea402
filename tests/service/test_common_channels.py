"""Channels between bxb processes: a call that names no deadline gets the
channel's, so no call waits forever on a peer that hangs."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

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
