"""Metering's lag guard while JetStream does not answer (a cluster electing
a stream leader after a node died; here a nats-server stopped with SIGSTOP):
it says what it last knew instead of failing the ingestion."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import pytest

from deploy.embedded import Nats
from services.common import bus
from services.metering import backlog as backlog_module
from services.metering.backlog import Backlog
from tests.conftest import eventually, unique


async def test_the_lag_is_the_last_known_while_jetstream_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr(backlog_module, "NATS_DEADLINE", 0.3)
    monkeypatch.setattr(backlog_module, "AGE_KEPT", 0.0)  # every call asks NATS
    server = Nats(tmp_path / "nats", durable=False)
    server.start()
    assert server.process is not None
    connection = await bus.Bus.connect(server.url, "unanswered")
    stream = bus.Stream("UNANSWERED", ("unanswered.>",), work_queue=True)
    try:
        await connection.ensure_stream(stream)
        await connection.publish("unanswered.org_a", b"x", unique("m"), "org_a")
        backlog = Backlog(connection.js, stream.name, timeout=1)
        await asyncio.sleep(0.3)
        known = await backlog.lag("unanswered.org_a")
        assert 0.25 < known < 5
        server.process.send_signal(signal.SIGSTOP)
        try:
            await eventually(lambda: stopped(server.process.pid))  # the kernel has stopped it: no answer can come
            with caplog.at_level(logging.INFO, logger="bxb.backlog"):
                assert await backlog.lag("unanswered.org_a") == known
                assert await backlog.lag("unanswered.org_never_seen") == 0.0
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert "JetStream did not tell the lag of unanswered.org_a; taking the last known" in caplog.text
    finally:
        await connection.close()
        server.stop()


async def stopped(pid: int) -> None:
    """Whether the process is stopped (state T in /proc/<pid>/stat), as an assertion."""
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    assert state == "T", state
