"""`make bench`: figures for the stack as `make run` starts it.

Each scenario starts a fresh stack in a temporary BXB_HOME and measures
through the gateway over real HTTP on loopback (client on the same machine):
- `ingest`: single-event latency at a fixed request rate, and the invoice
  listing (which closes due periods);
- `pricing`: POST /v1/pricing/calculate for one subscription with 20 charges
  over 1M stored events;
- `billing`: the billing run closing a period for 10,000 subscriptions with
  usage (`--subscriptions`, `--events-per-subscription`);
- `readers`: 200 concurrent readers (invoice listings, price calculations)
  alone and while batches are ingested at full speed (`--readers`,
  `--seconds`, `--customers`, `--batch-concurrency`);
- `collection`: automatic collection through Stripe of N finalized invoices
  (`--invoices`): time, invoices/s, PaymentIntents counted at Stripe's side
  (exactly N); then Stripe webhooks in (`--webhook-concurrency`,
  `--seconds`), first deliveries and duplicates; and Stripe's own
  PaymentIntent rate (`--stripe standin|localstripe`, see
  bench/stripe_standin.py; `--stripe-latency-ms`, `--localstripe-customers`);
- `webhooks`: outgoing webhooks' deliveries/s to a fast receiver
  (`--deliveries`, `--customers`), a fast endpoint's latency beside another
  organization's endpoint that never answers (`--change-rate`, `--seconds`), and the
  resync of `--resync-customers` customers' history to ChartMogul (a stand-in);
- `metering`: batch ingestion throughput (POST /v1/events/batch until usage
  counts every event), single-event latency, event-to-billable latency,
  POST /v1/usage/compute over 10M stored events, and the metering process's
  peak memory;
- `scale` (not in `all`; bench/scale.py): batch ingestion with one and two
  metering replicas and gateways against a ClickHouse server
  (`--scale-events`), the billing run with one and two invoicing replicas
  (`--scale-subscriptions`), and the cost of mutual TLS on single-event
  latency (`--rate`, `--seconds`); `--parts ingest,billing,tls` picks some.

Usage: python -m bench [ingest|pricing|metering|billing|readers|collection|webhooks|scale|all] [--rate 200] [--seconds 10] [--events 1000000]
       [--batch-events 1000000] [--batch-workers 2] [--batch-concurrency 16] [--samples 200]
       [--stored-events 10000000] [--stored-customers 1000] [--load-workers 2]
       [--invoices 10000] [--webhook-concurrency 16] [--stripe standin] [--stripe-latency-ms 0]
       [--localstripe-customers 1000] [--deliveries 10000] [--change-rate 25] [--resync-customers 10000]
       [--parts ingest,billing,tls] [--scale-events 500000] [--scale-subscriptions 2000]
"""

from __future__ import annotations

import argparse
import asyncio

