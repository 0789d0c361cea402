"""Exact usage and stored price calculations (ComputeUsage, CalculatePrice,
GetCalculation of InvoiceService): the same fees an invoice bills."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker

from bxb.invoicing.v1 import invoices_pb2 as pb
from services.invoicing.fees import FeeCalculator
from services.invoicing.projection import SubscriptionProjection


class Pricing:
    def __init__(self, sessions: async_sessionmaker, fees: FeeCalculator, projection: SubscriptionProjection):
        self.sessions = sessions
        self.fees = fees
        self.projection = projection

    async def compute_usage(self, org: str, request: pb.ComputeUsageRequest) -> pb.ComputeUsageResponse:
        raise NotImplementedError  # being written

    async def calculate(self, org: str, request: pb.CalculatePriceRequest) -> pb.Calculation:
        raise NotImplementedError  # being written

    async def get(self, org: str, calculation_id: str) -> pb.Calculation:
        raise NotImplementedError  # being written
