"""gRPC server reflection v1 on each of the four services: it lists every
service the process serves (each service of its proto package, parked
messages, health and reflection) and describes each of them, so grpcurl,
Postman or buf curl can call bxb without the protos."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from services.common.grpc_server import REFLECTION_V1
from tests import grpc_reflection
from tests.conftest import Stack

PARKED = "bxb.common.v1.ParkedMessageService"


@pytest.mark.parametrize("name", ["catalog", "metering", "invoicing", "payments"])
async def test_reflection_v1_lists_and_describes_every_service(stack: Stack, name: str):
    address = getattr(stack, name)
    listed = await grpc_reflection.list_services(address)
    parked = [PARKED] if name != "metering" else []  # metering parks nothing: its queue has no dead letters
    assert listed == sorted(
        [*grpc_reflection.package_services(name), *parked, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1]
    )
    assert len(grpc_reflection.package_services(name)) >= 1
    for service in listed:
        file = await grpc_reflection.describe(address, service)
        assert service in {f"{file.package}.{s.name}" for s in file.service}, (service, file.name)
    v1 = await grpc_reflection.describe(address, REFLECTION_V1)
    assert (v1.name, v1.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
    assert [m.input_type for m in v1.service[0].method] == [".grpc.reflection.v1.ServerReflectionRequest"]
