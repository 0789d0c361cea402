"""PlanService over gRPC: versioned plans, charge validation, metric snapshots."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bxb.catalog.v1 import billable_metrics_pb2 as metrics_pb
from bxb.catalog.v1 import billable_metrics_pb2_grpc, organizations_pb2, organizations_pb2_grpc, plans_pb2_grpc
from bxb.catalog.v1 import plans_pb2 as pb
from services.catalog.plans import MAX_CHARGES
from services.common.errors import error_info
from services.common.tenancy import metadata
from tests.conftest import Stack

STANDARD = pb.CHARGE_MODEL_STANDARD
GRADUATED = pb.CHARGE_MODEL_GRADUATED
MONTHLY = pb.PLAN_INTERVAL_MONTHLY


class Plans:
    def __init__(self, channel: grpc.aio.Channel, org: str):
        self.stub = plans_pb2_grpc.PlanServiceStub(channel)
        self.metrics = billable_metrics_pb2_grpc.BillableMetricServiceStub(channel)
        self.md = metadata(org)

    async def metric(self, code: str, aggregation=metrics_pb.AGGREGATION_TYPE_SUM, field_name="units"):
        spec = metrics_pb.BillableMetric(code=code, aggregation_type=aggregation, field_name=field_name)
        request = metrics_pb.CreateBillableMetricRequest(billable_metric=spec)
        return await self.metrics.CreateBillableMetric(request, metadata=self.md)

    async def create(self, **fields) -> pb.Plan:
        fields.setdefault("interval", MONTHLY)
        return await self.stub.CreatePlan(pb.CreatePlanRequest(plan=pb.Plan(**fields)), metadata=self.md)

    async def get(self, code: str, version: int = 0) -> pb.Plan:
        return await self.stub.GetPlan(pb.GetPlanRequest(code=code, version=version), metadata=self.md)

    async def list(self, **fields) -> pb.ListPlansResponse:
        return await self.stub.ListPlans(pb.ListPlansRequest(**fields), metadata=self.md)

    async def rejected(self, **fields) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await self.create(**fields)
        assert list((await self.list()).plans) == [], "a rejected plan must store nothing"
        return raised.value


@pytest.fixture
async def plans(stack: Stack):
    async with stack.channel("catalog") as channel:
        orgs = organizations_pb2_grpc.OrganizationServiceStub(channel)
        org = await orgs.CreateOrganization(organizations_pb2.CreateOrganizationRequest(name="Plans"))
        yield Plans(channel, org.id)


def standard(metric: str, amount: str) -> pb.Charge:
    return pb.Charge(billable_metric_code=metric, charge_model=STANDARD, properties=pb.ChargeProperties(amount=amount))


def graduated(metric: str, *ranges: tuple[str, str, str, str]) -> pb.Charge:
    tiers = [pb.GraduatedRange(from_value=f, to_value=t, per_unit_amount=u, flat_amount=x) for f, t, u, x in ranges]
    return pb.Charge(
        billable_metric_code=metric, charge_model=GRADUATED, properties=pb.ChargeProperties(graduated_ranges=tiers)
    )


# The catalog's own reason, or a rule's (services/common/validation.py).
RULES = ("INVALID_ARGUMENT", "INVALID_VALUE", "MISSING_FIELD", "TOO_MANY_ITEMS")


def assert_invalid(error: grpc.aio.AioRpcError, field: str, reason: str = "") -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    info = error_info(error)
    assert info.metadata["field"] == field
    assert info.reason == reason if reason else info.reason in RULES
    [detail] = [d for d in rpc_status.from_call(error).details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    bad = error_details_pb2.BadRequest()
    detail.Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [(field, error.details())]


async def test_create_a_standard_plan_snapshots_its_metric(plans: Plans):
    metric = await plans.metric("api_requests", field_name="tokens")
    plan = await plans.create(
        code="payg",
        name="Pay As You Go",
        description="usage only",
        amount_cents=1500,
        currency="eur",
        charges=[standard("api_requests", "0.00100")],
    )
    assert plan.id.startswith("plan_")
    assert (plan.code, plan.name, plan.description, plan.version) == ("payg", "Pay As You Go", "usage only", 1)
    assert (plan.interval, plan.amount_cents, plan.currency) == (MONTHLY, 1500, "EUR")
    [charge] = plan.charges
    assert charge.id.startswith("ch_")
    assert (charge.billable_metric_code, charge.charge_model) == ("api_requests", STANDARD)
    assert charge.properties == pb.ChargeProperties(amount="0.001")  # canonical, full precision
    assert charge.billable_metric == metric
    assert plan.create_time.seconds > 0
    assert await plans.get("payg") == plan


async def test_currency_defaults_to_usd_and_name_to_the_code(plans: Plans):
    plan = await plans.create(code="free", interval=pb.PLAN_INTERVAL_YEARLY)
    assert (plan.currency, plan.name, plan.amount_cents, list(plan.charges)) == ("USD", "free", 0, [])


async def test_create_a_graduated_plan_with_canonical_ranges(plans: Plans):
    await plans.metric("storage")
    plan = await plans.create(
        code="tiered",
        charges=[
            graduated("storage", ("", "100", "0.0100", "1.50"), ("101", "1000", "0.005", ""), ("1001", "", "0", ""))
        ],
    )
    ranges = plan.charges[0].properties.graduated_ranges
    assert [(r.from_value, r.to_value, r.per_unit_amount, r.flat_amount) for r in ranges] == [
        ("0", "100", "0.01", "1.5"),
        ("101", "1000", "0.005", "0"),
        ("1001", "", "0", "0"),
    ]
    assert plan.charges[0].properties.amount == ""


async def test_same_code_creates_a_new_version_and_get_reads_either(plans: Plans):
    await plans.metric("calls", metrics_pb.AGGREGATION_TYPE_COUNT, "")
    first = await plans.create(code="pro", amount_cents=1000)
    second = await plans.create(code="pro", amount_cents=2000, charges=[standard("calls", "0.5")])
    assert (first.version, second.version) == (1, 2)
    assert first.id != second.id
    assert await plans.get("pro") == second
    assert await plans.get("pro", version=1) == first
    assert await plans.get("pro", version=2) == second
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await plans.get("pro", version=3)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).metadata["field"] == "code"


async def test_get_an_unknown_plan_is_not_found(plans: Plans):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await plans.get("ghost")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_shows_the_latest_version_of_each_code_and_pages(plans: Plans):
    for code in ("c", "a", "b"):
        await plans.create(code=code, amount_cents=1)
    await plans.create(code="a", amount_cents=2)
    await plans.create(code="a", amount_cents=3)
    listed = await plans.list()
    assert [(p.code, p.version, p.amount_cents) for p in listed.plans] == [("a", 3, 3), ("b", 1, 1), ("c", 1, 1)]
    assert listed.next_page_token == ""
    first = await plans.list(page_size=2)
    assert [p.code for p in first.plans] == ["a", "b"]
    rest = await plans.list(page_size=2, page_token=first.next_page_token)
    assert [p.code for p in rest.plans] == ["c"]
    assert rest.next_page_token == ""


async def test_concurrent_versions_of_one_code_never_share_a_number(plans: Plans):
    results = await asyncio.gather(
        *(plans.create(code="race", amount_cents=i) for i in range(8)), return_exceptions=True
    )
    created = [r for r in results if isinstance(r, pb.Plan)]
    aborted = [r for r in results if not isinstance(r, pb.Plan)]
    assert sorted(p.version for p in created) == list(range(1, len(created) + 1))
    assert aborted, "eight concurrent creates of one code should collide"
    for error in aborted:
        assert error.code() == grpc.StatusCode.ABORTED
        info = error_info(error)
        assert (info.reason, info.domain) == ("CONCURRENT_MODIFICATION", "bxb.dev")
        assert "retry" in error.details()
    retried = await plans.create(code="race", amount_cents=99)  # a retry after ABORTED succeeds
    assert retried.version == len(created) + 1
    assert (await plans.get("race")).amount_cents == 99


async def test_an_unknown_metric_names_the_charge(plans: Plans):
    await plans.metric("known")
    error = await plans.rejected(code="p", charges=[standard("known", "1"), standard("unknown", "1")])
    assert_invalid(error, "charges[1].billable_metric_code", reason="UNKNOWN_METRIC")
    assert error.details() == "charges[1].billable_metric_code: no billable metric with code 'unknown'"
    error = await plans.rejected(code="p", charges=[standard("unknown", "1")])
    assert_invalid(error, "charges[0].billable_metric_code", reason="UNKNOWN_METRIC")


async def test_a_charge_without_a_metric_code_is_required(plans: Plans):
    error = await plans.rejected(code="p", charges=[standard("", "1")])
    assert_invalid(error, "plan.charges[0].billable_metric_code", "MISSING_FIELD")  # the proto's rule
    assert error.details() == "plan.charges[0].billable_metric_code is required"


@pytest.mark.parametrize(
    ("interval", "reason"), [(pb.PLAN_INTERVAL_UNSPECIFIED, "MISSING_FIELD"), (17, "INVALID_VALUE")]
)
async def test_interval_is_required(plans: Plans, interval, reason):
    assert_invalid(await plans.rejected(code="p", interval=interval), "plan.interval", reason)


async def test_amount_cents_must_not_be_negative(plans: Plans):
    assert_invalid(await plans.rejected(code="p", amount_cents=-1), "amount_cents")


async def test_currency_must_be_iso_4217(plans: Plans):
    error = await plans.rejected(code="p", currency="XYZ")
    assert_invalid(error, "currency")
    assert error.details() == "currency 'XYZ' is not an ISO 4217 currency code"


@pytest.mark.parametrize(
    ("code", "field", "reason"), [("", "plan.code", "MISSING_FIELD"), ("bad code", "code", "INVALID_ARGUMENT")]
)
async def test_code_is_validated(plans: Plans, code, field, reason):
    assert_invalid(await plans.rejected(code=code), field, reason)


@pytest.mark.parametrize(
    ("fields", "field"), [({"name": "n" * 201}, "plan.name"), ({"description": "d" * 2001}, "plan.description")]
)
async def test_overlong_texts_are_rejected(plans: Plans, fields, field):
    assert_invalid(await plans.rejected(code="p", **fields), field, "INVALID_VALUE")


async def test_a_plan_has_at_most_max_charges(plans: Plans):
    await plans.metric("m")
    error = await plans.rejected(code="p", charges=[standard("m", "1")] * (MAX_CHARGES + 1))
    assert_invalid(error, "plan.charges", "TOO_MANY_ITEMS")
    plan = await plans.create(code="p", charges=[standard("m", "1")] * MAX_CHARGES)
    assert len(plan.charges) == MAX_CHARGES
    assert len({c.id for c in plan.charges}) == MAX_CHARGES


@pytest.mark.parametrize(
    ("charge", "field"),
    [
        (pb.Charge(billable_metric_code="m"), "plan.charges[0].charge_model"),
        (standard("m", ""), "charges[0].properties.amount"),
        (standard("m", "abc"), "charges[0].properties.amount"),
        (standard("m", "-1"), "charges[0].properties.amount"),
        (standard("m", "NaN"), "charges[0].properties.amount"),
        (
            pb.Charge(
                billable_metric_code="m",
                charge_model=STANDARD,
                properties=pb.ChargeProperties(amount="1", graduated_ranges=[pb.GraduatedRange()]),
            ),
            "charges[0].properties.graduated_ranges",
        ),
        (
            pb.Charge(billable_metric_code="m", charge_model=GRADUATED, properties=pb.ChargeProperties(amount="1")),
            "charges[0].properties.amount",
        ),
        (graduated("m"), "charges[0].properties.graduated_ranges"),
        (graduated("m", ("1", "", "1", "")), "charges[0].properties.graduated_ranges[0].from"),
        (graduated("m", ("0", "10", "1", ""), ("12", "", "1", "")), "charges[0].properties.graduated_ranges[1].from"),
        (graduated("m", ("0", "10", "1", ""), ("10", "", "1", "")), "charges[0].properties.graduated_ranges[1].from"),
        (graduated("m", ("0", "1.5", "1", ""), ("2.5", "", "1", "")), "charges[0].properties.graduated_ranges[0].to"),
        (graduated("m", ("0", "10", "1", "")), "charges[0].properties.graduated_ranges[0].to"),
        (graduated("m", ("0", "", "1", ""), ("1", "", "1", "")), "charges[0].properties.graduated_ranges[0].to"),
        (graduated("m", ("0", "x", "1", ""), ("1", "", "1", "")), "charges[0].properties.graduated_ranges[0].to"),
        (graduated("m", ("x", "", "1", "")), "charges[0].properties.graduated_ranges[0].from"),
        (graduated("m", ("0", "", "-1", "")), "charges[0].properties.graduated_ranges[0].per_unit"),
        (graduated("m", ("0", "", "1", "y")), "charges[0].properties.graduated_ranges[0].flat_amount"),
    ],
)
async def test_charge_properties_are_validated_per_model(plans: Plans, charge, field):
    await plans.metric("m")
    reason = "MISSING_FIELD" if field.startswith("plan.") else "INVALID_ARGUMENT"  # the proto's rule, or the catalog's
    assert_invalid(await plans.rejected(code="p", charges=[charge]), field, reason)


async def test_a_range_ending_below_its_start_is_rejected(plans: Plans):
    await plans.metric("m")
    charge = graduated("m", ("0", "10", "1", ""), ("11", "5", "1", ""), ("6", "", "1", ""))
    error = await plans.rejected(code="p", charges=[charge])
    assert_invalid(error, "charges[0].properties.graduated_ranges[1].to")
    assert error.details() == "charges[0].properties.graduated_ranges[1].to must be a whole number not below from"
