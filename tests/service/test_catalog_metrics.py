"""BillableMetricService over gRPC, each test in a fresh organization."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bxb.catalog.v1 import billable_metrics_pb2 as pb
from bxb.catalog.v1 import billable_metrics_pb2_grpc, organizations_pb2, organizations_pb2_grpc
from services.common.errors import error_info
from services.common.tenancy import metadata
from tests.conftest import Stack


class Metrics:
    def __init__(self, channel: grpc.aio.Channel, org: str):
        self.stub = billable_metrics_pb2_grpc.BillableMetricServiceStub(channel)
        self.md = metadata(org)

    async def create(self, **fields) -> pb.BillableMetric:
        request = pb.CreateBillableMetricRequest(billable_metric=pb.BillableMetric(**fields))
        return await self.stub.CreateBillableMetric(request, metadata=self.md)

    async def get(self, code: str) -> pb.BillableMetric:
        return await self.stub.GetBillableMetric(pb.GetBillableMetricRequest(code=code), metadata=self.md)

    async def list(self, **fields) -> pb.ListBillableMetricsResponse:
        return await self.stub.ListBillableMetrics(pb.ListBillableMetricsRequest(**fields), metadata=self.md)

    async def rejected(self, **fields) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await self.create(**fields)
        return raised.value


@pytest.fixture
async def metrics(stack: Stack):
    async with stack.channel("catalog") as channel:
        orgs = organizations_pb2_grpc.OrganizationServiceStub(channel)
        org = await orgs.CreateOrganization(organizations_pb2.CreateOrganizationRequest(name="Metrics"))
        yield Metrics(channel, org.id)


def violation(error: grpc.aio.AioRpcError) -> error_details_pb2.BadRequest.FieldViolation:
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            [only] = bad.field_violations
            return only
    raise AssertionError("no BadRequest detail")


def assert_invalid(error: grpc.aio.AioRpcError, field: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    info = error_info(error)
    assert (info.domain, info.metadata["field"]) == ("bxb.dev", field)
    assert info.reason in ("INVALID_ARGUMENT", "INVALID_VALUE", "MISSING_FIELD")  # the catalog's, or a rule's
    assert (violation(error).field, violation(error).description) == (field, error.details())


async def test_create_then_get_a_sum_metric(metrics: Metrics):
    created = await metrics.create(
        code="api_requests", name="API Requests", description="Tokens used", aggregation_type=2, field_name=" tokens "
    )
    assert created.id.startswith("bm_")
    assert (created.code, created.name, created.description) == ("api_requests", "API Requests", "Tokens used")
    assert created.aggregation_type == pb.AGGREGATION_TYPE_SUM
    assert created.field_name == "tokens"
    assert created.create_time.seconds > 0
    assert await metrics.get("api_requests") == created


async def test_name_defaults_to_the_code(metrics: Metrics):
    created = await metrics.create(code="calls", name="  ", aggregation_type=pb.AGGREGATION_TYPE_COUNT)
    assert created.name == "calls"


async def test_count_ignores_a_field_name(metrics: Metrics):
    created = await metrics.create(code="calls", aggregation_type=pb.AGGREGATION_TYPE_COUNT, field_name="tokens")
    assert created.field_name == ""
    assert (await metrics.get("calls")).field_name == ""


@pytest.mark.parametrize(
    "aggregation",
    [pb.AGGREGATION_TYPE_SUM, pb.AGGREGATION_TYPE_MAX, pb.AGGREGATION_TYPE_UNIQUE_COUNT, pb.AGGREGATION_TYPE_LATEST],
)
async def test_aggregations_over_a_property_need_a_field_name(metrics: Metrics, aggregation):
    error = await metrics.rejected(code="m", aggregation_type=aggregation, field_name="   ")
    assert_invalid(error, "field_name")
    name = pb.AggregationType.Name(aggregation).removeprefix("AGGREGATION_TYPE_").lower()
    assert error.details() == f"field_name is required for aggregation_type {name}"
    created = await metrics.create(code="m", aggregation_type=aggregation, field_name="value")
    assert (created.aggregation_type, created.field_name) == (aggregation, "value")


# Unset, the catalog refuses it; a value no AggregationType has, the proto's rule (enum.defined_only).
@pytest.mark.parametrize(
    ("aggregation", "field"),
    [(pb.AGGREGATION_TYPE_UNSPECIFIED, "aggregation_type"), (42, "billable_metric.aggregation_type")],
)
async def test_aggregation_type_is_required(metrics: Metrics, aggregation, field):
    error = await metrics.rejected(code="m", aggregation_type=aggregation, field_name="x")
    assert_invalid(error, field)


# Required and at most 100 characters: the proto's rules; the characters: the catalog's.
@pytest.mark.parametrize(
    ("code", "field", "message"),
    [
        ("", "billable_metric.code", "billable_metric.code is required"),
        ("has space", "code", "code must be 1-100 letters, digits"),
        ("_leading", "code", "code must be 1-100 letters, digits"),
        ("x" * 101, "billable_metric.code", "billable_metric.code must be at most 100 characters"),
    ],
)
async def test_bad_codes_are_rejected(metrics: Metrics, code, field, message):
    error = await metrics.rejected(code=code, aggregation_type=pb.AGGREGATION_TYPE_COUNT)
    assert_invalid(error, field)
    assert error.details().startswith(message)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "n" * 201}, "billable_metric.name"),
        ({"description": "d" * 2001}, "billable_metric.description"),
        ({"aggregation_type": pb.AGGREGATION_TYPE_SUM, "field_name": "f" * 201}, "billable_metric.field_name"),
    ],
)
async def test_overlong_texts_are_rejected(metrics: Metrics, fields, field):
    error = await metrics.rejected(**{"code": "m", "aggregation_type": pb.AGGREGATION_TYPE_COUNT, **fields})
    assert_invalid(error, field)


async def test_a_duplicate_code_is_already_exists_and_keeps_the_first(metrics: Metrics):
    first = await metrics.create(code="dup", aggregation_type=pb.AGGREGATION_TYPE_COUNT)
    error = await metrics.rejected(code="dup", aggregation_type=pb.AGGREGATION_TYPE_SUM, field_name="x")
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_info(error)
    assert (info.reason, info.metadata["field"]) == ("ALREADY_EXISTS", "code")
    assert await metrics.get("dup") == first


async def test_concurrent_creates_of_one_code_store_exactly_one(metrics: Metrics):
    results = await asyncio.gather(
        *(metrics.create(code="race", name=f"n{i}", aggregation_type=pb.AGGREGATION_TYPE_COUNT) for i in range(8)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, pb.BillableMetric)]
    losers = [r for r in results if not isinstance(r, pb.BillableMetric)]
    assert len(winners) == 1
    assert {e.code() for e in losers} <= {grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED}
    assert len(losers) == 7
    assert [m.id for m in (await metrics.list()).billable_metrics] == [winners[0].id]


async def test_get_unknown_code_is_not_found(metrics: Metrics):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await metrics.get("nope")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).metadata["field"] == "code"


async def test_metrics_are_private_to_their_organization(stack: Stack, metrics: Metrics):
    await metrics.create(code="private", aggregation_type=pb.AGGREGATION_TYPE_COUNT)
    async with stack.channel("catalog") as channel:
        orgs = organizations_pb2_grpc.OrganizationServiceStub(channel)
        other = Metrics(
            channel, (await orgs.CreateOrganization(organizations_pb2.CreateOrganizationRequest(name="o"))).id
        )
        assert list((await other.list()).billable_metrics) == []
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await other.get("private")
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        await other.create(code="private", aggregation_type=pb.AGGREGATION_TYPE_COUNT)  # codes are per organization


async def test_list_pages_through_metrics_oldest_first(metrics: Metrics):
    codes = [f"m{i}" for i in range(5)]
    for code in codes:
        await metrics.create(code=code, aggregation_type=pb.AGGREGATION_TYPE_COUNT)
    seen, token, pages = [], "", 0
    while True:
        page = await metrics.list(page_size=2, page_token=token)
        assert len(page.billable_metrics) <= 2
        seen += [m.code for m in page.billable_metrics]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert (seen, pages) == (codes, 3)
    everything = await metrics.list()
    assert [m.code for m in everything.billable_metrics] == codes
    assert everything.next_page_token == ""


@pytest.mark.parametrize(("fields", "field"), [({"page_size": -1}, "page_size"), ({"page_token": "%%%"}, "page_token")])
async def test_list_rejects_bad_paging(metrics: Metrics, fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await metrics.list(**fields)
    assert_invalid(raised.value, field)


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "API\x00Requests"},  # a text column
        {"filters": [pb.PropertyValues(key="region", values=["us\x00"])]},  # a JSONB one
    ],
)
async def test_a_nul_character_postgresql_cannot_store_is_invalid_argument_and_stores_nothing(
    metrics: Metrics, fields: dict
):
    error = await metrics.rejected(code="api_requests", aggregation_type=1, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error_info(error).reason == "UNSTORABLE_CHARACTER"
    assert "NUL" in error.details()
    assert list((await metrics.list()).billable_metrics) == []
