"""Stripe for tests: localstripe (a fake of Stripe's API) in its own process,
and helpers that make a customer with a card there, as a user's Stripe
account would have it. localstripe is GPL: it only ever runs as a separate
process, never imported."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import stripe

from deploy.embedded import free_port, wait_for_port

# localstripe's test cards: one that is charged, one whose charges are
# declined, one whose charges need the holder (3-D Secure).
GOOD_CARD, DECLINED_CARD, AUTHENTICATED_CARD = "4242424242424242", "4000000000000341", "4000002760003184"


class LocalStripe:
    api_key = "sk_test_bxb_localstripe"

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalStripe:
        program = Path(sys.executable).parent / "localstripe"
        self.process = subprocess.Popen(
            # --from-scratch: not the state another instance left in the file
            # every instance shares (/tmp/localstripe.pickle), half written
            # when two test workers run one each.
            [str(program), "--port", str(self.port), "--from-scratch"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout=30, process=self.process)
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def client(self) -> stripe.StripeClient:
        return stripe.StripeClient(self.api_key, base_addresses={"api": self.url}, http_client=stripe.HTTPXClient())

    async def customer_with_card(self, number: str = GOOD_CARD) -> tuple[str, str]:
        """A Stripe customer with a saved card: (cus_..., pm_...)."""
        client = self.client()
        customer = await client.v1.customers.create_async(params={"email": "billing@acme.test"})
        card = {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}
        method = await client.v1.payment_methods.create_async(params={"type": "card", "card": card})
        await client.v1.payment_methods.attach_async(method.id, params={"customer": customer.id})
        return customer.id, method.id

    async def intent(self, intent_id: str):
        return await self.client().v1.payment_intents.retrieve_async(intent_id)

    async def intents_of(self, customer: str) -> list:
        """Every PaymentIntent of a Stripe customer (localstripe lists them all, unfiltered)."""
        page = await self.client().v1.payment_intents.list_async(params={"limit": 100})
        return [intent async for intent in page.auto_paging_iter() if intent.customer == customer]


class StripeProxy:
    """localstripe behind a proxy on 127.0.0.1 that puts the creation of
    PaymentIntents (`POST /v1/payment_intents`), or of what `path` names
    (`POST /v1/refunds`), under faults; every other request passes. Modes,
    for the next creations:

    - "pass": forwarded and answered;
    - "hold": waits until `release` is set (`arrived` says one is waiting),
      then goes on as the mode then set says ("hold" again: passes);
    - "drop": forwarded, so Stripe charges, then the connection closes
      without an answer (the network or the caller dying mid-call); one
      creation only, the next ones pass;
    - "stall": neither forwarded nor answered (Stripe hanging);
    - "error": answered 500, as Stripe says when it failed on its side.

    One request per connection (`Connection: close`), which keeps the relay
    to reading each side until it closes."""

    def __init__(self, upstream: LocalStripe, path: str = "/v1/payment_intents"):
        self.upstream = upstream
        self.path = path
        self.mode = "pass"
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.forwarded = 0  # creations that reached localstripe
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> StripeProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.release.set()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next(
                (int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0
            )
            body = await reader.readexactly(length)
            kept = [line for line in lines[1:] if line and not line.lower().startswith("connection:")]
            request = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1") + body
            creation = lines[0].startswith(f"POST {self.path} ")
            mode = self.mode if creation else "pass"
            if mode in ("hold", "stall"):
                self.arrived.set()
            if mode == "hold":
                await self.release.wait()
                mode = "pass" if self.mode == "hold" else self.mode
            if mode == "stall":
                await reader.read()  # until the caller gives up
                return
            if mode == "error":
                answer = b'{"error": {"type": "api_error", "message": "An unknown error occurred"}}'
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n")
                writer.write(b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(answer), answer))
                await writer.drain()
                return
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream.port)
            upstream_writer.write(request)
            await upstream_writer.drain()
            response = await upstream_reader.read()
            upstream_writer.close()
            self.forwarded += creation
            if mode == "drop":
                self.mode = "pass"
                return
            writer.write(response)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the caller went away
        finally:
            writer.close()
