"""Turns at an engine that runs one statement at a time: writes waiting go
before reads waiting; a waiter that gives up passes nothing over."""

from __future__ import annotations

import asyncio

import pytest

from services.metering.clickhouse import Turns


async def test_waiting_writes_go_before_waiting_reads_and_each_waits_for_the_one_running():
    turns, order = Turns(), []
    running = asyncio.Event()

    async def use(name: str, write: bool, until: asyncio.Event | None = None) -> None:
        async with turns.turn(write):
            order.append(name)
            if until is not None:
                running.set()
                await until.wait()

    release = asyncio.Event()
    first = asyncio.create_task(use("read 1", False, release))
    await running.wait()
    waiting = [
        asyncio.create_task(use(name, write)) for name, write in (("read 2", False), ("read 3", False), ("write", True))
    ]
    await asyncio.sleep(0)
    assert order == ["read 1"]  # the engine is busy: everyone waits
    release.set()
    await asyncio.gather(first, *waiting)
    assert order == ["read 1", "write", "read 2", "read 3"]


async def test_a_waiter_that_gives_up_leaves_its_turn_to_the_next():
    turns, order = Turns(), []
    release = asyncio.Event()

    async def hold() -> None:
        async with turns.turn(write=True):
            await release.wait()

    async def read(name: str) -> None:
        async with turns.turn(write=False):
            order.append(name)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    impatient = asyncio.create_task(read("impatient"))
    patient = asyncio.create_task(read("patient"))
    await asyncio.sleep(0)
    impatient.cancel()
    release.set()
    await holder
    await patient
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert order == ["patient"]
    async with turns.turn(write=False):  # and the engine is free again
        order.append("later")


async def test_a_waiter_cancelled_just_as_its_turn_came_passes_it_on():
    turns, order = Turns(), []
    release = asyncio.Event()
    waiters: list[asyncio.Task] = []

    async def hold() -> None:
        async with turns.turn(write=True):
            await release.wait()
        waiters[0].cancel()  # its turn was just given to it; it has not resumed yet

    async def read(name: str) -> None:
        async with turns.turn(write=False):
            order.append(name)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiters += [asyncio.create_task(read("unlucky")), asyncio.create_task(read("after"))]
    await asyncio.sleep(0)
    release.set()
    await holder
    await waiters[1]
    with pytest.raises(asyncio.CancelledError):
        await waiters[0]
    assert order == ["after"]
