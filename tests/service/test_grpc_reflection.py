"""gRPC server reflection v1 on each of the four services: it lists every
service the process serves (each service of its proto package, parked
messages, health and reflection) and describes each of them, so grpcurl,
Postman or buf curl can call bxb without the protos."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from services.common import trust
from services.common.grpc_server import REFLECTION_V1
from tests import grpc_reflection
from tests.conftest import Stack, Tenant

BUF = Path(sys.executable).parent / "buf"

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


async def buf_curl(*args: str) -> str:
    """buf curl, schema from reflection v1 only (--reflect-protocol grpc-v1),
    as one of the deployment's processes (the service token)."""
    token = "{}: {}".format(*trust.service_metadata()[0])
    process = await asyncio.create_subprocess_exec(
        BUF, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", "grpc-v1",
        "-H", token, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_buf_curl_calls_a_service_knowing_it_only_through_reflection_v1(stack: Stack, tenant: Tenant):
    url = f"http://{stack.catalog}"
    assert "bxb.catalog.v1.OrganizationService" in (await buf_curl("--list-services", url)).split()
    auth = json.loads(
        await buf_curl(
            "-d", json.dumps({"secret": tenant.key}), f"{url}/bxb.catalog.v1.OrganizationService/AuthenticateApiKey"
        )
    )
    assert auth["organizationId"] == tenant.organization_id
    metric = {"billableMetric": {"code": "calls", "name": "Calls", "aggregationType": "AGGREGATION_TYPE_COUNT"}}
    method = f"{url}/bxb.catalog.v1.BillableMetricService/CreateBillableMetric"
    created = json.loads(
        await buf_curl("-H", f"x-bxb-organization: {auth['organizationId']}", "-d", json.dumps(metric), method)
    )
    assert (created["code"], created["aggregationType"]) == ("calls", "AGGREGATION_TYPE_COUNT")
    listed = (await tenant.http.get("/v1/billable_metrics")).json()["billable_metrics"]
    assert [m["code"] for m in listed] == ["calls"]  # made for the key's organization
