"""BillableMetricService: weighted sums, value-fed metrics, updates and deletes,
over gRPC against the real catalog, each test in a fresh organization."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from bxb.catalog.v1 import billable_metrics_pb2 as pb
from bxb.catalog.v1 import billable_metrics_pb2_grpc, organizations_pb2, organizations_pb2_grpc, plans_pb2_grpc
from bxb.catalog.v1 import plans_pb2 as plans_pb
from services.common.errors import error_info
from services.common.tenancy import metadata
from tests.conftest import Stack
from tests.service.test_catalog_metrics import assert_invalid

SUM, COUNT, WEIGHTED = pb.AGGREGATION_TYPE_SUM, pb.AGGREGATION_TYPE_COUNT, pb.AGGREGATION_TYPE_WEIGHTED_SUM
INTEGER, DECIMAL = pb.VALUE_TYPE_INTEGER, pb.VALUE_TYPE_DECIMAL


class Catalog:
    def __init__(self, channel: grpc.aio.Channel, org: str):
        self.metrics = billable_metrics_pb2_grpc.BillableMetricServiceStub(channel)
        self.plans = plans_pb2_grpc.PlanServiceStub(channel)
        self.md = metadata(org)

    async def create(self, **fields) -> pb.BillableMetric:
        request = pb.CreateBillableMetricRequest(billable_metric=pb.BillableMetric(**fields))
        return await self.metrics.CreateBillableMetric(request, metadata=self.md)

    async def get(self, code: str) -> pb.BillableMetric:
        return await self.metrics.GetBillableMetric(pb.GetBillableMetricRequest(code=code), metadata=self.md)

    async def update(self, code: str, paths: list[str], **fields) -> pb.BillableMetric:
        request = pb.UpdateBillableMetricRequest(
            billable_metric=pb.BillableMetric(code=code, **fields), update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        return await self.metrics.UpdateBillableMetric(request, metadata=self.md)

    async def delete(self, code: str) -> None:
        await self.metrics.DeleteBillableMetric(pb.DeleteBillableMetricRequest(code=code), metadata=self.md)

    async def plan(self, code: str, *metric_codes: str) -> plans_pb.Plan:
        charges = [
            plans_pb.Charge(
                billable_metric_code=metric,
                charge_model=plans_pb.CHARGE_MODEL_STANDARD,
                properties=plans_pb.ChargeProperties(amount="1"),
            )
            for metric in metric_codes
        ]
        plan = plans_pb.Plan(code=code, interval=plans_pb.PLAN_INTERVAL_MONTHLY, charges=charges)
        return await self.plans.CreatePlan(plans_pb.CreatePlanRequest(plan=plan), metadata=self.md)


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def assert_in_use(error: grpc.aio.AioRpcError, field: str) -> None:
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    info = error_info(error)
    assert (info.reason, info.metadata["field"]) == ("METRIC_IN_USE", field)


async def new_catalog(channel: grpc.aio.Channel) -> Catalog:
    orgs = organizations_pb2_grpc.OrganizationServiceStub(channel)
    org = await orgs.CreateOrganization(organizations_pb2.CreateOrganizationRequest(name="Metric changes"))
    return Catalog(channel, org.id)


@pytest.fixture
async def catalog(stack: Stack):
    async with stack.channel("catalog") as channel:
        yield await new_catalog(channel)


# Creation rules


async def test_a_weighted_sum_reads_a_property(catalog: Catalog):
    created = await catalog.create(code="seats", aggregation_type=WEIGHTED, field_name="seats")
    assert (created.aggregation_type, created.field_name, created.value_type) == (WEIGHTED, "seats", 0)
    assert await catalog.get("seats") == created


@pytest.mark.parametrize("value_type", [INTEGER, DECIMAL])
async def test_a_value_type_feeds_the_metric_from_the_event_value(catalog: Catalog, value_type):
    created = await catalog.create(code="storage", aggregation_type=WEIGHTED, value_type=value_type)
    assert (created.field_name, created.value_type) == ("", value_type)
    assert (await catalog.get("storage")).value_type == value_type


async def test_a_weighted_sum_needs_a_field_name_or_a_value_type(catalog: Catalog):
    error = await refused(catalog.create(code="seats", aggregation_type=WEIGHTED))
    assert_invalid(error, "field_name")
    assert error.details() == "field_name is required for aggregation_type weighted_sum"


async def test_a_field_name_next_to_a_value_type_is_refused(catalog: Catalog):
    error = await refused(catalog.create(code="calls", aggregation_type=SUM, value_type=INTEGER, field_name="n"))
    assert_invalid(error, "field_name")
    assert "value_type" in error.details()
    assert (await refused(catalog.get("calls"))).code() == grpc.StatusCode.NOT_FOUND


async def test_an_unknown_value_type_is_refused(catalog: Catalog):
    error = await refused(catalog.create(code="calls", aggregation_type=SUM, value_type=7))
    assert_invalid(error, "billable_metric.value_type")  # the proto's rule (enum.defined_only)


async def test_count_keeps_neither_a_field_name_nor_a_value_type(catalog: Catalog):
    created = await catalog.create(code="calls", aggregation_type=COUNT, value_type=DECIMAL)
    assert (created.field_name, created.value_type) == ("", pb.VALUE_TYPE_UNSPECIFIED)


# Updates


async def test_name_and_description_change_alone(catalog: Catalog):
    before = await catalog.create(code="tokens", name="Tokens", aggregation_type=SUM, field_name="tokens")
    after = await catalog.update(
        "tokens", ["name", "description"], name="LLM tokens", description="in and out", aggregation_type=COUNT
    )
    assert (after.name, after.description) == ("LLM tokens", "in and out")
    assert (after.id, after.aggregation_type, after.field_name) == (before.id, SUM, "tokens")
    assert await catalog.get("tokens") == after


async def test_an_emptied_name_falls_back_to_the_code(catalog: Catalog):
    await catalog.create(code="tokens", name="Tokens", aggregation_type=COUNT)
    assert (await catalog.update("tokens", ["name"], name=" ")).name == "tokens"


async def test_an_unused_metric_switches_from_a_property_to_the_event_value(catalog: Catalog):
    await catalog.create(code="tokens", aggregation_type=SUM, field_name="tokens")
    after = await catalog.update(
        "tokens", ["aggregation_type", "field_name", "value_type"], aggregation_type=WEIGHTED, value_type=DECIMAL
    )
    assert (after.aggregation_type, after.field_name, after.value_type) == (WEIGHTED, "", DECIMAL)
    assert await catalog.get("tokens") == after


async def test_an_update_is_checked_against_the_fields_it_keeps(catalog: Catalog):
    before = await catalog.create(code="tokens", aggregation_type=SUM, field_name="tokens")
    error = await refused(catalog.update("tokens", ["value_type"], value_type=INTEGER))
    assert_invalid(error, "field_name")
    assert await catalog.get("tokens") == before


@pytest.mark.parametrize(("paths", "detail"), [([], "must name fields"), (["name", "code"], "'code' cannot")])
async def test_the_update_mask_names_updatable_fields(catalog: Catalog, paths, detail):
    before = await catalog.create(code="tokens", aggregation_type=COUNT)
    error = await refused(catalog.update("tokens", paths, name="x"))
    assert_invalid(error, "update_mask")
    assert detail in error.details()
    assert await catalog.get("tokens") == before


async def test_updating_an_unknown_metric_is_not_found(catalog: Catalog):
    error = await refused(catalog.update("nope", ["name"], name="x"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(error).metadata["field"] == "code"


@pytest.mark.parametrize(
    ("paths", "fields", "field"),
    [
        (["aggregation_type"], {"aggregation_type": pb.AGGREGATION_TYPE_MAX}, "aggregation_type"),
        (["field_name"], {"field_name": "other"}, "field_name"),
        (["field_name", "value_type"], {"value_type": INTEGER}, "field_name"),
    ],
)
async def test_usage_fields_of_a_metric_in_use_are_frozen(catalog: Catalog, paths, fields, field):
    before = await catalog.create(code="tokens", aggregation_type=SUM, field_name="tokens")
    await catalog.plan("pro", "tokens")
    error = await refused(catalog.update("tokens", paths, **fields))
    assert_in_use(error, field)
    assert "'pro'" in error.details()
    assert await catalog.get("tokens") == before


async def test_a_value_type_change_of_a_metric_in_use_names_value_type(catalog: Catalog):
    before = await catalog.create(code="tokens", aggregation_type=SUM, value_type=INTEGER)
    await catalog.plan("pro", "tokens")
    assert_in_use(await refused(catalog.update("tokens", ["value_type"], value_type=DECIMAL)), "value_type")
    assert await catalog.get("tokens") == before


async def test_a_metric_in_use_keeps_renaming_and_unchanged_usage_fields(catalog: Catalog):
    await catalog.create(code="tokens", aggregation_type=SUM, field_name="tokens")
    await catalog.plan("pro", "tokens")
    after = await catalog.update(
        "tokens", ["name", "aggregation_type", "field_name"], name="Tokens", aggregation_type=SUM, field_name=" tokens "
    )
    assert (after.name, after.aggregation_type, after.field_name) == ("Tokens", SUM, "tokens")


async def test_an_older_plan_version_still_holds_the_metric(catalog: Catalog):
    await catalog.create(code="tokens", aggregation_type=SUM, field_name="tokens")
    await catalog.create(code="other", aggregation_type=COUNT)
    await catalog.plan("pro", "other", "tokens")
    newer = await catalog.plan("pro", "other")
    assert newer.version == 2
    assert_in_use(await refused(catalog.update("tokens", ["field_name"], field_name="t")), "field_name")
    assert_in_use(await refused(catalog.delete("tokens")), "code")


async def test_plans_of_another_organization_do_not_hold_a_metric(stack: Stack, catalog: Catalog):
    async with stack.channel("catalog") as channel:
        other = await new_catalog(channel)
        await other.create(code="tokens", aggregation_type=SUM, field_name="tokens")
        await other.plan("pro", "tokens")
    await catalog.create(code="tokens", aggregation_type=SUM, field_name="tokens")
    assert (await catalog.update("tokens", ["field_name"], field_name="t")).field_name == "t"
    await catalog.delete("tokens")


# Deletes


async def test_delete_then_recreate_with_the_same_code(catalog: Catalog):
    first = await catalog.create(code="tokens", aggregation_type=SUM, field_name="tokens")
    await catalog.delete("tokens")
    assert (await refused(catalog.get("tokens"))).code() == grpc.StatusCode.NOT_FOUND
    again = await catalog.create(code="tokens", aggregation_type=COUNT)
    assert again.id != first.id
    assert (again.aggregation_type, again.field_name) == (COUNT, "")


async def test_deleting_an_unknown_metric_is_not_found(catalog: Catalog):
    error = await refused(catalog.delete("nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(error).metadata["field"] == "code"


async def test_a_metric_in_use_is_not_deleted(catalog: Catalog):
    before = await catalog.create(code="tokens", aggregation_type=SUM, field_name="tokens")
    await catalog.plan("pro", "tokens")
    error = await refused(catalog.delete("tokens"))
    assert_in_use(error, "code")
    assert await catalog.get("tokens") == before