from bench import billing, collection, ingest_and_invoices, metering, pricing, readers, scale, webhooks
from bench.common import running_stack


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "scenario",
        nargs="?",
        default="all",
        choices=["ingest", "pricing", "metering", "billing", "readers", "collection", "webhooks", "scale", "all"],
    )
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch-events", type=int, default=1_000_000, help="metering: events sent in batches")
    parser.add_argument("--batch-customers", type=int, default=100, help="metering: customers of the batches")
    parser.add_argument("--batch-workers", type=int, default=2, help="metering: client processes for batches")
    parser.add_argument("--batch-concurrency", type=int, default=16, help="metering: batch requests in flight")
    parser.add_argument("--samples", type=int, default=200, help="metering: event-to-billable samples")
    parser.add_argument("--stored-events", type=int, default=10_000_000, help="metering: events loaded over gRPC")
    parser.add_argument("--stored-customers", type=int, default=1000, help="metering: customers of those")
    parser.add_argument("--load-workers", type=int, default=2, help="metering: client processes loading them")
    parser.add_argument("--load-concurrency", type=int, default=16, help="metering: IngestEvents in flight")
    parser.add_argument("--subscriptions", type=int, default=10_000, help="billing: subscriptions to close")
    parser.add_argument("--events-per-subscription", type=int, default=10, help="billing: events of each")
    parser.add_argument("--readers", type=int, default=200, help="readers: concurrent readers")
    parser.add_argument("--invoices", type=int, default=10_000, help="collection: finalized invoices to collect")
    parser.add_argument("--webhook-concurrency", type=int, default=16, help="collection: webhooks in flight")
    parser.add_argument("--deliveries", type=int, default=10_000, help="webhooks: deliveries to a fast receiver")
    parser.add_argument(
        "--change-rate", type=float, default=25, help="webhooks: customer changes per second of each organization"
    )
    parser.add_argument(
        "--resync-customers", type=int, default=10_000, help="webhooks: customers whose history is resynced"
    )
    parser.add_argument(
        "--stripe", choices=["standin", "localstripe"], default="standin", help="collection: the Stripe bxb calls"
    )
    parser.add_argument(
        "--stripe-latency-ms", type=float, default=0, help="collection: the stand-in's time per PaymentIntent"
    )
    parser.add_argument(
        "--localstripe-customers", type=int, default=1000, help="collection: localstripe's reference size (0: none)"
    )
    parser.add_argument("--parts", default=",".join(scale.PARTS), help="scale: some of " + ",".join(scale.PARTS))
    parser.add_argument("--scale-events", type=int, default=500_000, help="scale: events sent in batches")
    parser.add_argument("--scale-subscriptions", type=int, default=2_000, help="scale: subscriptions to close")
    args = parser.parse_args()
    parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
    if unknown := set(parts) - set(scale.PARTS):
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))} (some of {','.join(scale.PARTS)})")
    if args.scenario == "scale":
        scale_options = scale.Options(
            parts=parts,
            events=args.scale_events,
            customers=args.batch_customers,
            batch_workers=args.batch_workers,
            batch_concurrency=args.batch_concurrency,
            subscriptions=args.scale_subscriptions,
            events_per_subscription=args.events_per_subscription,
            rate=args.rate,
            seconds=args.seconds,
        )
        await scale.run(scale_options)
    if args.scenario in ("ingest", "all"):
        async with running_stack() as (_, http):
            await ingest_and_invoices.run(http, args.rate, args.seconds, args.customers)
    if args.scenario in ("pricing", "all"):
        async with running_stack() as (stack, http):
            await pricing.run(http, stack.env["BXB_METERING_ADDRESS"], args.events, args.requests)
    if args.scenario in ("billing", "all"):
        async with running_stack(**billing.SETTINGS) as (stack, http):
            await billing.run(stack, http, args.subscriptions, args.events_per_subscription)
    if args.scenario in ("readers", "all"):
        async with running_stack() as (stack, http):
            catalog = stack.env["BXB_CATALOG_ADDRESS"]
            await readers.run(http, catalog, args.readers, args.seconds, args.customers, args.batch_concurrency)
    if args.scenario in ("collection", "all"):
        with collection.stripe_server(args.stripe, args.stripe_latency_ms) as server:
            async with running_stack(**collection.settings(server)) as (stack, http):
                await collection.run(stack, http, server, args.invoices, args.webhook_concurrency, args.seconds)
        if args.stripe == "standin" and args.localstripe_customers:
            await collection.localstripe_reference(args.localstripe_customers, args.seconds)
    if args.scenario in ("webhooks", "all"):
        await webhooks.run(args.deliveries, args.customers, args.change_rate, args.seconds, args.resync_customers)
    if args.scenario in ("metering", "all"):
        options = metering.Options(
            rate=args.rate,
            seconds=args.seconds,
            customers=args.customers,
            requests=args.requests,
            batch_events=args.batch_events,
            batch_customers=args.batch_customers,
            batch_workers=args.batch_workers,
            batch_concurrency=args.batch_concurrency,
            samples=args.samples,
            stored_events=args.stored_events,
            stored_customers=args.stored_customers,
            load_workers=args.load_workers,
            load_concurrency=args.load_concurrency,
        )
        async with running_stack() as (stack, http):
            await metering.run(stack, http, options)


if __name__ == "__main__":  # not when multiprocessing's spawned workers import it
    asyncio.run(main())
