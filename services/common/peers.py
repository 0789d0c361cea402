"""One typed client per peer service (catalog, metering, invoicing,
payments): its address, one channel, the default deadline of its calls and
the organization metadata, so no module builds stubs or metadata of its own.

A method per call bxb services make of each other, taking the organization
and the request; its errors are the peer's (grpc.aio.AioRpcError), for the
caller to map to its own. `wait_for_ready` rides out a reconnect within the
deadline instead of failing at once.

The channel is opened on first use: a grpc.aio channel belongs to the event
loop that opens it, and services are built before their serving loop runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Protocol, TypedDict, cast

import grpc

from bxb.catalog.v1 import (
    add_ons_pb2,
    add_ons_pb2_grpc,
    coupons_pb2,
    coupons_pb2_grpc,
    customers_pb2,
    customers_pb2_grpc,
    event_references_pb2,
    event_references_pb2_grpc,
    organizations_pb2,
    organizations_pb2_grpc,
    plans_pb2,
    plans_pb2_grpc,
    subscriptions_pb2,
    subscriptions_pb2_grpc,
    taxes_pb2,
    taxes_pb2_grpc,
)
from bxb.invoicing.v1 import (
    billing_runs_pb2,
    billing_runs_pb2_grpc,
    credit_notes_pb2,
    credit_notes_pb2_grpc,
    invoices_pb2,
    invoices_pb2_grpc,
)
from bxb.metering.v1 import usage_pb2, usage_pb2_grpc
from bxb.payments.v1 import payments_pb2, payments_pb2_grpc
from services.common import tenancy, trust
from services.common.channels import DEFAULT_TIMEOUT, MESSAGE_BYTES, open_channel


class Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


class Listing[Request, Response](Protocol):
    """A peer's list call, as its client below makes it."""

    def __call__(self, org: str, request: Request, *, wait_for_ready: bool = False) -> Awaitable[Response]: ...


async def every[Request, Response: Page, Item](
    listing: Listing[Request, Response],
    request_type: Callable[..., Request],
    items: Callable[[Response], Iterable[Item]],
    org: str,
    scope: dict[str, str],
    page_size: int,
    wait_for_ready: bool = False,
) -> AsyncIterator[Item]:
    """Every item (`items` of each page) of one of a peer's listings for
    `scope`, page after page."""
    token = ""
    while True:
        request = request_type(**scope, page_size=page_size, page_token=token)
        page = await listing(org, request, wait_for_ready=wait_for_ready)
        for item in items(page):
            yield item
        token = page.next_page_token
        if not token:
            return


class CallOptions(TypedDict):
    metadata: tuple[tuple[str, str], ...]
    timeout: float
    wait_for_ready: bool


class Peer:
    def __init__(
        self,
        address: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        receive_bytes: int = MESSAGE_BYTES,
        channel: grpc.aio.Channel | None = None,
    ):
        """`timeout`: seconds each call may take. `channel`, when given, is
        used instead of one to `address` (and stays its owner's to close)."""
        self.address = address
        self.timeout = timeout
        self.receive_bytes = receive_bytes
        self._channel: grpc.aio.Channel | None = channel
        self._owned = channel is None
        self._stubs: dict[object, object] = {}

    def _stub[Stub](self, kind: Callable[[grpc.aio.Channel], Stub]) -> Stub:
        """The stub of one of the peer's services, over the peer's channel."""
        if kind not in self._stubs:
            if self._channel is None:
                self._channel = open_channel(self.address, self.timeout, self.receive_bytes)
            self._stubs[kind] = kind(self._channel)
        return cast(Stub, self._stubs[kind])  # kept by the kind that made it

    def _options(self, org: str, wait_for_ready: bool = False) -> CallOptions:
        """A call's keyword arguments: the organization, the deadline, and
        whether to wait for the channel to be ready."""
        return {"metadata": tenancy.metadata(org), "timeout": self.timeout, "wait_for_ready": wait_for_ready}

    async def close(self) -> None:
        if self._owned and self._channel is not None:
            await self._channel.close()


