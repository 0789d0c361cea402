"""A publish JetStream does not acknowledge is sent again under the same
message id until JETSTREAM_DEADLINE; then its error is raised (the outbox keeps
the row pending, an ingestion answers 503)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from nats.js.errors import NoStreamResponseError

from services.common import bus
from tests.conftest import Infra, unique


async def test_a_publish_no_stream_acknowledges_is_retried_until_its_deadline_then_fails(
    infra: Infra, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr(bus, "JETSTREAM_DEADLINE", 1.0)
    connected = await bus.Bus.connect(infra.nats.url, unique("no-stream"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with caplog.at_level(logging.INFO, logger="bxb.bus"), pytest.raises(NoStreamResponseError):
            await connected.publish(f"{unique('nowhere')}.v1.lost", b"x", unique("msg"))
    finally:
        await connected.close()
    assert 0.7 <= loop.time() - started < 10
    assert caplog.text.count("got no answer from JetStream; trying again") >= 2
