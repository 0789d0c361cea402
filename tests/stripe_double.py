"""Stripe as the product sees it, for tests: `StripeDouble`, an HTTP server
on 127.0.0.1 that the product's Stripe client uses as its API base URL, in
front of one or more localstripe processes (GPL: separate processes, never
imported).

localstripe serves Stripe's core objects (customers, payment methods,
PaymentIntents, SetupIntents, charges, refunds) and signs the webhooks it
sends, but it is one account with one global store, ignores idempotency
keys, has no account endpoint, no Checkout and no way through 3-D Secure
but its own `_authenticate` call. The double adds, and only in tests:

- accounts: each `add_account()` is a Stripe account with its own secret
  key, webhook secret and id, routed by its key to its localstripe. Two
  accounts that must not see each other need two localstripe processes;
  accounts on one localstripe share its objects (and each receives the
  webhooks of all of them). An unknown key is answered 401, as Stripe does;
- `GET /v1/account`, the key's account;
- idempotency keys (`Idempotency-Key`, which the SDK sends on every POST):
  a key already used by the account is answered from what was saved, not
  executed again; with other parameters it is a 400 `idempotency_error`;
  while its first request runs, a 409 `idempotency_key_in_use`. As Stripe,
  what is saved is an answer the endpoint gave once it ran: successes, card
  errors (402) and server errors, not validation errors;
- 3-D Secure as a redirect: localstripe's `next_action` (`use_stripe_sdk`)
  is answered as Stripe's `redirect_to_url`, to a page of the double
  (`/3ds/<pi>`) that passes or fails the challenge and sends the browser
  back to the `return_url` given on creation or confirmation (a parameter
  localstripe refuses, kept by the double). Optionally (off_session_3ds=
  "decline"), an off-session confirmation that needs the customer fails as
  real Stripe fails it (402 `authentication_required`) instead of waiting;
- Checkout Sessions in payment and setup mode (`/v1/checkout/sessions`),
  completed by `complete_checkout` or the page at the session's `url`, the
  signed `checkout.session.completed`/`.expired` events sent to the
  account's webhook (see tests/stripe_events.py);
- Stripe's shapes where localstripe's differ: a 404 carries `code:
  resource_missing`, a 402 has `type: card_error` and, for a PaymentIntent,
  the intent it left; an intent's `latest_charge` is an id unless expanded;
  a failed 3-D Secure challenge sends `payment_intent.payment_failed`.

Everything else is forwarded unchanged. Faults (as the earlier StripeProxy,
below, still named) can be put on one route, `POST /v1/payment_intents` by
default: "pass", "hold", "drop", "stall", "error" (see `StripeDouble`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import json
import re
import secrets
import string
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode

import httpx

from tests import stripe_events
from tests.stripe import GOOD_CARD, LocalStripe

Json = dict[str, Any]

SESSION_PARAMS = {
    "mode",
    "customer",
    "currency",
    "line_items",
    "payment_intent_data",
    "setup_intent_data",
    "metadata",
    "success_url",
    "cancel_url",
    "expires_at",
    "client_reference_id",
    "payment_method_types",
    "expand",
}
SESSION_MIN_SECONDS, SESSION_MAX_SECONDS = 30 * 60, 24 * 3600
# Stripe's decline of an off-session payment that needs the customer.
AUTHENTICATION_REQUIRED = {
    "code": "authentication_required",
    "decline_code": "authentication_required",
    "message": "Your card was declined. This transaction requires authentication.",
}
# What a browser's redirect back from 3-D Secure says, by the intent's status.
REDIRECT_STATUS = {"succeeded": "succeeded", "processing": "processing", "requires_capture": "succeeded"}


def _random(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass(eq=False)
class Account:
    """One Stripe account of the double: its secret key, webhook signing
    secret and id, and the localstripe that holds its objects."""

    api_key: str
    webhook_secret: str
    account_id: str
    upstream: LocalStripe
    webhook_url: str | None = None  # where its events go, once registered


@dataclass
class Delivery:
    """An event the double emitted, and what became of its delivery
    (`url` None: the account has no webhook; `status` None: unreachable)."""

    account: Account
    event: Json
    url: str | None
    status: int | None


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def form(self) -> list[tuple[str, str]]:
        """The parameters, as Stripe's v1 API takes them: the query of a GET, the form of a POST."""
        text = self.query if self.method in ("GET", "DELETE") else self.body.decode("latin-1")
        return parse_qsl(text, keep_blank_values=True)


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, value: Any, **headers: str) -> Answer:
        return cls(status, json.dumps(value, indent=2).encode(), {"Content-Type": "application/json", **headers})

    @classmethod
    def page(cls, status: int, title: str, body: str = "") -> Answer:
        text = f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>{body}"
        return cls(status, text.encode(), {"Content-Type": "text/html; charset=utf-8"})


