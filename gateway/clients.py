"""gRPC stubs of the four services, over one channel per service; the RPCs
the transcoder serves are called by their descriptors (Clients.unary)."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message

from bxb.catalog.v1 import (
    organizations_pb2_grpc,
    plans_pb2_grpc,
)
from bxb.common.v1 import parked_messages_pb2_grpc
from bxb.invoicing.v1 import calculations_pb2_grpc, invoices_pb2_grpc
from bxb.metering.v1 import usage_events_pb2_grpc, usage_pb2_grpc
from bxb.payments.v1 import payments_pb2_grpc
from gateway.config import Settings
from services.common.channels import open_channel

# The services, in the order of Clients.channels: the second part of their package names.
SERVICES = ("catalog", "metering", "invoicing", "payments")
# The services that park the messages they give up on (ParkedMessageService), in that order.
PARKING = ("catalog", "invoicing", "payments")


def serialized(message: Message) -> bytes:
    return message.SerializeToString()


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


@dataclass
class Clients:
    channels: list[grpc.aio.Channel]
    organizations: organizations_pb2_grpc.OrganizationServiceAsyncStub
    plans: plans_pb2_grpc.PlanServiceAsyncStub
    events: usage_events_pb2_grpc.EventServiceAsyncStub
    usage: usage_pb2_grpc.UsageServiceAsyncStub
    invoices: invoices_pb2_grpc.InvoiceServiceAsyncStub
    calculations: calculations_pb2_grpc.CalculationServiceAsyncStub
    payments: payments_pb2_grpc.PaymentServiceAsyncStub
    # Each service's parked messages, by service name.
    parked: dict[str, parked_messages_pb2_grpc.ParkedMessageServiceAsyncStub]
    # Callers of RPCs by their full name, made on first use (see unary).
    callers: dict[str, grpc.aio.UnaryUnaryMultiCallable[Message, Message]] = field(default_factory=dict)

    @classmethod
    def connect(cls, settings: Settings) -> Clients:
        catalog, metering, invoicing, payments = (
            open_channel(address, settings.call_timeout)
            for address in (settings.catalog, settings.metering, settings.invoicing, settings.payments)
        )
        return cls(
            channels=[catalog, metering, invoicing, payments],
            organizations=organizations_pb2_grpc.OrganizationServiceStub(catalog),
            plans=plans_pb2_grpc.PlanServiceStub(catalog),
            events=usage_events_pb2_grpc.EventServiceStub(metering),
            usage=usage_pb2_grpc.UsageServiceStub(metering),
            invoices=invoices_pb2_grpc.InvoiceServiceStub(invoicing),
            calculations=calculations_pb2_grpc.CalculationServiceStub(invoicing),
            payments=payments_pb2_grpc.PaymentServiceStub(payments),
            parked={
                name: parked_messages_pb2_grpc.ParkedMessageServiceStub(channel)
                for name, channel in zip(PARKING, (catalog, invoicing, payments), strict=True)
            },
        )

    def unary(self, method: MethodDescriptor) -> grpc.aio.UnaryUnaryMultiCallable[Message, Message]:
        """A caller of any RPC of the four services, by its descriptor."""
        found = self.callers.get(method.full_name)
        if found is None:
            package = method.containing_service.file.package
            channel = self.channels[SERVICES.index(package.split(".")[1])]
            found = self.callers[method.full_name] = channel.unary_unary(
                f"/{method.containing_service.full_name}/{method.name}",
                request_serializer=serialized,
                response_deserializer=message_class(method.output_type).FromString,
            )
        return found

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
