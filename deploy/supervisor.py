"""Keeps the stack's processes running: `make run`'s supervisor.

Every child (embedded PostgreSQL, nats-server, a service, the gateway) is
watched. One that exits on its own is logged and started again, on the same
address and data, after a backoff (`RestartPolicy`: 0.5 s doubling up to
30 s, starting over once the child has stayed up a minute); it counts as up
once its readiness check passes, and the log says how long it was away
("metering restarted after 1.3 s"). A child that keeps crashing is retried
forever at the capped backoff, and the log says so: one child never takes
the others down. Only `stop` ends a child for good.

The PIDs of the running children are kept in a JSON file, rewritten whenever
one starts or exits (`{"stack": <supervisor>, "children": {"nats": 4242,
...}}`), so an operator (or a test) can find them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploy.embedded import private, stop_processes

log = logging.getLogger("bxb.stack")


@dataclass(frozen=True)
class RestartPolicy:
    first: float = 0.5  # seconds before the first restart
    cap: float = 30.0  # the longest wait before a restart
    stable: float = 60.0  # a child up this long starts over at `first`
    crash_loop: int = 5  # this many exits within `window` seconds: it keeps crashing
    window: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds before restarting a child after its `failures`-th failure in a row."""
        return min(self.cap, self.first * 2.0 ** min(failures - 1, 30))


@dataclass
class Child:
    """One supervised process: how to start it and how to tell it serves."""

    name: str
    spawn: Callable[[], subprocess.Popen[bytes]]  # starts the process, without waiting for it
    ready: Callable[[], Awaitable[None]]  # returns once it serves; raises when it gives up
    log: Path  # where its output goes, named in messages
    stop_signal: int = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class Exited(Exception):
    """A child's process exited before it was ready."""

    def __init__(self, child: Child, code: int):
        super().__init__(f"{child.name} exited with code {code} before it was ready (see {child.log})")
        self.code = code


async def exit_of(process: subprocess.Popen[bytes]) -> int:
    """Waits until the (unreaped) process exits, told by its pidfd turning
    readable; kills its group's leftovers while its PID is still held, then
    reaps it and returns its exit code."""
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        loop.remove_reader(fd)  # once: it stays readable
        gone.set_result(None)

    fd = os.pidfd_open(process.pid)
    loop.add_reader(fd, readable)
    try:
        await gone
    finally:  # also when cancelled
        loop.remove_reader(fd)
        os.close(fd)
    kill_group(process)
    return process.wait()


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kills what is left of the process's group (a dead postmaster's
    backends hold its shared memory and keep a new one from starting)."""
    with contextlib.suppress(ProcessLookupError):  # none left
        os.killpg(process.pid, signal.SIGKILL)


def terminate(children: Sequence[Child], timeout: float) -> None:
    """Sends each running child its stop signal, gives them `timeout` seconds
    in all to exit, then kills the ones still running and their groups."""
    for process in stop_processes([(child.process, child.stop_signal) for child in children], timeout):
        kill_group(process)


class Supervisor:
    def __init__(self, pids_file: Path, policy: RestartPolicy | None = None):
        self.pids_file = pids_file
        self.policy = policy or RestartPolicy()
        self.children: dict[str, Child] = {}
        self.restarts: dict[str, int] = {}  # per child, how often it was restarted
        self._keepers: dict[str, asyncio.Task[None]] = {}

    async def start(self, *children: Child) -> None:
        """Starts the children together, returns once every one is ready and
        from then on restarts any that exits. Raises when one exits first or
        its check gives up (the caller stops the stack)."""
        for child in children:
            self.children[child.name] = child
            child.process = child.spawn()
        self._write_pids()
        for child in children:
            await self._ready(child)
        for child in children:
            self._keepers[child.name] = asyncio.create_task(self._keep(child), name=f"keep:{child.name}")

    async def stop(self, *names: str, timeout: float = 20) -> None:
        """Stops watching the named children (those started) and stops them
        together: their stop signal, then killed after `timeout` seconds."""
        stopping = [self.children.pop(name) for name in names if name in self.children]
        keepers = [self._keepers.pop(child.name) for child in stopping if child.name in self._keepers]
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        await asyncio.to_thread(terminate, stopping, timeout)
        self._write_pids()

    def pids(self) -> dict[str, int]:
        """The PID of each running child."""
        return {
            name: child.process.pid
            for name, child in self.children.items()
            if child.process is not None and child.process.returncode is None
        }

    def _write_pids(self) -> None:
        """Rewrites the PIDs file (atomically); removes it once no child is left."""
        if not self.children:
            self.pids_file.unlink(missing_ok=True)
            return
        scratch = self.pids_file.with_name(self.pids_file.name + ".tmp")
        with open(scratch, "w", opener=private) as out:  # the stack's home is its owner's only
            out.write(json.dumps({"stack": os.getpid(), "children": self.pids()}, indent=2) + "\n")
        scratch.replace(self.pids_file)

    async def _exit(self, child: Child) -> int:
        """Waits until the child's process exits; its exit code."""
        assert child.process is not None
        code = await exit_of(child.process)
        self._write_pids()
        return code

    async def _ready(self, child: Child) -> None:
        """Returns once the child's check passes; raises Exited when its
        process exits first, or what the check raised."""
        checking = asyncio.ensure_future(child.ready())
        exiting = asyncio.ensure_future(self._exit(child))
        try:
            done, _ = await asyncio.wait({checking, exiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            checking.cancel()
            exiting.cancel()
        if checking in done:
            checking.result()  # raises when the check gave up
            return
        raise Exited(child, exiting.result())

    async def _keep(self, child: Child) -> None:
        """Restarts the child each time it exits, until cancelled."""
        failures = 0
        exits: deque[float] = deque()
        while True:
            up_since = time.monotonic()
            why = f"exited with code {await self._exit(child)}"
            down_since = time.monotonic()
            if down_since - up_since >= self.policy.stable:
                failures = 0
            while why:
                failures += 1
                exits.append(time.monotonic())
                while exits[0] < exits[-1] - self.policy.window:
                    exits.popleft()
                delay = self.policy.delay(failures)
                log.warning("%s %s (see %s); restarting in %g s", child.name, why, child.log, delay)
                if len(exits) >= self.policy.crash_loop:
                    log.error(
                        "%s keeps crashing (%d exits in %g s); retrying every %g s at most",
                        child.name, len(exits), self.policy.window, self.policy.cap,
                    )  # fmt: skip
                await asyncio.sleep(delay)
                why = await self._restart(child)
            self.restarts[child.name] = self.restarts.get(child.name, 0) + 1
            log.warning("%s restarted after %.1f s", child.name, time.monotonic() - down_since)

    async def _restart(self, child: Child) -> str:
        """Starts the child again; "" once it is ready, else why it is not
        (a child that is not ready in time is stopped, to start over)."""
        try:
            child.process = child.spawn()
            self._write_pids()
            await self._ready(child)
        except Exited as error:
            return f"exited with code {error.code} before it was ready"
        except Exception as error:  # spawning failed, or the check gave up
            await asyncio.to_thread(terminate, [child], 5)
            return f"did not start: {error}"
        return ""
