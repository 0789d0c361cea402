"""What a delivery is sent to. A sink is a webhook endpoint (signed HTTP
POST) or an analytics tool (its API); the sender (one queue per sink, every
replica) gives each its deliveries in order per customer and records what
each attempt got. The integrations' tools are `Vendor`s, one per provider."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Outgoing:
    """One delivery's announcement, as a sink receives it."""

    delivery_id: str
    event_id: str  # the announcement's id: `webhook-id`, stable across attempts and replays
    organization_id: str
    type: str  # an event type of services/payments/event_catalog.py
    customer_id: str  # "" when it concerns no customer
    occur_time: datetime
    payload: str  # the JSON body: {"type", "timestamp", "data"}


@dataclass(frozen=True)
class Sent:
    """What one attempt got."""

    succeeded: bool
    status_code: int = 0  # the answer's HTTP status; 0 when none came
    latency_ms: int = 0
    response_snippet: str = ""  # the first characters of the answer
    error: str = ""  # why it failed, when it did
    # Refused for good (a tool's validation error): retrying cannot help, the
    # delivery fails at once instead of following the retry schedule.
    permanent: bool = False


class Sink(Protocol):
    async def send(self, outgoing: Outgoing) -> Sent:
        """Sends one announcement within the sink's deadline; never raises for
        the receiver's failures (they are a `Sent` that did not succeed)."""
        ...


@dataclass(frozen=True)
class Account:
    """An organization's connected account at an analytics tool, unsealed."""

    organization_id: str
    api_key: str
    data_source_id: str


class Vendor(Protocol):
    """A revenue-analytics tool bxb syncs to."""

    name: str  # the provider: "chartmogul", "baremetrics", "profitwell"
    accepts: frozenset[str]  # the event types it syncs; others are not queued for it

    async def connect(self, api_key: str, data_source_id: str) -> str:
        """Checks the key at the tool (a refused key raises InvalidArgument
        naming api_key) and returns the data source to write to: the one
        given, or one made or found there."""
        ...

    def sink(self, account: Account) -> Sink:
        """A sink writing announcements to this account."""
        ...