class StripeError(Exception):
    """An error the double answers in Stripe's shape."""

    def __init__(self, status: int, message: str = "", type: str = "invalid_request_error", **details: Any):
        super().__init__(message)
        self.status = status
        self.error = {"type": type, "message": message, **{k: v for k, v in details.items() if v is not None}}

    def answer(self) -> Answer:
        return Answer.json(self.status, {"error": self.error})


class Refused(Exception):
    """What a helper acting as the customer was refused (`error`: Stripe's error, when it answered one)."""

    def __init__(self, message: str, error: Json | None = None):
        super().__init__(message)
        self.error = error or {}


def nested(pairs: list[tuple[str, str]]) -> Json:
    """Form parameters (`a[b][0][c]=v`, `a[]=v`) as the nested dicts and lists they spell."""
    root: Json = {}
    for key, value in pairs:
        parts = re.findall(r"\[([^\]]*)\]", key)
        name = key.split("[", 1)[0]
        path = [name, *parts]
        node = root
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if part == "":  # a[]: the next of a list
                part = str(len(node))
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(key.isdigit() for key in node):
        return [_lists(node[key]) for key in sorted(node, key=int)]
    return {key: _lists(value) for key, value in node.items()}


def flat(params: Json, prefix: str = "") -> list[tuple[str, str]]:
    """Nested parameters as Stripe's form encoding spells them (booleans as true/false, None left out)."""
    pairs: list[tuple[str, str]] = []
    items = params.items() if isinstance(params, dict) else enumerate(params)
    for key, value in items:
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, dict | list):
            pairs += flat(value, name)
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        elif value is not None:
            pairs.append((name, str(value)))
    return pairs


async def read_request(reader: asyncio.StreamReader) -> Request:
    """One HTTP/1.1 request (a body by Content-Length only)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    method, target, _ = head[0].split(" ", 2)
    headers = {}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    path, _, query = target.partition("?")
    return Request(method, path, query, headers, body)


def write_answer(writer: asyncio.StreamWriter, answer: Answer) -> None:
    reason = {200: "OK", 302: "Found", 303: "See Other"}.get(answer.status, "Status")
    lines = [f"HTTP/1.1 {answer.status} {reason}"]
    lines += [f"{name}: {value}" for name, value in answer.headers.items()]
    lines += [f"Content-Length: {len(answer.body)}", "Connection: close", "", ""]
    writer.write("\r\n".join(lines).encode("latin-1") + answer.body)


@dataclass
class _Intent:
    """A PaymentIntent the double has answered: whose it is, how to authenticate it, where the browser returns."""

    account: Account
    client_secret: str
    return_url: str | None = None
    declined_off_session: bool = False  # failed as Stripe fails an off-session payment needing the customer


@dataclass
class _Saved:
    """An idempotency key's first request, and its answer once it has one."""

    request: tuple[str, str, tuple[tuple[str, str], ...]]
    answer: Answer | None = None


