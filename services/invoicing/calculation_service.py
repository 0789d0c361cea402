"""CalculationService: pricing on demand, nothing issued. Stored
calculations (calculations.Pricing), and the open period's preview and
current usage (invoices.Drafting)."""

from __future__ import annotations

from bxb.invoicing.v1 import calculations_pb2 as pb
from bxb.invoicing.v1 import calculations_pb2_grpc
from services.common import tenancy
from services.common.grpc_server import Context
from services.invoicing.calculations import Pricing
from services.invoicing.invoices import Drafting


class CalculationServicer(calculations_pb2_grpc.CalculationServiceServicer):
    """CalculationService: stored calculations, previews and current usage."""

    def __init__(self, pricing: Pricing, drafting: Drafting):
        self.pricing = pricing
        self.drafting = drafting

    async def CreateCalculation(self, request: pb.CreateCalculationRequest, context: Context) -> pb.Calculation:
        return await self.pricing.calculate(tenancy.organization_id(), request)

    async def GetCalculation(self, request: pb.GetCalculationRequest, context: Context) -> pb.Calculation:
        return await self.pricing.get(tenancy.organization_id(), request.id)

    async def PreviewInvoice(self, request: pb.PreviewInvoiceRequest, context: Context) -> pb.InvoicePreview:
        return await self.drafting.preview(tenancy.organization_id(), request)

    async def GetCurrentUsage(self, request: pb.GetCurrentUsageRequest, context: Context) -> pb.GetCurrentUsageResponse:
        return await self.drafting.current_usage(tenancy.organization_id(), request)
