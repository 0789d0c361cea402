"""Which subscription an event naming none counts for: the customer's
subscription whose plan charges its metric and that was active at the
event's time, the earliest started if several were (then the earliest
created, then the smallest id). Invoicing bills by this rule and metering's
ComputeUsage counts by it, so both read the same numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

Window = tuple[datetime, datetime]


@dataclass(frozen=True)
class Claim:
    """A subscription's claim on unassigned events: its active span, its rank
    among the customer's subscriptions and the metrics its plan charges."""

    id: str
    start: datetime
    end: datetime | None  # its termination, if any
    create_time: datetime
    codes: frozenset[str]

    @property
    def rank(self) -> tuple[datetime, datetime, str]:
        return self.start, self.create_time, self.id


def owned(claim: Claim, others: Sequence[Claim], code: str, start: datetime, end: datetime) -> list[Window]:
    """The windows of [start, end) in which `claim` owns the events of `code` naming no subscription."""
    windows = [(max(claim.start, start), min(claim.end or end, end))]
    for other in others:
        if other.id != claim.id and code in other.codes and other.rank < claim.rank:
            windows = _subtract(windows, (other.start, other.end or end))
    return [(s, e) for s, e in windows if s < e]


def _subtract(windows: list[Window], cut: Window) -> list[Window]:
    """`windows` without `cut`: what remains before it and after it, empty pieces dropped."""
    pieces = [piece for start, end in windows for piece in ((start, min(end, cut[0])), (max(start, cut[1]), end))]
    return [(start, end) for start, end in pieces if start < end]
