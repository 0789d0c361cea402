"""Whether an organization exists, for the calls that act for one.

A service honours organization metadata only for an organization that
exists, so that no caller writes into a phantom tenant. Catalog asks its own
table, the other services ask catalog (peers.Catalog.organization_exists);
either way the answer is kept in the process: a yes for good (organizations
are never deleted), a no for NEGATIVE_SECONDS, so an organization created
since is soon seen and an unknown one does not reach catalog on every call.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

NEGATIVE_SECONDS = 1.0

Lookup = Callable[[str], Awaitable[bool]]
"""Asks the source whether an organization exists."""


class KnownOrganizations:
    def __init__(
        self, lookup: Lookup, negative_seconds: float = NEGATIVE_SECONDS, clock: Callable[[], float] = time.monotonic
    ):
        self.lookup = lookup
        self.negative_seconds = negative_seconds
        self.clock = clock
        self._known: set[str] = set()
        self._unknown: dict[str, float] = {}  # organization -> when the no expires

    async def exists(self, org: str) -> bool:
        if org in self._known:
            return True
        if self._unknown.get(org, 0.0) > self.clock():
            return False
        if await self.lookup(org):
            self._known.add(org)
            self._unknown.pop(org, None)
            return True
        self._unknown[org] = self.clock() + self.negative_seconds
        return False
