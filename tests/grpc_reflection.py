"""A gRPC server reflection v1 client (grpc.reflection.v1.ServerReflection),
as grpcurl and Postman use it: what a server lists and how it describes a
symbol. grpcio-reflection has v1alpha's messages only; v1's are the same on
the wire, so they are used under v1's method path."""

from __future__ import annotations

import importlib
import pkgutil

from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from services.common import channels

METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


async def ask(address: str, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
    async with channels.open_channel(address) as channel:  # mutual TLS when BXB_TLS_DIR is set
        call = channel.stream_stream(
            METHOD,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        async for response in call(iter([request])):
            return response
    raise AssertionError("no reflection response")


async def list_services(address: str) -> list[str]:
    response = await ask(address, reflection_pb2.ServerReflectionRequest(list_services=""))
    return sorted(service.name for service in response.list_services_response.service)


async def describe(address: str, symbol: str) -> descriptor_pb2.FileDescriptorProto:
    """The file defining `symbol` (a service or message's full name)."""
    response = await ask(address, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    assert response.HasField("file_descriptor_response"), response.error_response
    return descriptor_pb2.FileDescriptorProto.FromString(response.file_descriptor_response.file_descriptor_proto[0])


def package_services(name: str) -> list[str]:
    """Every service the protos of bxb.<name>.v1 define."""
    package = importlib.import_module(f"bxb.{name}.v1")
    modules = [importlib.import_module(f"{package.__name__}.{m.name}") for m in pkgutil.iter_modules(package.__path__)]
    return [s.full_name for m in modules if m.__name__.endswith("_pb2") for s in m.DESCRIPTOR.services_by_name.values()]
