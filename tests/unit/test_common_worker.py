"""The background worker's timed steps: work falling due soon is stepped at
its time; work due beyond the horizon is left to the sweeps."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from services.common import worker
from services.common.timestamps import utcnow


async def stepping(interval: float) -> tuple[worker.Worker, list[float]]:
    """A started worker whose steps note their loop time; after its first step."""
    steps: list[float] = []
    stepped = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def step() -> bool:
        steps.append(loop.time())
        stepped.set()
        return False

    running = worker.Worker("test", interval, step, logging.getLogger("test"), "failed")
    running.start()
    await asyncio.wait_for(stepped.wait(), 5)
    return running, steps


async def test_work_due_soon_is_stepped_at_its_time_not_the_next_sweep():
    running, steps = await stepping(interval=60.0)
    try:
        running.wake_at(utcnow() + timedelta(seconds=0.3))
        await asyncio.sleep(1.0)
        assert len(steps) == 2
        assert 0.25 <= steps[1] - steps[0] < 1.0
    finally:
        await running.stop()


async def test_work_due_beyond_the_horizon_is_left_to_the_sweeps(monkeypatch):
    monkeypatch.setattr(worker, "HORIZON", 0.5)
    running, steps = await stepping(interval=60.0)
    try:
        running.wake_at(utcnow() + timedelta(seconds=0.8))  # beyond: no timer
        running.wake_at(utcnow() - timedelta(seconds=1))  # already due: at once
        await asyncio.sleep(1.3)
        assert len(steps) == 2
    finally:
        await running.stop()
