"""Shared bench helpers: a fresh `make run` stack, percentiles, reports."""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from deploy.embedded import free_port
from deploy.stack import Stack

KEY = "bench_key_0123456789abcdef"
ORG = "org_default"  # the organization BXB_API_KEY belongs to


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def report(name: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(
        f"{name:<44} n={len(ms):<6} p50={percentile(ms, 50):7.2f} ms  p90={percentile(ms, 90):7.2f} ms"
        f"  p99={percentile(ms, 99):7.2f} ms  mean={statistics.fmean(ms):7.2f} ms",
        flush=True,
    )


@asynccontextmanager
async def running_stack(**settings: str) -> AsyncIterator[tuple[Stack, httpx.AsyncClient]]:
    """A stack as `make run` starts it, in a temporary BXB_HOME, and a client;
    `settings` are more BXB_* variables (BXB_TLS_DIR: the bench's own gRPC
    channels use it too)."""
    home = Path(tempfile.mkdtemp(prefix="bxb-bench-")) / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BXB_")}
    env.update(BXB_HOME=str(home), BXB_GATEWAY_PORT=str(free_port()), BXB_API_KEY=KEY, **settings)
    stack = Stack(home, env)
    try:
        url, _ = await stack.start()
        # The bench's own gRPC calls carry the stack's service token (services/common/trust.py),
        # over mutual TLS when the stack runs it (channels.open_channel).
        os.environ["BXB_SECRET_KEY"] = stack.env["BXB_SECRET_KEY"]
        os.environ["BXB_TLS_DIR"] = stack.env.get("BXB_TLS_DIR", "")
        print(f"stack at {url}, {os.cpu_count()} cores", flush=True)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:
            yield stack, http
    finally:
        await stack.stop()
