"""One typed client per peer service: its address, one channel, the default
deadline of its calls and the organization metadata, so no module builds
stubs or metadata of its own.

The channel is opened on first use: a grpc.aio channel belongs to the event
loop that opens it, and services are built before their serving loop runs.
"""

from __future__ import annotations

from typing import Any

import grpc

from bxb.catalog.v1 import event_references_pb2_grpc, plans_pb2_grpc, subscriptions_pb2_grpc
from bxb.invoicing.v1 import billing_runs_pb2_grpc
from services.common import tenancy
from services.common.channels import DEFAULT_TIMEOUT, MESSAGE_BYTES, open_channel


class Peer:
    def __init__(
        self,
        address: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        receive_bytes: int = MESSAGE_BYTES,
        channel: grpc.aio.Channel | None = None,
    ):
        """`channel`, when given, is used instead of one to `address` (and
        stays its owner's to close)."""
        self.address = address
        self.timeout = timeout
        self.receive_bytes = receive_bytes
        self._channel: grpc.aio.Channel | None = channel
        self._owned = channel is None
        self._stubs: dict[type, Any] = {}

    def stub(self, kind: type) -> Any:
        """The stub of one of the peer's services, over the peer's channel."""
        if kind not in self._stubs:
            if self._channel is None:
                self._channel = open_channel(self.address, self.timeout, self.receive_bytes)
            self._stubs[kind] = kind(self._channel)
        return self._stubs[kind]

    def options(self, org: str, **more) -> dict:
        """A call's keyword arguments: the organization and the deadline
        (`more` adds to them or overrides them)."""
        return {"metadata": tenancy.metadata(org), "timeout": self.timeout} | more

    async def close(self) -> None:
        if self._owned and self._channel is not None:
            await self._channel.close()


class Catalog(Peer):
    @property
    def plans(self) -> plans_pb2_grpc.PlanServiceStub:
        return self.stub(plans_pb2_grpc.PlanServiceStub)

    @property
    def subscriptions(self) -> subscriptions_pb2_grpc.SubscriptionServiceStub:
        return self.stub(subscriptions_pb2_grpc.SubscriptionServiceStub)

    @property
    def event_references(self) -> event_references_pb2_grpc.EventReferenceServiceStub:
        return self.stub(event_references_pb2_grpc.EventReferenceServiceStub)


class Invoicing(Peer):
    @property
    def billing_runs(self) -> billing_runs_pb2_grpc.BillingRunServiceStub:
        return self.stub(billing_runs_pb2_grpc.BillingRunServiceStub)
