"""PlanService.ListPlanVersions and GET /v1/plans/{code}/versions: every
version of one code, oldest first, paged; an unknown code is NOT_FOUND."""

from __future__ import annotations

import grpc
import pytest

from bxb.catalog.v1 import organizations_pb2, organizations_pb2_grpc, plans_pb2_grpc
from bxb.catalog.v1 import plans_pb2 as pb
from services.common.tenancy import metadata
from tests.conftest import Stack, Tenant, unique


@pytest.fixture
async def plans(stack: Stack):
    async with stack.channel("catalog") as channel:
        orgs = organizations_pb2_grpc.OrganizationServiceStub(channel)
        org = await orgs.CreateOrganization(organizations_pb2.CreateOrganizationRequest(name="Versions"))
        yield plans_pb2_grpc.PlanServiceStub(channel), metadata(org.id)


async def create_versions(stub, md, code: str, amounts: list[int]) -> list[pb.Plan]:
    created = []
    for amount in amounts:
        plan = pb.Plan(code=code, interval=pb.PLAN_INTERVAL_MONTHLY, amount_cents=amount)
        created.append(await stub.CreatePlan(pb.CreatePlanRequest(plan=plan), metadata=md))
    return created


async def test_versions_of_a_code_are_listed_oldest_first(plans):
    stub, md = plans
    code = unique("plan")
    created = await create_versions(stub, md, code, [100, 200, 300])
    await create_versions(stub, md, unique("other"), [999])
    reply = await stub.ListPlanVersions(pb.ListPlanVersionsRequest(code=code), metadata=md)
    assert [(p.version, p.amount_cents, p.id) for p in reply.plans] == [
        (p.version, p.amount_cents, p.id) for p in created
    ]
    assert [p.version for p in reply.plans] == [1, 2, 3]
    assert reply.next_page_token == ""


async def test_versions_are_paged(plans):
    stub, md = plans
    code = unique("plan")
    await create_versions(stub, md, code, [1, 2, 3])
    first = await stub.ListPlanVersions(pb.ListPlanVersionsRequest(code=code, page_size=2), metadata=md)
    assert [p.version for p in first.plans] == [1, 2]
    second = await stub.ListPlanVersions(
        pb.ListPlanVersionsRequest(code=code, page_size=2, page_token=first.next_page_token), metadata=md
    )
    assert [p.version for p in second.plans] == [3]
    assert second.next_page_token == ""
    with pytest.raises(grpc.aio.AioRpcError) as forged:  # a page no listing led to
        await stub.ListPlanVersions(pb.ListPlanVersionsRequest(code=code, page_token="b3Bmc2V0OjEw"), metadata=md)
    assert forged.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_versions_of_an_unknown_code_are_not_found(plans):
    stub, md = plans
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListPlanVersions(pb.ListPlanVersionsRequest(code=unique("missing")), metadata=md)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_versions_of_another_organizations_plan_are_not_found(plans, stack: Stack):
    stub, md = plans
    code = unique("plan")
    await create_versions(stub, md, code, [1])
    async with stack.channel("catalog") as channel:
        orgs = organizations_pb2_grpc.OrganizationServiceStub(channel)
        other = await orgs.CreateOrganization(organizations_pb2.CreateOrganizationRequest(name="Other"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListPlanVersions(pb.ListPlanVersionsRequest(code=code), metadata=metadata(other.id))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_gateway_lists_versions_in_bxb_shape(tenant: Tenant):
    code = unique("plan")
    for amount in (100, 250):
        body = {"code": code, "interval": "monthly", "amount_cents": amount}
        assert (await tenant.http.post("/v1/plans", json=body)).status_code == 201
    response = await tenant.http.get(f"/v1/plans/{code}/versions", params={"page_size": 1})
    assert response.status_code == 200, response.text
    page = response.json()
    assert [(p["code"], p["version"], p["amount_cents"]) for p in page["plans"]] == [(code, 1, 100)]
    rest = (await tenant.http.get(f"/v1/plans/{code}/versions", params={"page_token": page["next_page_token"]})).json()
    assert [(p["version"], p["amount_cents"]) for p in rest["plans"]] == [(2, 250)]
    assert rest["next_page_token"] == ""
    assert rest["plans"][0] == (await tenant.http.get(f"/v1/plans/{code}")).json()


async def test_gateway_versions_of_an_unknown_code_are_404(tenant: Tenant):
    response = await tenant.http.get(f"/v1/plans/{unique('missing')}/versions")
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "code"
