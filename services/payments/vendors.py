"""The revenue-analytics tools bxb syncs to, by provider name, made once per
process from where their APIs are (a test fake's address in tests)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common import peers
from services.payments.baremetrics import Baremetrics
from services.payments.chartmogul import ChartMogulVendor
from services.payments.profitwell import ProfitWell
from services.payments.sinks import Vendor


@dataclass(frozen=True)
class VendorSettings:
    chartmogul_api_base: str = "https://api.chartmogul.com"
    baremetrics_api_base: str = "https://api.baremetrics.com"
    profitwell_api_base: str = "https://api.profitwell.com"
    timeout: float = 10.0  # seconds, each request to a tool


def vendors(settings: VendorSettings, catalog: peers.Catalog) -> dict[str, Vendor]:
    """Every tool, by the provider name integrations are connected under;
    `catalog` is the process's catalog client: ChartMogul reads there the plan
    version an invoice's subscription pins (an invoice names only the plan code)."""
    tools: list[Vendor] = [
        ChartMogulVendor(settings, catalog),
        Baremetrics(settings.baremetrics_api_base, settings.timeout),
        ProfitWell(settings.profitwell_api_base, settings.timeout),
    ]
    return {tool.name: tool for tool in tools}