class Catalog(Peer):
    async def organization_exists(self, org: str) -> bool:
        """Whether organization `org` exists (an administrative call, made
        without organization metadata); known_organizations.py keeps the answer."""
        stub = self._stub(organizations_pb2_grpc.OrganizationServiceStub)
        request = organizations_pb2.GetOrganizationRequest(id=org)
        try:
            await stub.GetOrganization(request, metadata=trust.service_metadata(), timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def get_plan(
        self, org: str, request: plans_pb2.GetPlanRequest, *, wait_for_ready: bool = False
    ) -> plans_pb2.Plan:
        return await self._stub(plans_pb2_grpc.PlanServiceStub).GetPlan(request, **self._options(org, wait_for_ready))

    async def get_subscription(
        self, org: str, request: subscriptions_pb2.GetSubscriptionRequest
    ) -> subscriptions_pb2.Subscription:
        stub = self._stub(subscriptions_pb2_grpc.SubscriptionServiceStub)
        return await stub.GetSubscription(request, **self._options(org))

    async def list_subscriptions(
        self, org: str, request: subscriptions_pb2.ListSubscriptionsRequest, *, wait_for_ready: bool = False
    ) -> subscriptions_pb2.ListSubscriptionsResponse:
        stub = self._stub(subscriptions_pb2_grpc.SubscriptionServiceStub)
        return await stub.ListSubscriptions(request, **self._options(org, wait_for_ready))

    async def list_applied_coupons(
        self, org: str, request: coupons_pb2.ListAppliedCouponsRequest, *, wait_for_ready: bool = False
    ) -> coupons_pb2.ListAppliedCouponsResponse:
        stub = self._stub(coupons_pb2_grpc.CouponServiceStub)
        return await stub.ListAppliedCoupons(request, **self._options(org, wait_for_ready))

    async def list_applied_add_ons(
        self, org: str, request: add_ons_pb2.ListAppliedAddOnsRequest, *, wait_for_ready: bool = False
    ) -> add_ons_pb2.ListAppliedAddOnsResponse:
        stub = self._stub(add_ons_pb2_grpc.AddOnServiceStub)
        return await stub.ListAppliedAddOns(request, **self._options(org, wait_for_ready))

    async def list_customers(
        self, org: str, request: customers_pb2.ListCustomersRequest, *, wait_for_ready: bool = False
    ) -> customers_pb2.ListCustomersResponse:
        stub = self._stub(customers_pb2_grpc.CustomerServiceStub)
        return await stub.ListCustomers(request, **self._options(org, wait_for_ready))

    async def get_customer(self, org: str, request: customers_pb2.GetCustomerRequest) -> customers_pb2.Customer:
        return await self._stub(customers_pb2_grpc.CustomerServiceStub).GetCustomer(request, **self._options(org))

    async def batch_resolve_taxes(
        self, org: str, request: taxes_pb2.BatchResolveTaxesRequest, *, wait_for_ready: bool = False
    ) -> taxes_pb2.BatchResolveTaxesResponse:
        stub = self._stub(taxes_pb2_grpc.TaxServiceStub)
        return await stub.BatchResolveTaxes(request, **self._options(org, wait_for_ready))

    async def resolve_event_references(
        self, org: str, request: event_references_pb2.ResolveEventReferencesRequest
    ) -> event_references_pb2.ResolveEventReferencesResponse:
        stub = self._stub(event_references_pb2_grpc.EventReferenceServiceStub)
        return await stub.ResolveEventReferences(request, **self._options(org))


class Metering(Peer):
    async def batch_aggregate_usage(
        self, org: str, request: usage_pb2.BatchAggregateUsageRequest
    ) -> usage_pb2.BatchAggregateUsageResponse:
        return await self._stub(usage_pb2_grpc.UsageServiceStub).BatchAggregateUsage(request, **self._options(org))


class Invoicing(Peer):
    async def get_invoice(self, org: str, request: invoices_pb2.GetInvoiceRequest) -> invoices_pb2.Invoice:
        return await self._stub(invoices_pb2_grpc.InvoiceServiceStub).GetInvoice(request, **self._options(org))

    async def list_invoices(
        self, org: str, request: invoices_pb2.ListInvoicesRequest, *, wait_for_ready: bool = False
    ) -> invoices_pb2.ListInvoicesResponse:
        stub = self._stub(invoices_pb2_grpc.InvoiceServiceStub)
        return await stub.ListInvoices(request, **self._options(org, wait_for_ready))

    async def list_credit_notes(
        self, org: str, request: credit_notes_pb2.ListCreditNotesRequest, *, wait_for_ready: bool = False
    ) -> credit_notes_pb2.ListCreditNotesResponse:
        stub = self._stub(credit_notes_pb2_grpc.CreditNoteServiceStub)
        return await stub.ListCreditNotes(request, **self._options(org, wait_for_ready))

    async def run_billing(
        self, org: str, request: billing_runs_pb2.RunBillingRequest
    ) -> billing_runs_pb2.RunBillingResponse:
        return await self._stub(billing_runs_pb2_grpc.BillingRunServiceStub).RunBilling(request, **self._options(org))

    async def send_invoice_email(
        self, org: str, request: invoices_pb2.SendInvoiceEmailRequest
    ) -> invoices_pb2.SendInvoiceEmailResponse:
        stub = self._stub(invoices_pb2_grpc.InvoiceServiceStub)
        return await stub.SendInvoiceEmail(request, **self._options(org))


class Payments(Peer):
    async def cancel_invoice_payment(
        self, org: str, request: payments_pb2.CancelInvoicePaymentRequest
    ) -> payments_pb2.Payment:
        stub = self._stub(payments_pb2_grpc.PaymentServiceStub)
        return await stub.CancelInvoicePayment(request, **self._options(org))
