"""Versioned, immutable price plans (PlanService)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bxb.catalog.v1 import plans_pb2 as pb
from bxb.catalog.v1 import plans_pb2_grpc
from services.catalog import charge_rules, metrics, taxes, validation
from services.catalog.models import Plan
from services.common import currencies, pagination, tenancy
from services.common.decimals import check_cents
from services.common.errors import InvalidArgument, NotFound
from services.common.grpc_server import Context
from services.common.ids import new_id
from services.common.timestamps import to_proto

MAX_CHARGES = 100
# What a plan's charges (with the metrics they pin) may weigh: a plan travels
# whole in subscription_created, which must stay far below NATS's 1 MB, and
# in every listing page of plans or subscriptions.
MAX_PLAN_BYTES = 256 * 1024
MAX_THRESHOLDS = 50
# Ten years: a trial is days at the start of a subscription, not a way to make a plan free.
MAX_TRIAL_DAYS = 3650


def usage_thresholds(given: Sequence[pb.UsageThreshold]) -> list[dict[str, Any]]:
    """Progressive billing thresholds: positive, the fixed ones ascending, at most one recurring."""
    fixed = [t.amount_cents for t in given if not t.recurring]
    for index, threshold in enumerate(given):
        field = f"usage_thresholds[{index}].amount_cents"
        check_cents(threshold.amount_cents, field, positive=True)
        validation.text(threshold.display_name, f"usage_thresholds[{index}].display_name")
    if fixed != sorted(set(fixed)):
        raise InvalidArgument("the fixed usage thresholds must be distinct and ascending", field="usage_thresholds")
    if len(given) - len(fixed) > 1:
        raise InvalidArgument("at most one usage threshold is recurring", field="usage_thresholds")
    return [json_format.MessageToDict(t, preserving_proto_field_name=True) for t in given]


def plan_proto(plan: Plan) -> pb.Plan:
    return pb.Plan(
        id=plan.id,
        code=plan.code,
        name=plan.name,
        version=plan.version,
        interval=pb.PlanInterval.Value(plan.interval),
        amount_cents=plan.amount_cents,
        currency=plan.currency,
        charges=[json_format.ParseDict(charge, pb.Charge()) for charge in plan.charges],
        description=plan.description,
        create_time=to_proto(plan.create_time),
        pay_in_advance=plan.pay_in_advance,
        trial_period_days=plan.trial_period_days,
        minimum_commitment_cents=plan.minimum_commitment_cents,
        tax_codes=plan.tax_codes or [],
        usage_thresholds=[json_format.ParseDict(t, pb.UsageThreshold()) for t in plan.usage_thresholds or []],
    )


async def current(session: AsyncSession, org: str, code: str) -> Plan | None:
    query = select(Plan).where(Plan.organization_id == org, Plan.code == code).order_by(Plan.version.desc()).limit(1)
    return (await session.execute(query)).scalar_one_or_none()


async def resolve(session: AsyncSession, org: str, plan_code: str, plan_id: str) -> Plan:
    """The plan to subscribe to: by code, or by a version id or code given as plan_id."""
    if plan_code:
        plan = await current(session, org, plan_code)
        if plan is None:
            raise NotFound(f"plan {plan_code!r} not found", field="plan_code")
        return plan
    if not plan_id:
        raise InvalidArgument("plan_code or plan_id is required", field="plan_code")
    version = await session.get(Plan, plan_id)
    code = version.code if version is not None and version.organization_id == org else plan_id
    plan = await current(session, org, code)
    if plan is None:
        raise NotFound(f"plan {plan_id!r} not found", field="plan_id")
    return plan


class PlanServicer(plans_pb2_grpc.PlanServiceServicer):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self.sessions = sessions

    async def CreatePlan(self, request: pb.CreatePlanRequest, context: Context) -> pb.Plan:
        org = tenancy.organization_id()
        spec = request.plan
        validation.code(spec.code, "code")
        check_cents(spec.amount_cents, "amount_cents")
        check_cents(spec.minimum_commitment_cents, "minimum_commitment_cents")
        currency = currencies.validate(spec.currency or "USD")
        thresholds = usage_thresholds(spec.usage_thresholds)
        async with self.sessions() as session, session.begin():
            charges, weight = [], 0
            for index, charge in enumerate(spec.charges):
                path = f"charges[{index}]"
                # Share-locked: a concurrent delete waits until this plan exists, then sees it in use.
                metric = await metrics.find(session, org, charge.billable_metric_code, lock="share")
                if metric is None:
                    field = f"{path}.billable_metric_code"
                    raise InvalidArgument(
                        f"{field}: no billable metric with code {charge.billable_metric_code!r}",
                        field=field,
                        reason="UNKNOWN_METRIC",
                    )
                snapshot = metrics.metric_proto(metric)
                stored = charge_rules.charge(charge, path, snapshot)
                stored.id = new_id("ch")
                stored.billable_metric_code = metric.code
                stored.billable_metric.CopyFrom(snapshot)
                charges.append(json_format.MessageToDict(stored, preserving_proto_field_name=True))
                weight += stored.ByteSize()
            if weight > MAX_PLAN_BYTES:
                raise InvalidArgument(
                    f"the charges weigh {weight} bytes with the metrics they pin; a plan holds at most {MAX_PLAN_BYTES}",
                    field="charges",
                    reason="TOO_LARGE",
                )
            previous = await session.execute(
                select(func.max(Plan.version)).where(Plan.organization_id == org, Plan.code == spec.code)
            )
            plan = Plan(
                id=new_id("plan"),
                organization_id=org,
                code=spec.code,
                version=(previous.scalar() or 0) + 1,
                name=validation.text(spec.name.strip() or spec.code, "name"),
                description=validation.text(spec.description, "description", 2000),
                interval=pb.PlanInterval.Name(spec.interval),
                amount_cents=spec.amount_cents,
                currency=currency,
                charges=charges,
                pay_in_advance=spec.pay_in_advance,
                trial_period_days=spec.trial_period_days,
                minimum_commitment_cents=spec.minimum_commitment_cents,
                tax_codes=await taxes.check_codes(session, org, spec.tax_codes),
                usage_thresholds=thresholds,
            )
            session.add(plan)
            await session.flush()
            await session.refresh(plan)
            return plan_proto(plan)

    async def GetPlan(self, request: pb.GetPlanRequest, context: Context) -> pb.Plan:
        org = tenancy.organization_id()
        async with self.sessions() as session:
            if request.version:
                query = select(Plan).where(
                    Plan.organization_id == org, Plan.code == request.code, Plan.version == request.version
                )
                plan = (await session.execute(query)).scalar_one_or_none()
            else:
                plan = await current(session, org, request.code)
        if plan is None:
            raise NotFound(f"plan {request.code!r} not found", field="code")
        return plan_proto(plan)

    async def ListPlans(self, request: pb.ListPlansRequest, context: Context) -> pb.ListPlansResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListPlans")
        latest = (
            select(Plan.code, func.max(Plan.version).label("version"))
            .where(Plan.organization_id == org)
            .group_by(Plan.code)
            .subquery()
        )
        query = (
            select(Plan)
            .join(latest, (Plan.code == latest.c.code) & (Plan.version == latest.c.version))
            .where(Plan.organization_id == org)
            .order_by(Plan.code)
            .offset(page.offset)
            .limit(page.size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        plans, token = pagination.answer(page, [plan_proto(p) for p in rows])
        return pb.ListPlansResponse(plans=plans, next_page_token=token)

    async def ListPlanVersions(
        self, request: pb.ListPlanVersionsRequest, context: Context
    ) -> pb.ListPlanVersionsResponse:
        org = tenancy.organization_id()
        page = pagination.page(request, "ListPlanVersions")
        query = (
            select(Plan)
            .where(Plan.organization_id == org, Plan.code == request.code)
            .order_by(Plan.version)
            .offset(page.offset)
            .limit(page.size + 1)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).scalars().all()
            if not rows and await current(session, org, request.code) is None:
                raise NotFound(f"plan {request.code!r} not found", field="code")
        plans, token = pagination.answer(page, [plan_proto(p) for p in rows])
        return pb.ListPlanVersionsResponse(plans=plans, next_page_token=token)