class StripeDouble:
    """Stripe's API on 127.0.0.1 (port 0) for the accounts added to it, in
    front of localstripe (the module's docstring says what it adds).

    `async with StripeDouble(localstripe) as double:`, then
    `account = double.add_account()`; the product's client takes
    `account.api_key` and `double.url`.

    Faults, on the route `faulted` ("POST /v1/payment_intents" by default,
    or "POST /v1/refunds", ...), for its next requests, by `mode`:

    - "pass": served;
    - "hold": waits until `release` is set (`arrived` says one is waiting),
      then goes on as the mode then set says ("hold" again: passes);
    - "drop": served (Stripe acts and saves the answer for the idempotency
      key), then the connection closes without an answer (the network or
      the caller dying mid-call); one request only, the next ones pass;
    - "stall": neither served nor answered (Stripe hanging);
    - "error": answered 500 without acting, as Stripe says when it failed on its side.

    One request per connection (`Connection: close`). Counters:
    `created(path)` counts the POSTs to `path` served (not replayed, not
    faulted away); `forwarded` those of the faulted route. Helpers acting as
    the customer's browser (`authenticate`, `complete_checkout`) go to
    localstripe directly and are not counted."""

    def __init__(
        self,
        *upstreams: LocalStripe,
        faulted: str = "POST /v1/payment_intents",
        off_session_3ds: Literal["requires_action", "decline"] = "requires_action",
    ):
        self.upstreams = list(upstreams)
        self.faulted = faulted
        self.off_session_3ds = off_session_3ds
        self.mode = "pass"
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.closing = asyncio.Event()  # set on exit: stalled requests end (the server waits for its connections)
        self.accounts: dict[str, Account] = {}  # by secret key
        self.emitted: list[Delivery] = []
        self.failures: list[str] = []  # the double's own errors, answered 500
        self._served: Counter[str] = Counter()  # "METHOD /path"
        self._saved: dict[tuple[str, str], _Saved] = {}  # (account id, idempotency key)
        self._intents: dict[str, _Intent] = {}
        self._sessions: dict[str, tuple[Account, Json]] = {}
        self._http: httpx.AsyncClient | None = None
        self.server: asyncio.Server | None = None

    # -- lifecycle and accounts

    @property
    def url(self) -> str:
        assert self.server is not None, "the double is not started"
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> StripeDouble:
        self._http = httpx.AsyncClient(timeout=30)
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        self.closing.set()
        assert self.server is not None and self._http is not None
        self.server.close()
        await self.server.wait_closed()
        await self._http.aclose()

    def add_account(self, upstream: LocalStripe | None = None, *, api_key: str | None = None) -> Account:
        """A new Stripe account on `upstream` (the double's first localstripe):
        a fresh secret key unless `api_key` is given."""
        upstream = upstream or self.upstreams[0]
        if upstream not in self.upstreams:
            self.upstreams.append(upstream)
        account = Account(
            api_key=api_key or f"sk_test_{_random(32)}",
            webhook_secret=f"whsec_{_random(32)}",
            account_id=f"acct_{_random(16)}",
            upstream=upstream,
        )
        self.accounts[account.api_key] = account
        return account

    async def register_webhook(self, account: Account, url: str, events: list[str] | None = None) -> None:
        """Sends the account's events to `url`, signed with its webhook
        secret: localstripe's own (1 s after the fact; those of every account
        on that localstripe), and those the double emits."""
        config: Json = {"url": url, "secret": account.webhook_secret}
        if events is not None:
            config["events"] = events
        answer = await self._client.post(f"{account.upstream.url}/_config/webhooks/{account.account_id}", json=config)
        answer.raise_for_status()
        account.webhook_url = url

    async def unregister_webhook(self, account: Account) -> None:
        """No more events to the account's webhook (localstripe keeps its
        webhooks for its life: this one is left subscribed to no event)."""
        config = {"url": account.webhook_url or "http://127.0.0.1:9", "secret": account.webhook_secret, "events": []}
        answer = await self._client.post(f"{account.upstream.url}/_config/webhooks/{account.account_id}", json=config)
        answer.raise_for_status()
        account.webhook_url = None

    def created(self, path: str) -> int:
        """POSTs to `path` (such as "/v1/payment_intents") the double served."""
        return self._served[f"POST {path}"]

    @property
    def forwarded(self) -> int:
        """Requests on the faulted route that were served."""
        return self._served[self.faulted]

    def idempotency_keys(self, path: str) -> set[str]:
        """The idempotency keys POSTs to `path` came with (a key sent again counts once)."""
        return {key for (_, key), saved in self._saved.items() if saved.request[:2] == ("POST", path)}

    # -- the customer's side

    async def authenticate(self, intent_id: str, succeed: bool = True) -> Json:
        """The customer passing (or failing) the 3-D Secure challenge of an intent waiting for it: the intent after."""
        intent = self._intents.get(intent_id) or await self._find_intent(intent_id)
        status, body = await self._authenticate(intent, intent_id, succeed)
        if status != 200:
            raise Refused(f"localstripe refused to authenticate {intent_id}", body.get("error"))
        return body

    async def complete_checkout(
        self, session_id: str, card: str = GOOD_CARD, *, three_d_secure: Literal["succeed", "fail"] = "succeed"
    ) -> Json:
        """What the customer's browser does on the session's page: a card
        (a PaymentMethod at the account's localstripe, attached to the
        session's customer), then in payment mode a PaymentIntent for the
        session's amount confirmed with it (its 3-D Secure challenge, if
        any, ending as `three_d_secure` says), in setup mode a SetupIntent; the session
        complete and `checkout.session.completed` sent. `Refused` for a
        session not open (expired, complete) or a card that fails, the
        session then still open. The session after."""
        account, session = self._session(session_id, None)
        await self._expire_if_due(account, session)
        if session["status"] != "open":
            raise Refused(f"the checkout session {session_id} is {session['status']}")
        number = {"number": card, "exp_month": 12, "exp_year": 2040, "cvc": "123"}
        method = await self._customer_call(account, "POST", "/v1/payment_methods", {"type": "card", "card": number})
        if session["customer"]:
            path = f"/v1/payment_methods/{method['id']}/attach"
            await self._customer_call(account, "POST", path, {"customer": session["customer"]})
        if session["mode"] == "payment":
            params = {
                "amount": session["amount_total"],
                "currency": session["currency"],
                "customer": session["customer"],
                "payment_method": method["id"],
                "metadata": session["_payment_intent_data"].get("metadata") or {},
                "confirm": True,
            }
            intent = await self._customer_call(account, "POST", "/v1/payment_intents", params)
            self._intents[intent["id"]] = _Intent(account, intent["client_secret"])
            if intent["status"] == "requires_action":
                intent = await self.authenticate(intent["id"], succeed=three_d_secure == "succeed")
            if intent["status"] != "succeeded":
                raise Refused(
                    f"the payment intent {intent['id']} is {intent['status']}", intent.get("last_payment_error")
                )
            session.update(payment_intent=intent["id"], payment_status="paid")
        else:
            params = {"customer": session["customer"], "metadata": session["_setup_intent_data"].get("metadata") or {}}
            setup = await self._customer_call(account, "POST", "/v1/setup_intents", params)
            path = f"/v1/setup_intents/{setup['id']}/confirm"
            setup = await self._customer_call(account, "POST", path, {"payment_method": method["id"]})
            if setup["status"] != "succeeded":  # localstripe cannot authenticate a SetupIntent
                raise Refused(f"the setup intent {setup['id']} is {setup['status']}")
            session["setup_intent"] = setup["id"]
        session.update(status="complete", url=None)
        await self._emit(account, "checkout.session.completed", _public(session))
        return _public(session)

    # -- serving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
            mode = self.mode if f"{request.method} {request.path}" == self.faulted else "pass"
            if mode in ("hold", "stall"):
                self.arrived.set()
            if mode == "hold":
                await self.release.wait()
                mode = "pass" if self.mode == "hold" else self.mode
            if mode == "stall":  # until the caller gives up, or the double closes
                waits = {asyncio.ensure_future(reader.read()), asyncio.ensure_future(self.closing.wait())}
                _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for wait in pending:
                    wait.cancel()
                return
            if mode == "error":
                write_answer(writer, StripeError(500, "An unknown error occurred", "api_error").answer())
                await writer.drain()
                return
            answer = await self.handle(request)
            if mode == "drop":
                self.mode = "pass"
                return
            write_answer(writer, answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError):
            pass  # the caller went away, or sent no HTTP
        finally:
            writer.close()

    async def handle(self, request: Request) -> Answer:
        """The double's answer to one request."""
        try:
            if request.method == "GET" and request.path.startswith("/3ds/"):
                return await self._three_d_secure(request)
            if request.path.startswith("/pay/"):
                return await self._checkout_page(request)
            account = self._account_of(request)
            key = request.headers.get("idempotency-key")
            if request.method == "POST" and key:
                return await self._idempotent(account, key, request)
            return await self._execute(account, request)
        except StripeError as error:
            return error.answer()
        except Exception:
            self.failures.append(traceback.format_exc())
            return StripeError(500, f"the Stripe double failed: {self.failures[-1]}", "api_error").answer()

    def _account_of(self, request: Request) -> Account:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        key = credentials.strip() if scheme.lower() == "bearer" else ""
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(credentials).decode().split(":", 1)[0]
            except ValueError:
                key = ""
        if not key:
            raise StripeError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        account = self.accounts.get(key)
        if account is None:
            shown = key[: key.find("_", 3) + 1] + "*" * max(len(key) - 12, 4) + key[-4:]
            raise StripeError(401, f"Invalid API Key provided: {shown}")
        return account

    async def _idempotent(self, account: Account, key: str, request: Request) -> Answer:
        """Stripe's idempotency: the saved answer for a key already used; an
        error for the key with another request, or while its first runs."""
        slot = (account.account_id, key)
        signature = (request.method, request.path, tuple(sorted(request.form())))
        saved = self._saved.get(slot)
        if saved is not None and saved.answer is None:
            raise StripeError(
                409,
                f"There is currently another in-progress request using this idempotency key ('{key}'). "
                "Retry after it completes.",
                code="idempotency_key_in_use",
            )
        if saved is not None and saved.request != signature:
            raise StripeError(
                400,
                f"Keys for idempotent requests can only be used with the same parameters they were first used "
                f"with ({saved.request[0]} {saved.request[1]}). Try using a key other than '{key}' if you meant "
                "to execute a different request.",
                "idempotency_error",
            )
        if saved is not None:
            assert saved.answer is not None
            return Answer(
                saved.answer.status, saved.answer.body, {**saved.answer.headers, "Idempotent-Replayed": "true"}
            )
        self._saved[slot] = _Saved(signature)  # in flight
        try:
            answer = await self._execute(account, request)
        finally:
            del self._saved[slot]
        if answer.status < 400 or answer.status == 402 or answer.status >= 500:  # the endpoint ran
            self._saved[slot] = _Saved(signature, answer)
        return answer

    async def _execute(self, account: Account, request: Request) -> Answer:
        route = f"{request.method} {request.path}"
        parts = request.path.strip("/").split("/")
        confirming = len(parts) == 4 and parts[:2] == ["v1", "payment_intents"] and parts[3] == "confirm"
        try:
            if route == "GET /v1/account":
                answer = Answer.json(200, self._account_object(account))
            elif parts[:3] == ["v1", "checkout", "sessions"]:
                answer = await self._checkout(account, request, parts[3:])
            elif route == "POST /v1/payment_intents" or (request.method == "POST" and confirming):
                answer = await self._confirm_intent(account, request)
            else:
                answer = await self._forward(account, request)
        except StripeError as error:
            answer = error.answer()
        self._served[route] += 1
        return answer

    # -- forwarding

    @property
    def _client(self) -> httpx.AsyncClient:
        assert self._http is not None, "the double is not started"
        return self._http

    async def _forward(self, account: Account, request: Request) -> Answer:
        status, body = await self._upstream(account, request.method, request.path, request.query, request.body)
        return await self._stripe_like(account, request.path, status, body, _expansions(request))

    async def _upstream(
        self, account: Account, method: str, path: str, query: str = "", body: bytes | str = b""
    ) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {account.api_key}"}
        if method == "POST":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        url = f"{account.upstream.url}{path}" + (f"?{query}" if query else "")
        response = await self._client.request(method, url, content=body or None, headers=headers)
        return response.status_code, response.content

    async def _customer_call(self, account: Account, method: str, path: str, params: Json | None = None) -> Json:
        """A call to the account's localstripe on the customer's behalf: its
        answer, or `Refused` with Stripe's error."""
        status, body = await self._upstream(account, method, path, "", urlencode(flat(params or {})))
        value = json.loads(body)
        if status != 200:
            raise Refused(f"{method} {path}: {value.get('error', {}).get('message')}", value.get("error"))
        return value

    async def _stripe_like(
        self, account: Account, path: str, status: int, body: bytes, expand: list[str] | None = None
    ) -> Answer:
        """localstripe's answer in Stripe's shapes: errors' codes and types,
        3-D Secure as a redirect, an intent's `latest_charge` an id unless
        expanded (the intents it shows remembered)."""
        try:
            value = json.loads(body)
        except ValueError:
            return Answer(status, body, {"Content-Type": "text/plain"})
        error = value.get("error") if isinstance(value, dict) else None
        if isinstance(error, dict) and status == 404:
            error.setdefault("code", "resource_missing")
        if isinstance(error, dict) and status == 402:
            error["type"] = "card_error"
            if path == "/v1/payment_intents" or path.startswith("/v1/payment_intents/"):
                intent = await self._intent_of_charge(account, error.get("charge"))
                if intent is not None:
                    error["payment_intent"] = intent
        charges_expanded = any(path.split(".")[-1] == "latest_charge" for path in expand or [])
        self._rewrite(account, value, charges_expanded)
        return Answer.json(status, value, **{"Request-Id": f"req_{_random(14)}"})

    async def _intent_of_charge(self, account: Account, charge_id: Any) -> Json | None:
        if not isinstance(charge_id, str):
            return None
        status, body = await self._upstream(account, "GET", f"/v1/charges/{charge_id}", "expand[0]=payment_intent")
        intent = json.loads(body).get("payment_intent") if status == 200 else None
        return intent if isinstance(intent, dict) else None

    def _rewrite(self, account: Account, value: Any, charges_expanded: bool = False) -> None:
        """Every PaymentIntent in an answer remembered, its `next_action` as
        real Stripe's redirect to the 3-D Secure page, its `latest_charge`
        an id unless expanded (localstripe always embeds the charge)."""
        if isinstance(value, list):
            for item in value:
                self._rewrite(account, item, charges_expanded)
            return
        if not isinstance(value, dict):
            return
        for item in value.values():
            self._rewrite(account, item, charges_expanded)
        if value.get("object") != "payment_intent" or not isinstance(value.get("client_secret"), str):
            return
        charge = value.get("latest_charge")
        if isinstance(charge, dict) and not charges_expanded:
            value["latest_charge"] = charge["id"]
        intent = self._intents.setdefault(value["id"], _Intent(account, value["client_secret"]))
        error = value.get("last_payment_error")
        if intent.declined_off_session and isinstance(error, dict):
            value["last_payment_error"] = {**AUTHENTICATION_REQUIRED, "type": "card_error"}
        action = value.get("next_action")
        if isinstance(action, dict) and action.get("type") == "use_stripe_sdk":
            query = urlencode({"client_secret": intent.client_secret})
            value["next_action"] = {
                "type": "redirect_to_url",
                "redirect_to_url": {"url": f"{self.url}/3ds/{value['id']}?{query}", "return_url": intent.return_url},
            }

    # -- PaymentIntents and 3-D Secure

    async def _confirm_intent(self, account: Account, request: Request) -> Answer:
        """A PaymentIntent created or confirmed: its `return_url` kept by the
        double (localstripe refuses the parameter); an off-session one
        needing the customer declined as Stripe does, when so configured."""
        form = request.form()
        return_url = next((value for name, value in form if name == "return_url"), None)
        form = [(name, value) for name, value in form if name != "return_url"]
        off_session = ("off_session", "true") in form
        status, body = await self._upstream(account, "POST", request.path, request.query, urlencode(form))
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if status == 200 and isinstance(value, dict) and value.get("object") == "payment_intent":
            intent = self._intents.setdefault(value["id"], _Intent(account, value["client_secret"]))
            intent.return_url = return_url or intent.return_url
            if off_session and self.off_session_3ds == "decline" and value.get("status") == "requires_action":
                intent.declined_off_session = True
                _, failed = await self._authenticate(intent, value["id"], succeed=False)
                raise StripeError(402, type="card_error", payment_intent=failed, **AUTHENTICATION_REQUIRED)
        return await self._stripe_like(account, request.path, status, body, _expansions(request))

    async def _find_intent(self, intent_id: str) -> _Intent:
        for account in self.accounts.values():
            status, body = await self._upstream(account, "GET", f"/v1/payment_intents/{intent_id}")
            if status == 200:
                value = json.loads(body)
                return self._intents.setdefault(intent_id, _Intent(account, value["client_secret"]))
        raise Refused(f"no account of the double has the payment intent {intent_id}")

    async def _authenticate(self, intent: _Intent, intent_id: str, succeed: bool) -> tuple[int, Json]:
        """localstripe's 3-D Secure outcome; on a failure, the
        `payment_intent.payment_failed` Stripe sends (localstripe does not)."""
        params = {"client_secret": intent.client_secret, "success": "true" if succeed else "false"}
        path = f"/v1/payment_intents/{intent_id}/_authenticate"
        status, body = await self._upstream(intent.account, "POST", path, "", urlencode(params))
        answer = await self._stripe_like(intent.account, path, status, body)
        value = json.loads(answer.body)
        if status == 200 and value.get("status") == "requires_payment_method":
            await self._emit(intent.account, "payment_intent.payment_failed", value)
        return status, value

    async def _three_d_secure(self, request: Request) -> Answer:
        """The challenge page the customer's browser is sent to:
        `?client_secret=...&outcome=succeed|fail` passes or fails it, then
        back to the return_url (302) with Stripe's query parameters."""
        intent_id = request.path.removeprefix("/3ds/")
        query = dict(parse_qsl(request.query))
        intent = self._intents.get(intent_id)
        if intent is None or query.get("client_secret") != intent.client_secret:
            return Answer.page(404, "No such payment")
        outcome = query.get("outcome")
        if outcome not in ("succeed", "fail"):
            secret = quote(intent.client_secret)
            links = "".join(
                f'<p><a href="/3ds/{intent_id}?client_secret={secret}&amp;outcome={o}">{o}</a></p>'
                for o in ("succeed", "fail")
            )
            return Answer.page(200, "3-D Secure test challenge", links)
        status, value = await self._authenticate(intent, intent_id, outcome == "succeed")
        if status == 402 and isinstance(value["error"].get("payment_intent"), dict):  # passed, then declined
            status, value = 200, value["error"]["payment_intent"]
        if status != 200:
            return Answer.json(status, value)
        if not intent.return_url:
            return Answer.json(200, value)
        back = {
            "payment_intent": intent_id,
            "payment_intent_client_secret": intent.client_secret,
            "redirect_status": REDIRECT_STATUS.get(value["status"], "failed"),
        }
        separator = "&" if "?" in intent.return_url else "?"
        return Answer(302, b"", {"Location": f"{intent.return_url}{separator}{urlencode(back)}"})

    # -- the account, Checkout

    def _account_object(self, account: Account) -> Json:
        return {
            "id": account.account_id,
            "object": "account",
            "business_profile": {"name": None, "url": None},
            "capabilities": {"card_payments": "active", "transfers": "active"},
            "charges_enabled": True,
            "country": "US",
            "created": 1700000000,
            "default_currency": "usd",
            "details_submitted": True,
            "email": None,
            "metadata": {},
            "payouts_enabled": True,
            "type": "standard",
        }

    async def _checkout(self, account: Account, request: Request, rest: list[str]) -> Answer:
        params = nested(request.form())
        if request.method == "POST" and not rest:
            session = await self._new_session(account, params)
        elif request.method == "GET" and len(rest) == 1:
            _, session = self._session(rest[0], account)
            await self._expire_if_due(account, session)
        elif request.method == "POST" and len(rest) == 2 and rest[1] == "expire":
            _, session = self._session(rest[0], account)
            await self._expire_if_due(account, session)
            if session["status"] != "open":
                raise StripeError(
                    400,
                    f'Only Checkout Sessions with a status in ["open"] can be expired. '
                    f'This Checkout Session has a status of "{session["status"]}".',
                )
            await self._expire(account, session)
        else:
            raise StripeError(404, f"Unrecognized request URL ({request.method}: {request.path}).")
        answer = _public(session)
        for name in params.get("expand") or []:
            if name in ("payment_intent", "setup_intent") and answer[name]:
                answer[name] = await self._customer_call(account, "GET", f"/v1/{name}s/{answer[name]}")
        self._rewrite(account, answer)
        return Answer.json(200, answer, **{"Request-Id": f"req_{_random(14)}"})

    def _session(self, session_id: str, account: Account | None) -> tuple[Account, Json]:
        owner, session = self._sessions.get(session_id, (None, None))
        if owner is None or session is None or (account is not None and owner is not account):
            raise StripeError(
                404, f"No such checkout.session: '{session_id}'", code="resource_missing", param="session"
            )
        return owner, session

    async def _new_session(self, account: Account, params: Json) -> Json:
        """A Checkout Session, checked as Stripe checks the parameters the double serves."""
        for name in params:
            if name not in SESSION_PARAMS:
                raise StripeError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
        mode = params.get("mode")
        if mode not in ("payment", "setup"):
            message = (
                "Missing required param: mode."
                if mode is None
                else f"Invalid mode: {mode} (the double serves payment and setup)"
            )
            raise StripeError(
                400, message, code="parameter_missing" if mode is None else "parameter_invalid_string", param="mode"
            )
        customer = params.get("customer")
        if customer is not None:
            status, _ = await self._upstream(account, "GET", f"/v1/customers/{customer}")
            if status != 200:
                raise StripeError(400, f"No such customer: '{customer}'", code="resource_missing", param="customer")
        now = int(time.time())
        expires_at = _integer(params.get("expires_at", now + SESSION_MAX_SECONDS), "expires_at")
        if not now + SESSION_MIN_SECONDS - 60 <= expires_at <= now + SESSION_MAX_SECONDS + 60:
            raise StripeError(
                400,
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.",
                code="parameter_invalid_integer",
                param="expires_at",
            )
        methods = params.get("payment_method_types") or ["card"]
        if methods != ["card"]:
            raise StripeError(400, "The double serves card payments only.", param="payment_method_types")
        currency = params.get("currency")
        amount = None
        payment_data = _only(params.get("payment_intent_data"), {"metadata"}, "payment_intent_data")
        setup_data = _only(params.get("setup_intent_data"), {"metadata"}, "setup_intent_data")
        if mode == "payment":
            if setup_data:
                raise StripeError(400, "setup_intent_data is for setup mode.", param="setup_intent_data")
            currency, amount = _line_items(params.get("line_items"), currency)
        elif params.get("line_items") or payment_data:
            raise StripeError(400, "Setup mode takes neither line_items nor payment_intent_data.", param="line_items")
        session_id = f"cs_test_{_random(58)}"
        session: Json = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": now,
            "currency": currency.lower() if currency else None,
            "customer": customer,
            "expires_at": expires_at,
            "livemode": False,
            "metadata": params.get("metadata") or {},
            "mode": mode,
            "payment_intent": None,
            "payment_method_types": methods,
            "payment_status": "unpaid" if mode == "payment" else "no_payment_required",
            "setup_intent": None,
            "status": "open",
            "success_url": (params.get("success_url") or "").replace("{CHECKOUT_SESSION_ID}", session_id) or None,
            "url": f"{self.url}/pay/{session_id}",
            "_payment_intent_data": payment_data,
            "_setup_intent_data": setup_data,
        }
        self._sessions[session_id] = (account, session)
        return session

    async def _expire_if_due(self, account: Account, session: Json) -> None:
        if session["status"] == "open" and time.time() >= session["expires_at"]:
            await self._expire(account, session)

    async def _expire(self, account: Account, session: Json) -> None:
        session.update(status="expired", url=None)
        await self._emit(account, "checkout.session.expired", _public(session))

    async def _checkout_page(self, request: Request) -> Answer:
        """The session's page: GET shows it; POST (form `card`) pays or saves
        the card, then 303 to the success_url."""
        session_id = request.path.removeprefix("/pay/")
        try:
            account, session = self._session(session_id, None)
        except StripeError:
            return Answer.page(404, "No such checkout session")
        if request.method != "POST":
            await self._expire_if_due(account, session)
            form = '<form method="post"><input name="card" value="4242424242424242"><button>Pay</button></form>'
            return Answer.page(200, f"Checkout: {session['status']}", form if session["status"] == "open" else "")
        card = dict(request.form()).get("card", GOOD_CARD)
        try:
            done = await self.complete_checkout(session_id, card)
        except Refused as refused:
            return Answer.page(402, str(refused))
        if done["success_url"]:
            return Answer(303, b"", {"Location": done["success_url"]})
        return Answer.page(200, "Checkout: complete")

    async def _emit(self, account: Account, type: str, obj: Json) -> None:
        """A signed event of the account to its webhook, as Stripe sends it."""
        event = stripe_events.event(type, obj)
        status = None
        if account.webhook_url:
            with contextlib.suppress(httpx.HTTPError):
                answer = await stripe_events.deliver(account.webhook_url, "", event, account.webhook_secret)
                status = answer.status_code
        self.emitted.append(Delivery(account, event, account.webhook_url, status))


