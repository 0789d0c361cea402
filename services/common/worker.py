"""A background loop every replica runs: one step of work (a batch), taken
again at once while the step says more is waiting, else after `interval`
seconds or as soon as it is woken (now, or at a time work falls due). A
failing step is logged and tried again on the next tick: the loop never dies
of it. The collector, the refunder, the linker, the recovery sweep and the
webhook sender are each one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from services.common.timestamps import utcnow

# Seconds ahead a step is timed for work falling due; work due later is left
# to the sweeps (at most `interval` late), so a process holds few timers
# however many retries it has scheduled.
HORIZON = 60.0


class Worker:
    def __init__(
        self, name: str, interval: float, step: Callable[[], Awaitable[bool]], log: logging.Logger, failure: str
    ):
        self.name = name  # the task's name
        self.interval = interval  # seconds between steps when nothing wakes it
        self._step = step  # one batch of work; True when more is waiting
        self._log, self._failure = log, failure  # where and how a failing step is told
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Takes a step now: work was just recorded."""
        self._woken.set()

    def wake_at(self, moment: datetime) -> None:
        """Takes a step at `moment`, when work recorded now falls due (a
        retry), rather than on the first tick after it; beyond HORIZON, the
        sweeps find it."""
        delay = max((moment - utcnow()).total_seconds(), 0.0)
        if delay < HORIZON:
            asyncio.get_running_loop().call_later(delay, self._woken.set)

    async def _run(self) -> None:
        while True:
            self._woken.clear()
            try:
                while await self._step():
                    pass  # more is waiting
            except Exception:
                self._log.exception(self._failure)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        assert self._task is not None  # stopped only once started
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
