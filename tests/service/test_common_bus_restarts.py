"""The bus across a NATS restart: a consumer whose fetches fail while NATS
is away goes on once it is back, on a server of its own killed and started
again on the same port and store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.errors import OutboundBufferLimitError

from deploy.embedded import Nats
from services.common import bus
from tests.conftest import eventually


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[Nats]:
    server = Nats(tmp_path / "nats", durable=False)
    server.start()
    yield server
    server.stop()


async def test_a_consumer_goes_on_after_nats_comes_back_though_its_fetches_failed_meanwhile(
    nats_server: Nats, caplog: pytest.LogCaptureFixture
):
    connected = await bus.Bus.connect(nats_server.url, "bus-restarts")
    stream = bus.Stream("BUS_RESTARTS", ("restarts.>",))
    seen: list[bytes] = []

    async def handler(subject: str, payload: bytes) -> None:
        seen.append(payload)

    async def handled(expected: list[bytes]) -> None:
        assert seen == expected

    async def connection(up: bool) -> None:
        assert connected.nc.is_connected == up

    try:
        await connected.consume(stream, "restarts", None, handler)
        await connected.publish("restarts.event", b"before", "m-before")
        await eventually(lambda: handled([b"before"]))

        nats_server.process.kill()
        nats_server.process.wait()
        await eventually(lambda: connection(False))
        # While it reconnects the client buffers what is published, up to a
        # limit; past it every publish fails, the consumer's pull requests too.
        for size in (65536, 1024, 1):  # to the last byte
            with contextlib.suppress(OutboundBufferLimitError):
                while True:
                    await connected.nc.publish("elsewhere.filler", b"x" * size)
        await asyncio.sleep(2.5)  # a fetch or two fail meanwhile
        nats_server.start()
        await eventually(lambda: connection(True), timeout=15)

        await connected.publish("restarts.event", b"after", "m-after")
        await eventually(lambda: handled([b"before", b"after"]), timeout=15)
        assert "consuming restarts failed; fetching again" in caplog.text
    finally:
        await connected.close()
