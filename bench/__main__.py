"""`make bench`: figures for the stack as `make run` starts it.

Each scenario starts a fresh stack in a temporary BXB_HOME and measures
through the gateway over real HTTP on loopback (client on the same machine):
- `ingest`: single-event latency at a fixed request rate, and the invoice
  listing (which closes due periods);
- `pricing`: POST /v1/pricing/calculate for one subscription with 20 charges
  over 1M stored events.

Usage: python -m bench [ingest|pricing|all] [--rate 200] [--seconds 10] [--events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio

from bench import ingest_and_invoices, pricing
from bench.common import running_stack


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", nargs="?", default="all", choices=["ingest", "pricing", "all"])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    if args.scenario in ("ingest", "all"):
        async with running_stack() as (_, http):
            await ingest_and_invoices.run(http, args.rate, args.seconds, args.customers)
    if args.scenario in ("pricing", "all"):
        async with running_stack() as (stack, http):
            await pricing.run(http, stack.env["BXB_METERING_ADDRESS"], args.events, args.requests)


asyncio.run(main())