class StripeProxy(StripeDouble):
    """The double with one account whose key is localstripe's own
    (`LocalStripe.api_key`), for the tests that put faults on Stripe and
    call it with that key."""

    def __init__(self, upstream: LocalStripe, faulted: str = "POST /v1/payment_intents"):
        super().__init__(upstream, faulted=faulted)
        self.add_account(upstream, api_key=upstream.api_key)


def _expansions(request: Request) -> list[str]:
    expand = nested(request.form()).get("expand") or []
    return [expand] if isinstance(expand, str) else [path for path in expand if isinstance(path, str)]


def _public(session: Json) -> Json:
    return {key: value for key, value in session.items() if not key.startswith("_")}


def _integer(value: Any, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param) from None


def _only(value: Any, allowed: set[str], param: str) -> Json:
    """A dict parameter whose keys the double serves (`allowed`)."""
    value = value or {}
    if not isinstance(value, dict):
        raise StripeError(400, f"Invalid object: {param}", param=param)
    for name in value:
        if name not in allowed:
            raise StripeError(
                400, f"Received unknown parameter: {param}[{name}]", code="parameter_unknown", param=f"{param}[{name}]"
            )
    return value


def _line_items(items: Any, currency: str | None) -> tuple[str, int]:
    """The currency and total of a payment session's items (`price_data` only: localstripe has no Prices)."""
    if not isinstance(items, list) or not items:
        raise StripeError(400, "line_items is required in payment mode.", code="parameter_missing", param="line_items")
    total = 0
    for i, item in enumerate(items):
        name = f"line_items[{i}]"
        data = item.get("price_data") if isinstance(item, dict) else None
        if not isinstance(data, dict):
            raise StripeError(400, f"{name}[price_data] is required (the double has no Prices).", param=name)
        product = data.get("product_data")
        if not isinstance(product, dict) or not product.get("name"):
            raise StripeError(400, f"Missing required param: {name}[price_data][product_data][name].", param=name)
        item_currency = str(data.get("currency") or "").lower()
        if not item_currency or (currency and item_currency != currency.lower()):
            raise StripeError(400, f"{name}[price_data][currency] must be the session's currency.", param=name)
        currency = item_currency
        unit = _integer(data.get("unit_amount"), f"{name}[price_data][unit_amount]")
        quantity = _integer(item.get("quantity"), f"{name}[quantity]")
        if unit < 0 or quantity < 1:
            raise StripeError(400, f"{name}: a negative amount or no quantity.", param=name)
        total += unit * quantity
    assert currency is not None
    return currency, total
