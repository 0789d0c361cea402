"""deploy/supervisor.py with real tiny child processes (python -c): the
backoff, restarting a child that exits while the others run on, a child that
keeps crashing, the PIDs file, and stopping cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from deploy.supervisor import Child, Exited, RestartPolicy, Supervisor
from tests.conftest import eventually

# Each run of a tiny child gets its marker directory as argv[1].
UP = "import os, signal, subprocess, sys, time; open(os.path.join(sys.argv[1], str(os.getpid())), 'w').close(); "
SERVE = UP + "time.sleep(60)"  # up until stopped
CRASH = "import sys; sys.exit(3)"  # exits at once, never up
SILENT = "import time; time.sleep(60)"  # runs, never up
DEAF = UP.replace("open(", "signal.signal(signal.SIGTERM, signal.SIG_IGN); open(") + "time.sleep(60)"
# Up, with a process of its own group beside it (as a postmaster has its backends).
PARENT = (
    "import os, subprocess, sys, time; "
    "helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "open(os.path.join(sys.argv[1], 'helper'), 'w').write(str(helper.pid)); "
    "open(os.path.join(sys.argv[1], str(os.getpid())), 'w').close(); time.sleep(60)"
)
FAST = RestartPolicy(first=0.05, cap=0.2, stable=60.0, crash_loop=5, window=60.0)


class Tiny:
    """A supervised python -c child: its n-th run runs scripts[n] (the last
    one from then on) and is up once it wrote a marker named by its PID."""

    def __init__(self, tmp: Path, name: str, *scripts: str):
        self.markers = tmp / name
        self.markers.mkdir()
        self.scripts = list(scripts)
        self.runs = 0
        self.child = Child(name, self.spawn, self.ready, tmp / f"{name}.log")

    def spawn(self) -> subprocess.Popen:
        script = self.scripts[min(self.runs, len(self.scripts) - 1)]
        self.runs += 1
        return subprocess.Popen([sys.executable, "-c", script, str(self.markers)], start_new_session=True)

    async def ready(self) -> None:
        marker = self.markers / str(self.child.process.pid)

        async def up() -> None:
            assert marker.exists()

        await eventually(up, timeout=30, interval=0.01)

    @property
    def pid(self) -> int:
        return self.child.process.pid


def delays(caplog: pytest.LogCaptureFixture, name: str) -> list[float]:
    """The restart delays the log announced for `name`, in order."""
    announced = (re.fullmatch(rf"{name} .*; restarting in ([0-9.]+) s", r.getMessage()) for r in caplog.records)
    return [float(match[1]) for match in announced if match]


async def logged(caplog: pytest.LogCaptureFixture, text: str, count: int = 1) -> None:
    async def seen() -> None:
        assert caplog.text.count(text) >= count

    await eventually(seen, timeout=30)


def test_the_backoff_doubles_from_the_first_delay_to_the_cap():
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.delay(10_000) == 30  # no overflow however long it keeps failing


async def test_a_child_that_exits_is_restarted_and_the_others_run_on(tmp_path: Path, caplog):
    pids_file = tmp_path / "pids.json"
    supervisor = Supervisor(pids_file, FAST)
    first, second = Tiny(tmp_path, "first", SERVE), Tiny(tmp_path, "second", SERVE)
    try:
        await supervisor.start(first.child, second.child)
        started = {"first": first.pid, "second": second.pid}
        assert json.loads(pids_file.read_text()) == {"stack": os.getpid(), "children": started}

        killed = first.child.process
        killed.kill()
        await logged(caplog, "first restarted after")
        assert killed.returncode == -signal.SIGKILL
        log = tmp_path / "first.log"
        assert f"first exited with code -9 (see {log}); restarting in 0.05 s" in caplog.text
        assert first.pid != started["first"] and first.child.process.poll() is None
        assert supervisor.pids() == {"first": first.pid, "second": started["second"]}
        assert json.loads(pids_file.read_text())["children"] == supervisor.pids()
        assert supervisor.restarts == {"first": 1}
        assert "second" not in caplog.text
    finally:
        await supervisor.stop("first", "second")
    assert not pids_file.exists()


async def test_a_child_that_keeps_crashing_is_retried_at_the_capped_backoff_and_says_so(tmp_path: Path, caplog):
    supervisor = Supervisor(tmp_path / "pids.json", FAST)
    flaky, steady = Tiny(tmp_path, "flaky", SERVE, CRASH), Tiny(tmp_path, "steady", SERVE)
    try:
        await supervisor.start(flaky.child, steady.child)
        steady_pid = steady.pid
        flaky.child.process.kill()
        await logged(caplog, "flaky exited with code 3 before it was ready", 6)
        assert delays(caplog, "flaky")[:6] == [0.05, 0.1, 0.2, 0.2, 0.2, 0.2]
        assert "flaky keeps crashing (5 exits in 60 s); retrying every 0.2 s at most" in caplog.text
        assert steady.pid == steady_pid and steady.child.process.poll() is None  # never taken down
        assert "flaky" not in supervisor.pids()

        flaky.scripts.append(SERVE)  # fixed: it comes up again
        await logged(caplog, "flaky restarted after")
        assert supervisor.pids() == {"flaky": flaky.pid, "steady": steady_pid}
        assert supervisor.restarts == {"flaky": 1}
    finally:
        await supervisor.stop("flaky", "steady")


async def test_the_backoff_starts_over_once_a_child_stayed_up_a_while(tmp_path: Path, caplog):
    policy = RestartPolicy(first=0.05, cap=10, stable=1.0, crash_loop=3, window=1.0)
    supervisor = Supervisor(tmp_path / "pids.json", policy)
    tiny = Tiny(tmp_path, "tiny", SERVE)
    try:
        await supervisor.start(tiny.child)
        for restarts in (1, 2):  # killed again at once: twice the wait
            tiny.child.process.kill()
            await logged(caplog, "tiny restarted after", restarts)
        await asyncio.sleep(policy.stable)
        tiny.child.process.kill()
        await logged(caplog, "tiny restarted after", 3)
        assert delays(caplog, "tiny") == [0.05, 0.1, 0.05]
        assert "keeps crashing" not in caplog.text  # three exits, but not within one window
    finally:
        await supervisor.stop("tiny")


async def test_a_restart_that_does_not_start_is_tried_again(tmp_path: Path, caplog):
    supervisor = Supervisor(tmp_path / "pids.json", FAST)
    tiny = Tiny(tmp_path, "tiny", SERVE)
    spawn = tiny.child.spawn
    calls = 0

    def failing_once() -> subprocess.Popen:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first restart
            raise OSError("no such binary")
        return spawn()

    tiny.child.spawn = failing_once
    try:
        await supervisor.start(tiny.child)
        tiny.child.process.kill()
        await logged(caplog, "tiny restarted after")
        assert "tiny did not start: no such binary" in caplog.text
        assert delays(caplog, "tiny") == [0.05, 0.1]
    finally:
        await supervisor.stop("tiny")


async def test_a_restarted_child_whose_check_gives_up_is_stopped_and_started_again(tmp_path: Path, caplog):
    supervisor = Supervisor(tmp_path / "pids.json", FAST)
    tiny = Tiny(tmp_path, "tiny", SERVE, SILENT, SERVE)
    checks = 0
    ready = tiny.child.ready

    async def impatient() -> None:
        nonlocal checks
        checks += 1
        if checks == 2:  # the first restart never writes its marker
            await asyncio.sleep(0.2)
            raise TimeoutError("tiny not up after 0.2s")
        await ready()

    tiny.child.ready = impatient
    try:
        await supervisor.start(tiny.child)
        tiny.child.process.kill()
        stuck = await _second_run(tiny)
        await logged(caplog, "tiny restarted after")
        assert "tiny did not start: tiny not up after 0.2s" in caplog.text
        assert stuck.returncode == -signal.SIGTERM  # stopped before starting over
    finally:
        await supervisor.stop("tiny")


async def _second_run(tiny: Tiny) -> subprocess.Popen:
    async def second() -> subprocess.Popen:
        assert tiny.runs >= 2
        return tiny.child.process

    return await eventually(second, timeout=10)


async def test_start_raises_when_a_child_exits_before_it_is_ready(tmp_path: Path):
    supervisor = Supervisor(tmp_path / "pids.json", FAST)
    broken = Tiny(tmp_path, "broken", CRASH)
    with pytest.raises(Exited, match=f"broken exited with code 3 before it was ready \\(see {tmp_path}/broken.log\\)"):
        await supervisor.start(broken.child)
    assert supervisor.pids() == {}
    await supervisor.stop("broken")  # not watched: nothing to cancel
    assert not (tmp_path / "pids.json").exists()


async def test_start_raises_what_a_check_that_gives_up_raises(tmp_path: Path):
    supervisor = Supervisor(tmp_path / "pids.json", FAST)
    silent = Tiny(tmp_path, "silent", SILENT)

    async def gives_up() -> None:
        raise TimeoutError("silent not serving after 0s")

    silent.child.ready = gives_up
    with pytest.raises(TimeoutError, match="silent not serving"):
        await supervisor.start(silent.child)
    process = silent.child.process
    await supervisor.stop("silent", "never-started")
    assert process.returncode == -signal.SIGTERM


async def test_stop_sends_each_its_signal_kills_the_deaf_and_restarts_nothing(tmp_path: Path, caplog):
    supervisor = Supervisor(tmp_path / "pids.json", FAST)
    polite, deaf = Tiny(tmp_path, "polite", SERVE), Tiny(tmp_path, "deaf", DEAF)
    polite.child.stop_signal = signal.SIGINT  # as PostgreSQL's fast shutdown
    await supervisor.start(polite.child, deaf.child)
    processes = [polite.child.process, deaf.child.process]
    started = asyncio.get_running_loop().time()
    await supervisor.stop("polite", "deaf", timeout=0.5)
    assert asyncio.get_running_loop().time() - started >= 0.5  # waited for the deaf one, then killed it
    assert [process.returncode for process in processes] == [-signal.SIGINT, -signal.SIGKILL]
    await asyncio.sleep(0.2)
    assert supervisor.restarts == {} and "restarting" not in caplog.text
    assert supervisor.children == {} and not (tmp_path / "pids.json").exists()


async def test_what_is_left_of_a_dead_childs_group_is_killed_before_the_restart(tmp_path: Path, caplog):
    supervisor = Supervisor(tmp_path / "pids.json", FAST)
    parent = Tiny(tmp_path, "parent", PARENT)
    try:
        await supervisor.start(parent.child)
        helper = psutil.Process(int((parent.markers / "helper").read_text()))
        parent.child.process.kill()
        await logged(caplog, "parent restarted after")

        async def gone() -> None:
            assert not helper.is_running() or helper.status() == psutil.STATUS_ZOMBIE

        await eventually(gone)
    finally:
        await supervisor.stop("parent")
